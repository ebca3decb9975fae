"""Scores of the operating points of a task and codec: the task metric from the head's outputs, BPFP from the
bitstreams, feature MSE against the uncompressed features."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from lamofc_lib.bitstreams import rate, read_sidecars
from lamofc_lib.distortion import feature_errors
from lamofc_lib.io import atomic_path
from lamofc_lib.sources import read_manifest
from lamofc_lib.store import FeatureStore, StoreShards
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


class Scorer:
    """Scores of a task's features with its head: the uncompressed ones (`score()`) or the reconstructions of
    one operating point after another (`score(reconstructed, bitstreams, codec, point)`), the task, manifest
    and uncompressed features loaded once.

    `reference` is ground_truth (the manifest's answers) or uncompressed (the outputs the head gave on the
    uncompressed features: `reference_outputs`, or the outputs themselves when scoring the uncompressed
    features)."""

    def __init__(
        self,
        task_name: str,
        manifest_path: str | Path,
        features_path: str | Path,
        head_path: str | Path,
        reference: str,
        reference_outputs: str | Path | None = None,
        device: str = "cpu",
        threads: int | None = None,
        metric_options: Mapping | None = None,
        quantization_errors: Callable | None = None,
    ):
        self.task_name, self.reference, self.metric_options = task_name, reference, dict(metric_options or {})
        self.task = get_task(task_name, device=device, threads=threads)
        self.task.set_metric_options(self.metric_options)
        self.head = Path(head_path)
        self.manifest = read_manifest(manifest_path)
        self.original = FeatureStore(features_path)
        if list(self.original.sample_ids) != list(self.manifest["sample_id"]):
            raise ValueError(f"{features_path} does not hold the samples of {manifest_path}")
        self.reference_outputs = reference_outputs
        self._references = None
        # what the quantizer alone loses on a coded point (coding.quantization_errors; the score jobs of coded
        # points pass it, so the uncompressed scores do not depend on the pre-processing), and its cache
        self._quantization_errors, self._quantization = quantization_errors, {}

    def references(self, outputs: list | None) -> list:
        if self.reference == "ground_truth":
            return self.task.ground_truth(self.manifest)
        if outputs is not None:  # the uncompressed features' own outputs
            return outputs
        if self._references is None:
            if self.reference_outputs is None:
                raise ValueError("reference is uncompressed but no outputs of the uncompressed features were given")
            self._references = load_outputs(self.reference_outputs, self.manifest["sample_id"])
        return self._references

    def score(
        self,
        reconstructed: Sequence[str | Path] = (),
        bitstream_dirs: Sequence[str | Path] = (),
        codec: str = ORIGINAL,
        point: str = ORIGINAL,
    ) -> tuple[dict, pd.DataFrame, list]:
        """The scores record, per-sample table and per-sample outputs of one point (its reconstruction's stores,
        one per code job, and their bitstream folders), or of the uncompressed features when none are given."""
        store = StoreShards(reconstructed) if reconstructed else self.original
        samples = (self.task.head_input(store.sample(i)) for i in range(len(store)))
        outputs = self.task.head_outputs(self.head, samples, self.original.attrs)
        value, rows = self.task.compare(outputs, self.references(None if reconstructed else outputs))
        table = pd.DataFrame(rows)
        table.insert(0, "sample_id", list(self.manifest["sample_id"]))
        means = {"bpfp": UNCOMPRESSED_BPFP, "ebpfp": UNCOMPRESSED_BPFP, "mse": 0.0, "quant_mse": 0.0}
        tensors = {}
        if reconstructed:
            items = read_sidecars(bitstream_dirs)
            sidecars = [record for _, record in items]
            quantization = (
                self._quantization_errors(self.original, sidecars, self._quantization)
                if self._quantization_errors
                else pd.DataFrame({"quant_mse": [float("nan")] * len(sidecars)})
            )
            rates = pd.DataFrame(rate(bitstream_dirs, items)).drop(columns=["sample_index", "feature_points"])
            table = pd.concat([table, feature_errors(self.original, store), quantization, rates], axis=1)
            means = {key: float(table[key].mean()) for key in means}
            tensors = {
                t.name: {
                    "dtype": t.feature_dtype,
                    **{key: float(table[f"{key}.{t.name}"].mean()) for key in ("bpfp", "mse", "quant_mse")
                       if f"{key}.{t.name}" in table},
                }
                for t in sidecars[0].tensors
            }  # fmt: skip
        else:
            table["mse"] = 0.0
        scores = {
            "task": self.task_name,
            "codec": codec,
            "point": point,
            **means,
            **({"tensors": tensors} if tensors else {}),
            "metric": self.task.metric,
            "value": value,
            "higher_is_better": self.task.higher_is_better,
            "samples": len(self.manifest),
            "reference": self.reference,
            **({"metric_options": self.metric_options} if self.metric_options else {}),
        }
        if reconstructed:
            scores["codec_version"] = store.attrs.get("codec_version", "")
        return scores, table, outputs
