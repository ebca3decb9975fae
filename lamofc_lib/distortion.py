"""Feature distortion: squared errors between an original tensor and another of the same shape, in float64
whatever their dtypes, pooled over a sample's named tensors (squared errors over points) and per tensor.
The total MSE of a coded point is here (`feature_errors`); the quantization MSE, which needs the
pre-processing, is `lamofc_lib.coding.quantization_measures`."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from lamofc_lib.store import FeatureStore, StoreShards


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


def squared_error(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sum((x.astype(np.float64) - y.astype(np.float64)) ** 2))


def pooled(squared: dict[str, float], points: dict[str, int], name: str) -> dict[str, float]:
    """`name` pooled over a sample's tensors (squared errors over points) and `name.<tensor>` per tensor."""
    return {
        name: sum(squared.values()) / sum(points.values()),
        **{f"{name}.{t}": squared[t] / points[t] if points[t] else math.nan for t in squared},  # NaN: absent
    }


def feature_errors(original: FeatureStore, reconstructed: FeatureStore | StoreShards) -> pd.DataFrame:
    """Per sample, the mean squared error between the original and the reconstructed feature stores pooled over
    the sample's tensors (`mse`: their squared errors summed, over their points summed) and per tensor
    (`mse.<tensor>`), in float64 whatever the stores' dtypes (fp16 originals against float32 reconstructions
    included)."""
    _check_same_layout(original, reconstructed)
    rows = []
    for i in range(len(original)):
        squared = {n: squared_error(original.read(i, n), reconstructed.read(i, n)) for n in original.tensors}
        points = {n: math.prod(original.layout(n).shapes[i]) for n in original.tensors}
        rows.append(pooled(squared, points, "mse"))
    return pd.DataFrame(rows)
