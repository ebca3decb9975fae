"""Scores of the operating points of a task and codec: the task metric from the head's outputs, BPFP from the
bitstreams, feature MSE against the uncompressed features."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from lamofc_lib.bitstreams import Sidecar, rate, read_sidecars
from lamofc_lib.io import atomic_path
from lamofc_lib.preprocess import TensorSpec, from_frame, to_frame
from lamofc_lib.sources import read_manifest
from lamofc_lib.store import FeatureStore, StoreShards, as_dtype
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


def _check_same_layout(original: FeatureStore, reconstructed: FeatureStore | StoreShards) -> None:
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


def _squared_error(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sum((x.astype(np.float64) - y.astype(np.float64)) ** 2))


def _pooled(squared: dict[str, float], points: dict[str, int], name: str) -> dict[str, float]:
    """`name` pooled over a sample's tensors (squared errors over points) and `name.<tensor>` per tensor."""
    return {
        name: sum(squared.values()) / sum(points.values()),
        **{f"{name}.{t}": squared[t] / points[t] for t in squared},
    }


def feature_errors(original: FeatureStore, reconstructed: FeatureStore | StoreShards) -> pd.DataFrame:
    """Per sample, the mean squared error between the original and the reconstructed feature stores pooled over
    the sample's tensors (`mse`: their squared errors summed, over their points summed) and per tensor
    (`mse.<tensor>`), in float64 whatever the stores' dtypes (fp16 originals against float32 reconstructions
    included)."""
    _check_same_layout(original, reconstructed)
    rows = []
    for i in range(len(original)):
        squared = {n: _squared_error(original.read(i, n), reconstructed.read(i, n)) for n in original.tensors}
        points = {n: math.prod(original.layout(n).shapes[i]) for n in original.tensors}
        rows.append(_pooled(squared, points, "mse"))
    return pd.DataFrame(rows)


def quantization_errors(original: FeatureStore, sidecars: Sequence[Sidecar], cache: dict | None = None) -> pd.DataFrame:
    """Per sample, the quantization MSE: the original against its quantization alone, no codec (each value's
    K-means centre, or the uniform quantizer's dequantized codes or de-normalized truncation, cast back to the
    tensor's dtype), pooled over the sample's tensors (`quant_mse`) and per tensor (`quant_mse.<tensor>`).

    The quantization is the one each sidecar's tensor records give, as decoding reads it. `cache`, a dict kept
    across calls, holds each sample and tensor's squared error by its quantization, so the points of one codec
    (one quantization) compute it once."""
    cache = {} if cache is None else cache
    rows = []
    for i, record in enumerate(sidecars):
        squared, points = {}, {}
        for tensor in record.tensors:
            centres = tuple(tensor.centres) if tensor.centres is not None else None
            spec = TensorSpec(tensor.packing, tensor.truncation, tensor.quantizer, centres)
            key = (i, tensor.name, repr(spec), record.input_kind, record.bit_depth)
            if key not in cache:
                x = original.read(i, tensor.name)
                frame = to_frame(x, spec, record.input_kind, record.bit_depth)
                quantized = from_frame(frame, spec, x.shape, record.input_kind, record.bit_depth)
                cache[key] = _squared_error(x, as_dtype(quantized, tensor.feature_dtype))
            squared[tensor.name], points[tensor.name] = cache[key], tensor.feature_points
        rows.append(_pooled(squared, points, "quant_mse"))
    return pd.DataFrame(rows)


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
        self._quantization: dict = {}  # quantization_errors' cache, shared by the points

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
            sidecars = [record for _, record in read_sidecars(bitstream_dirs)]
            errors = pd.concat(
                [
                    feature_errors(self.original, store),
                    quantization_errors(self.original, sidecars, self._quantization),
                ],
                axis=1,
            )
            rates = pd.DataFrame(rate(bitstream_dirs))
            table = pd.concat([table, errors, rates.drop(columns=["sample_index", "feature_points"])], axis=1)
            means = {key: float(table[key].mean()) for key in means}
            tensors = {
                t.name: {
                    "dtype": t.feature_dtype,
                    **{key: float(table[f"{key}.{t.name}"].mean()) for key in ("bpfp", "mse", "quant_mse")},
                }
                for t in sidecars[0].tensors
            }
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
