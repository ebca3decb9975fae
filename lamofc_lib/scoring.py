"""Scores of one operating point: task metric from the head's predictions, BPFP from the bitstreams,
feature MSE against the uncompressed features."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from lamofc_lib.coding import feature_mse, rate
from lamofc_lib.sources import read_manifest
from lamofc_lib.store import FeatureStore
from lamofc_lib.tasks import get_task

ORIGINAL = "original"
UNCOMPRESSED_BPFP = 32.0  # float32 features


def references(manifest: pd.DataFrame, reference: str, reference_predictions: str | Path | None) -> list[str]:
    """The answers predictions are compared with: ground-truth labels or the uncompressed predictions."""
    if reference == "ground_truth":
        labels = list(manifest["label"])
        if any(label == "" for label in labels):
            raise ValueError("reference is ground_truth but the manifest has samples without a label")
        return labels
    if reference_predictions is None:
        # Scoring the uncompressed features against themselves.
        return []
    table = pd.read_csv(reference_predictions, dtype=str, keep_default_na=False)
    if list(table["sample_id"]) != list(manifest["sample_id"]):
        raise ValueError(f"{reference_predictions} does not list the manifest's samples")
    return list(table["prediction"])


def score_point(
    task_name: str,
    manifest_path: str | Path,
    features_path: str | Path,
    head_path: str | Path,
    reference: str,
    reconstructed_path: str | Path | None = None,
    bitstream_dirs: Sequence[str | Path] = (),
    reference_predictions: str | Path | None = None,
    codec: str = ORIGINAL,
    point: str = ORIGINAL,
    device: str = "cpu",
    threads: int | None = None,
) -> tuple[dict, pd.DataFrame]:
    """Score the reconstructed features of one point, or the uncompressed ones when none are given."""
    task = get_task(task_name, device=device, threads=threads)
    manifest = read_manifest(manifest_path)
    original = FeatureStore(features_path)
    if list(original.sample_ids) != list(manifest["sample_id"]):
        raise ValueError(f"{features_path} does not hold the samples of {manifest_path}")
    store = FeatureStore(reconstructed_path) if reconstructed_path else original
    predictions = task.predict(Path(head_path), (store.read(i) for i in range(len(store))))
    refs = references(manifest, reference, reference_predictions) or predictions
    table = pd.DataFrame({"sample_id": manifest["sample_id"], "prediction": predictions, "reference": refs})
    if reconstructed_path:
        mse = feature_mse(original, store)
        rates = pd.DataFrame(rate(bitstream_dirs))
        table["mse"] = mse
        table["bits"] = rates["bits"].to_numpy()
        table["bpfp"] = rates["bpfp"].to_numpy()
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
        "value": task.score(predictions, refs),
        "samples": len(manifest),
        "reference": reference,
    }
    if reconstructed_path:
        scores["codec_version"] = store.attrs.get("codec_version", "")
    return scores, table
