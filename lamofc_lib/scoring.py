"""Scores of one operating point: the task metric from the head's outputs, BPFP from the bitstreams, feature
MSE against the uncompressed features."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from lamofc_lib.bitstreams import rate
from lamofc_lib.io import atomic_path
from lamofc_lib.sources import read_manifest
from lamofc_lib.store import FeatureStore
from lamofc_lib.tasks import get_task

ORIGINAL = "original"
UNCOMPRESSED_BPFP = 32.0  # float32 features


def save_outputs(path: str | Path, sample_ids: Sequence[str], outputs: Sequence) -> None:
    """Keep per-sample head outputs (labels, maps, activations) as the reference of the coded points."""
    arrays = {f"{i:05d}": np.asarray(o) for i, o in enumerate(outputs)}
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, sample_ids=np.asarray(list(sample_ids)), **arrays)


def load_outputs(path: str | Path, sample_ids: Sequence[str]) -> list:
    with np.load(path, allow_pickle=False) as data:
        if list(data["sample_ids"]) != list(sample_ids):
            raise ValueError(f"{path} holds the outputs of other samples than the manifest's")
        return [_plain(data[f"{i:05d}"]) for i in range(len(sample_ids))]


def _plain(array: np.ndarray):
    return array.item() if array.ndim == 0 else array


def store_mse(original: FeatureStore, reconstructed: FeatureStore) -> list[float]:
    """Per-sample mean squared error between the original and the reconstructed feature stores over all the
    sample's tensors (their squared errors summed, over their points summed), in float64 whatever the stores'
    dtypes (fp16 originals against float32 reconstructions included)."""
    if original.sample_ids != reconstructed.sample_ids:
        raise ValueError(f"{reconstructed.path} does not hold the samples of {original.path}")
    if original.tensors != reconstructed.tensors:
        raise ValueError(
            f"{reconstructed.path} has tensors {reconstructed.tensors}, {original.path} {original.tensors}"
        )
    for name in original.tensors:
        if original.layout(name).shapes != reconstructed.layout(name).shapes:
            # Without this check NumPy would broadcast, e.g., a 1 x 1 x 1 x W sample against 1 x 1 x H x W.
            raise ValueError(f"{reconstructed.path} has other shapes of tensor '{name}' than {original.path}")
    errors = []
    for i in range(len(original)):
        squared = 0.0
        for name in original.tensors:
            diff = original.read(i, name).astype(np.float64) - reconstructed.read(i, name).astype(np.float64)
            squared += float(np.sum(diff**2))
        errors.append(squared / original.points(i))
    return errors


def score_point(
    task_name: str,
    manifest_path: str | Path,
    features_path: str | Path,
    head_path: str | Path,
    reference: str,
    reconstructed_path: str | Path | None = None,
    bitstream_dirs: Sequence[str | Path] = (),
    reference_outputs: str | Path | None = None,
    codec: str = ORIGINAL,
    point: str = ORIGINAL,
    device: str = "cpu",
    threads: int | None = None,
    metric_options: Mapping | None = None,
) -> tuple[dict, pd.DataFrame, list]:
    """Score the reconstructed features of one point, or the uncompressed ones when none are given.

    `reference` is ground_truth (the manifest's answers) or uncompressed (the outputs the head gave on the
    uncompressed features: `reference_outputs`, or the outputs themselves when scoring the uncompressed
    features). Returns the scores record, the per-sample table and the per-sample outputs.
    """
    task = get_task(task_name, device=device, threads=threads)
    task.set_metric_options(metric_options or {})
    manifest = read_manifest(manifest_path)
    original = FeatureStore(features_path)
    if list(original.sample_ids) != list(manifest["sample_id"]):
        raise ValueError(f"{features_path} does not hold the samples of {manifest_path}")
    store = FeatureStore(reconstructed_path) if reconstructed_path else original
    samples = (task.head_input(store.sample(i)) for i in range(len(store)))
    outputs = task.head_outputs(Path(head_path), samples, original.attrs)
    if reference == "ground_truth":
        refs = task.ground_truth(manifest)
    elif reconstructed_path:
        if reference_outputs is None:
            raise ValueError("reference is uncompressed but no outputs of the uncompressed features were given")
        refs = load_outputs(reference_outputs, manifest["sample_id"])
    else:
        refs = outputs
    value, rows = task.compare(outputs, refs)
    table = pd.DataFrame(rows)
    table.insert(0, "sample_id", list(manifest["sample_id"]))
    if reconstructed_path:
        mse = store_mse(original, store)
        rates = pd.DataFrame(rate(bitstream_dirs))
        table["mse"] = mse
        for column in [c for c in rates.columns if c == "bits" or c.startswith("bits.")] + ["bpfp"]:
            table[column] = rates[column].to_numpy()
        bpfp, mean_mse = float(np.mean(table["bpfp"])), float(np.mean(mse))
    else:
        table["mse"] = 0.0
        bpfp, mean_mse = UNCOMPRESSED_BPFP, 0.0
    scores = {
        "task": task_name,
        "codec": codec,
        "point": point,
        "bpfp": bpfp,
        "mse": mean_mse,
        "metric": task.metric,
        "value": value,
        "higher_is_better": task.higher_is_better,
        "samples": len(manifest),
        "reference": reference,
        **({"metric_options": dict(metric_options)} if metric_options else {}),
    }
    if reconstructed_path:
        scores["codec_version"] = store.attrs.get("codec_version", "")
    return scores, table, outputs
