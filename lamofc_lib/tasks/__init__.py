"""Task registry: each task knows how to extract its features at the split point, build its head, and turn
(decoded) features into predictions that its metric scores. A task is one module with a `Task` subclass naming
it (found by lamofc_lib.registry, no list to edit), or one that another installed package registers in the
entry-point group `lamofc.tasks`, plus its config block."""

from __future__ import annotations

from collections.abc import Mapping

from lamofc_lib.registry import load
from lamofc_lib.tasks.base import Task, resolve_device

REGISTRY: dict[str, type[Task]] = load(__name__, Task)


def task_kind(name: str, block: Mapping | None = None) -> str:
    """The registered task a config block configures: its `task` key, or its own name (a profile is a block of
    another name with `task: <registered task>`, e.g. one language task on two models)."""
    return str((block or {}).get("task", name))


def task_class(kind: str) -> type[Task]:
    try:
        return REGISTRY[kind]
    except KeyError:
        raise ValueError(f"task '{kind}' is not implemented; known tasks: {', '.join(sorted(REGISTRY))}") from None


def get_task(name: str, device: str = "cpu", threads: int | None = None, kind: str | None = None) -> Task:
    """The task of config block `name`, an instance of registered task `kind` (default: `name` itself)."""
    task = task_class(kind or name)(device=resolve_device(device), threads=threads)
    task.block = name
    return task


__all__ = ["Task", "REGISTRY", "get_task", "resolve_device", "task_class", "task_kind"]
