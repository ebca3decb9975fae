"""Task registry: each task knows how to extract its features at the split point, build its head, and turn
(decoded) features into predictions that its metric scores. A task is one module with a `Task` subclass naming
it (found by lamofc_lib.registry, no list to edit), or one that another installed package registers in the
entry-point group `lamofc.tasks`, plus its config block."""

from __future__ import annotations

from lamofc_lib.registry import load
from lamofc_lib.tasks.base import Task, resolve_device

REGISTRY: dict[str, type[Task]] = load(__name__, Task)


def get_task(name: str, device: str = "cpu", threads: int | None = None) -> Task:
    try:
        cls = REGISTRY[name]
    except KeyError:
        raise ValueError(f"task '{name}' is not implemented; known tasks: {', '.join(sorted(REGISTRY))}") from None
    return cls(device=resolve_device(device), threads=threads)


__all__ = ["Task", "REGISTRY", "get_task", "resolve_device"]
