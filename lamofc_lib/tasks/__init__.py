"""Task registry: each task knows how to extract its features at the split point, build its head, and turn
(decoded) features into predictions that its metric scores."""

from __future__ import annotations

from lamofc_lib.tasks.base import Task, resolve_device
from lamofc_lib.tasks.cls import ClassificationTask
from lamofc_lib.tasks.csr import ReasoningTask
from lamofc_lib.tasks.dense import DepthTask, SegmentationTask
from lamofc_lib.tasks.tti import TextToImageTask

REGISTRY: dict[str, type[Task]] = {
    task.name: task for task in (ClassificationTask, SegmentationTask, DepthTask, ReasoningTask, TextToImageTask)
}


def get_task(name: str, device: str = "cpu", threads: int | None = None) -> Task:
    try:
        cls = REGISTRY[name]
    except KeyError:
        raise ValueError(f"task '{name}' is not implemented; known tasks: {', '.join(sorted(REGISTRY))}") from None
    return cls(device=resolve_device(device), threads=threads)


__all__ = ["Task", "REGISTRY", "get_task", "resolve_device"]
