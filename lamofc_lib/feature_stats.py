"""What a task's features look like (paper Table 4, Figs. 2 and 3): per named tensor and layer, the observed range,
mean, standard deviation and percentiles, the share of values each truncation profile clips, a deterministic
subsample of the values for distribution plots, and one packed block of the first sample with its 2-D DCT.

A "layer" is an index along axis 1 of a tensor whose truncation gives one range per layer (dpt's four blocks);
any other tensor is one layer ("all"). Range, mean, standard deviation and clipped shares are exact (float64 sums
over every value); percentiles come from an evenly strided subsample of at most SUBSAMPLE values per layer."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from lamofc_lib.io import atomic_path
from lamofc_lib.preprocess import pack, tensor_specs, truncation_ranges
from lamofc_lib.store import FeatureStore

SUBSAMPLE = 1_000_000
PERCENTILES = (0.1, 1, 5, 25, 50, 75, 95, 99, 99.9)
BLOCK = 64  # side of the packed block shown next to its DCT


@dataclass
class _Moments:
    """Running count, sum, sum of squares, min and max in float64, and clipped counts per profile."""

    count: int = 0
    total: float = 0.0
    squares: float = 0.0
    low: float = np.inf
    high: float = -np.inf
    clipped: dict[str, int] = field(default_factory=dict)

    def add(self, x: np.ndarray, ranges: Mapping[str, tuple[float, float]]) -> None:
        x = x.astype(np.float64, copy=False)
        self.count += x.size
        self.total += float(x.sum())
        self.squares += float(np.square(x).sum())
        self.low, self.high = min(self.low, float(x.min())), max(self.high, float(x.max()))
        for profile, (lo, hi) in ranges.items():
            self.clipped[profile] = self.clipped.get(profile, 0) + int(np.count_nonzero((x < lo) | (x > hi)))


def _truncations(store: FeatureStore, profiles: Mapping[str, object]) -> dict[str, dict[str, list]]:
    """Tensor -> profile -> its [lo, hi] pairs (one, or one per layer), from the task's truncation block."""
    packings = {name: store.layout(name).attrs.get("packing", "plane") for name in store.tensors}
    specs = {profile: tensor_specs(packings, entry) for profile, entry in profiles.items()}
    return {t: {p: truncation_ranges(specs[p][t].truncation) for p in profiles} for t in store.tensors}


def feature_statistics(features: str | Path, task: str, profiles: Mapping[str, object]) -> tuple[pd.DataFrame, dict]:
    """The statistics table (one row per tensor and layer) and the subsampled values per "tensor/layer".

    `profiles` is the task's configured truncation block: profile name -> truncation entry."""
    store = FeatureStore(features)
    truncations = _truncations(store, profiles)
    rows, samples = [], {}
    for tensor in store.tensors:
        present = [i for i in range(len(store)) if store.has(i, tensor)]
        if not present:  # a slot no sample of this store fills (lamofc_lib.store.absent)
            continue
        pairs = truncations[tensor]  # a layer is an index along axis 1 when some profile truncates per layer
        shapes = store.layout(tensor).shapes
        per_layer = any(len(p) > 1 for p in pairs.values())
        layers = [str(k) for k in range(shapes[present[0]][1])] if per_layer else ["all"]
        for layer in layers:
            layer_points = [int(np.prod(s)) // (s[1] if layer != "all" else 1) for s in shapes]
            step = max(1, -(-sum(layer_points) // SUBSAMPLE))
            ranges = {p: r[int(layer)] if layer != "all" and len(r) > 1 else r[0] for p, r in pairs.items()}
            moments, kept, offset = _Moments(), [], 0
            for i in present:
                x = store.read(i, tensor)
                x = x[:, int(layer)] if layer != "all" else x
                flat = x.reshape(-1)
                moments.add(flat, ranges)
                kept.append(flat[(-offset) % step :: step].astype(np.float64))  # one stride over all samples
                offset += flat.size
            values = np.concatenate(kept)
            mean = moments.total / moments.count
            std = float(np.sqrt(max(moments.squares / moments.count - mean**2, 0.0)))
            row = {
                "task": task,
                "tensor": tensor,
                "layer": layer,
                "values": moments.count,
                "min": moments.low,
                "max": moments.high,
                "mean": mean,
                "std": std,
                **{f"p{p:g}": float(np.percentile(values, p)) for p in PERCENTILES},
                **{f"clipped_{profile}": moments.clipped[profile] / moments.count for profile in ranges},
                **{f"{end}_{profile}": r[k] for profile, r in ranges.items() for k, end in enumerate(("lo", "hi"))},
            }
            rows.append(row)
            samples[f"{tensor}/{layer}"] = values.astype(np.float32)
    return pd.DataFrame(rows), samples


def dct_block(features: str | Path, block: int = BLOCK) -> dict[str, np.ndarray]:
    """The top-left `block` x `block` corner of the first sample's packed frame of each tensor (the first sample
    that has it; unquantized) and the magnitude of its orthonormal 2-D DCT-II (scipy.fft.dctn)."""
    from scipy.fft import dctn

    store = FeatureStore(features)
    found = {}
    for tensor in store.tensors:
        first = next((i for i in range(len(store)) if store.has(i, tensor)), None)
        if first is None:
            continue
        frame = pack(store.read(first, tensor), store.layout(tensor).attrs.get("packing", "plane")).astype(np.float64)
        corner = frame[:block, :block]
        found[f"{tensor}/block"] = corner
        found[f"{tensor}/dct"] = np.abs(dctn(corner, norm="ortho"))
    return found


def write_statistics(
    features: str | Path, task: str, profiles: Mapping[str, object], table: str | Path, arrays: str | Path
) -> None:
    """statistics CSV, and an npz with the subsampled values ("values/<tensor>/<layer>") and the DCT blocks."""
    stats, samples = feature_statistics(features, task, profiles)
    with atomic_path(table) as tmp:
        stats.to_csv(tmp, index=False)
    data = {f"values/{k}": v for k, v in samples.items()} | {f"dct/{k}": v for k, v in dct_block(features).items()}
    with atomic_path(arrays) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **data)
