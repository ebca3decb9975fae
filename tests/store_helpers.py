"""Writing a one-tensor feature store in tests (the workflow's tasks write theirs through Task.extract)."""

from __future__ import annotations

from lamofc_lib.store import FEATURE, TensorLayout, write_store


def write_one(path, sample_ids, shapes, samples, attrs=None, dtype="float32", packing="tokens"):
    """A store whose samples carry one tensor, `store.FEATURE`, packed with `packing`."""
    layout = TensorLayout(list(shapes), dtype, {"packing": packing})
    write_store(path, sample_ids, {FEATURE: layout}, ({FEATURE: x} for x in samples), attrs=attrs)
