"""Feature pre- and post-processing: each named tensor's quantization and its packing into a 2-D frame.

A sample's feature is a set of named tensors (see :mod:`lamofc_lib.store`); each tensor becomes its own
2-D frame, with its own quantizer and its parameters (a truncation range, or K-means centres) and packing (a
:class:`TensorSpec`). The quantizers are :mod:`lamofc_lib.quantizers`; the uniform one's functions
(:func:`quantize`, :func:`dequantize`, :func:`normalize`, :func:`denormalize`) are re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lamofc_lib.quantizers import SPEC_QUANTIZERS, get_quantizer
from lamofc_lib.quantizers.uniform import (
    denormalize,
    dequantize,
    normalize,
    quantization_dtype,
    quantize,
    truncation_bounds,
    truncation_ranges,
)

__all__ = [
    "PACKINGS",
    "TensorSpec",
    "dequantize",
    "denormalize",
    "frame_shape",
    "normalize",
    "pack",
    "quantization_dtype",
    "quantize",
    "store_frames",
    "store_specs",
    "tensor_specs",
    "truncation_bounds",
    "truncation_ranges",
    "unpack",
]

# --------------------------------------------------------------------------------------------------
# Frame packing
# --------------------------------------------------------------------------------------------------

PACKINGS: tuple[str, ...] = ("tokens", "tiles", "plane")
"""How an N x C x H x W tensor becomes a 2-D frame. tokens: ``P[n*H + h, c*W + w] = F[n, c, h, w]`` (each
layer's token rows side by side; DINOv2's cls/seg/dpt features, or a key/value cache of heads x tokens x
head size). tiles: an r x k grid of the C = r*k channel planes, channel c at row block c // k and column block
c % k, r the largest divisor of C with r*r <= C (a g x g grid for a square C: SD3's 16-channel latent as 4 x 4;
SD3.5's 32 VAE moments as 4 x 8, as LaMoFCBench lays them out). plane: the one H x W plane of a 1 x 1 x H x W
tensor (Llama hidden states, SD3.5's prompt embeddings)."""


def _check_packing(func: str, packing: str) -> str:
    """Return ``packing`` if it is one of :data:`PACKINGS`, else raise naming it."""
    if not isinstance(packing, str) or packing not in PACKINGS:
        raise ValueError(f"{func}: packing {packing!r} is unknown; expected one of {', '.join(PACKINGS)}")
    return packing


def _check_shape(func: str, shape: Sequence[int]) -> tuple[int, int, int, int]:
    """Return ``shape`` as a tuple of four ints (N, C, H, W), positive but for N, which may be 0 (a tensor a
    sample does not have, see lamofc_lib.store: its frame has no rows), else raise naming it."""
    try:
        items = tuple(shape)
    except TypeError:
        items = ()
    ok = len(items) == 4 and all(
        isinstance(d, int | np.integer) and not isinstance(d, bool) and d >= (0 if k == 0 else 1)
        for k, d in enumerate(items)
    )
    if not ok:
        raise ValueError(
            f"{func}: feature shape {shape!r} must be four integers N x C x H x W, positive (N may be 0: absent)"
        )
    n, c, h, w = (int(d) for d in items)
    return (n, c, h, w)


def _grid(func: str, shape: tuple[int, int, int, int]) -> tuple[int, int]:
    """Rows r and columns k of the tile grid: r the largest divisor of C with r*r <= C, k = C // r (N must be 1)."""
    n, c, _, _ = shape
    if n != 1:
        raise ValueError(f"{func}: packing 'tiles' needs N == 1, got shape {shape}")
    rows = next(r for r in range(math.isqrt(c), 0, -1) if c % r == 0)
    return rows, c // rows


def frame_shape(packing: str, shape: Sequence[int]) -> tuple[int, int]:
    """Shape (rows, cols) of the 2-D frame that :func:`pack` makes from an N x C x H x W tensor.

    tokens: (N*H, C*W); tiles: (r*H, k*W) with C = r*k (see :data:`PACKINGS`); plane: (H, W) with N = C = 1.
    """
    packing = _check_packing("frame_shape", packing)
    dims = _check_shape("frame_shape", shape)
    n, c, h, w = dims
    if packing == "tokens":
        return (n * h, c * w)
    if packing == "tiles":
        rows, cols = _grid("frame_shape", dims)
        return (rows * h, cols * w)
    if n != 1 or c != 1:
        raise ValueError(f"frame_shape: packing 'plane' needs N == 1 and C == 1, got shape {dims}")
    return (h, w)


def _fresh(out: np.ndarray, src: np.ndarray) -> np.ndarray:
    """Return ``out`` as a C-contiguous array that never aliases ``src`` (callers may mutate it)."""
    if np.may_share_memory(out, src):
        return out.copy(order="C")
    return np.ascontiguousarray(out)


def pack(x: np.ndarray, packing: str) -> np.ndarray:
    """Arrange an N x C x H x W tensor into a 2-D frame for image/video codecs (see :data:`PACKINGS`).

    tokens: ``P[n*H + h, c*W + w] = F[n, c, h, w]``. tiles: ``P[i*H + h, j*W + w] = F[0, k*i + j, h, w]`` (an r x k
    grid).
    plane: ``P = F[0, 0]``. The dtype is kept and the result is a new array.
    """
    packing = _check_packing("pack", packing)
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"pack: feature must be 4-D N x C x H x W, got shape {x.shape}")
    rows, cols = frame_shape(packing, x.shape)
    n, c, h, w = x.shape
    if packing == "tokens":
        out = x.transpose(0, 2, 1, 3).reshape(rows, cols)
    elif packing == "tiles":
        r, k = _grid("pack", x.shape)
        out = x[0].reshape(r, k, h, w).transpose(0, 2, 1, 3).reshape(rows, cols)
    else:
        out = x[0, 0]
    return _fresh(out, x)


def unpack(frame: np.ndarray, packing: str, shape: tuple[int, int, int, int]) -> np.ndarray:
    """Invert :func:`pack`: rebuild the N x C x H x W tensor of the given ``shape`` from a 2-D frame."""
    packing = _check_packing("unpack", packing)
    frame = np.asarray(frame)
    dims = _check_shape("unpack", shape)
    expected = frame_shape(packing, dims)
    if frame.shape != expected:
        raise ValueError(
            f"unpack: frame shape {frame.shape} does not match {expected}, "
            f"the {packing!r} frame of a tensor of shape {dims}"
        )
    n, c, h, w = dims
    if packing == "tokens":
        out = frame.reshape(n, h, c, w).transpose(0, 2, 1, 3)
    elif packing == "tiles":
        r, k = _grid("unpack", dims)
        out = frame.reshape(r, h, k, w).transpose(0, 2, 1, 3).reshape(1, c, h, w)
    else:
        out = frame.reshape(1, 1, h, w)
    return _fresh(out, frame)


# --------------------------------------------------------------------------------------------------
# Frames: one named tensor's truncation, quantizer and packing
# --------------------------------------------------------------------------------------------------

QUANTIZERS = tuple(SPEC_QUANTIZERS)
"""floor: the reference's truncating uniform quantizer (bin lower edges); round: uniform, round to nearest;
kmeans: LaMoFCBench's 8-bit codes against 256 fitted centres (:mod:`lamofc_lib.quantizers.kmeans`)."""


@dataclass(frozen=True)
class TensorSpec:
    """How one named tensor becomes a frame: its packing, its truncation (``[lo, hi]``, or one pair per layer)
    and its quantizer; a K-means tensor has its 256 sorted centres instead of a truncation."""

    packing: str
    truncation: list | None
    quantizer: str = "floor"
    centres: tuple[float, ...] | None = None

    def __post_init__(self):
        _check_packing("TensorSpec", self.packing)
        if self.quantizer not in QUANTIZERS:
            raise ValueError(f"quantizer {self.quantizer!r} is unknown; expected one of {', '.join(QUANTIZERS)}")
        get_quantizer(self.quantizer).check(self)

    def record(self) -> dict:
        extra = {"centres": list(self.centres)} if self.centres is not None else {}
        return {"packing": self.packing, "truncation": self.truncation, "quantizer": self.quantizer, **extra}


def tensor_specs(packings: Mapping[str, str], truncation) -> dict[str, TensorSpec]:
    """The spec of every named tensor (`packings`: name -> packing, as the feature store records them) from a
    configured truncation entry: one range (or per-layer ranges) for every tensor, or a mapping from tensor
    name to a range, per-layer ranges, or ``{range: ..., quantizer: floor|round}``."""
    if not isinstance(truncation, Mapping):
        return {name: TensorSpec(packing, truncation) for name, packing in packings.items()}
    if set(truncation) != set(packings):
        raise ValueError(
            f"truncation names tensors {sorted(truncation)}, but the features have tensors {sorted(packings)}"
        )
    specs = {}
    for name, packing in packings.items():
        entry = truncation[name]
        if isinstance(entry, Mapping):
            specs[name] = TensorSpec(packing, entry["range"], entry.get("quantizer", "floor"))
        else:
            specs[name] = TensorSpec(packing, entry)
    return specs


def to_frame(x: np.ndarray, spec: TensorSpec, input_kind: str, bit_depth: int) -> np.ndarray:
    """Quantize (or normalize, for learned codecs) one N x C x H x W tensor with its spec's quantizer (see
    :mod:`lamofc_lib.quantizers`) and pack it.

    The uniform quantizer computes in the tensor's own dtype (float16 for fp16 features such as the tti
    latents, float32 otherwise; see `quantization_dtype`), so pass the stored array, not a widened copy. The
    K-means quantizer computes in float32 (as the LaMoFCBench reference)."""
    if input_kind not in ("quantized", "normalized"):
        raise ValueError(f"input kind '{input_kind}' is unknown; expected quantized or normalized")
    return pack(get_quantizer(spec.quantizer).to_codec_input(x, spec, input_kind, bit_depth), spec.packing)


def from_frame(frame: np.ndarray, spec: TensorSpec, shape, input_kind: str, bit_depth: int) -> np.ndarray:
    """The exact inverse of `to_frame` (up to the codec's and the quantizer's loss), in float32."""
    y = unpack(frame, spec.packing, tuple(shape))
    return get_quantizer(spec.quantizer).from_codec_output(y, spec, input_kind, bit_depth)


def store_specs(store, truncation=None, calibration: str | Path | None = None, task: str = "") -> dict[str, TensorSpec]:
    """The spec of every tensor of a feature store, each with the packing the store records: uniform from the
    task's truncation entry (see `tensor_specs`), or K-means from the centres in the task's `calibration`
    folder (the calibrate rule's output, whose mapping.json keys them by `task`)."""
    packings = {name: store.layout(name).attrs["packing"] for name in store.tensors}
    if calibration is None:
        return tensor_specs(packings, truncation)
    centres = get_quantizer("kmeans").calibrated(calibration, task, store.tensors)
    return {
        name: TensorSpec(packing, None, "kmeans", tuple(map(float, centres[name])))
        for name, packing in packings.items()
    }


def store_frames(
    features: str | Path, input_kind: str, truncation, calibration: str | Path | None = None, task: str = ""
) -> list[np.ndarray]:
    """The packed frames of every named tensor of every sample of a feature store, absent ones left out (held in
    memory; a trained codec's training frames), each tensor with its packing and its truncation or K-means
    centres (see `store_specs`), as a codec taking `input_kind` frames codes them (10 bits if quantized)."""
    from lamofc_lib.store import FeatureStore

    store = FeatureStore(features)
    specs = store_specs(store, truncation, calibration, task)
    return [
        to_frame(store.read(i, name), spec, input_kind, 10)
        for i in range(len(store))
        for name, spec in specs.items()
        if store.has(i, name)
    ]


def preprocess_store(
    features: str | Path,
    frames: str | Path,
    task: str,
    truncation,
    input_kind: str,
    bit_depth: int,
    calibration: str | Path | None = None,
    calibration_task: str | None = None,
) -> None:
    """Write the packed frame of every tensor of every sample of the feature store `features` to the store
    `frames` (one frame tensor per feature tensor, same names).

    `truncation` is the task's configured truncation entry (see `preprocess.tensor_specs`), or None with a
    `calibration` folder for K-means codes (see `store_specs`; the centres of `calibration_task`, default
    `task`: a task whose training split is another's codes with that task's); each tensor's packing is the one its
    feature store records. Tensors are quantized uniformly as stored (float16 stays float16 in the quantizer's
    arithmetic); each frame tensor records its spec, feature shapes and feature dtype."""
    from lamofc_lib.store import FeatureStore, TensorLayout, write_store

    store = FeatureStore(features)
    specs = store_specs(store, truncation, calibration, calibration_task or task)
    dtype = "uint16" if input_kind == "quantized" else "float32"
    tensors = {}
    for name, spec in specs.items():
        layout = store.layout(name)
        tensors[name] = TensorLayout(
            [frame_shape(spec.packing, s) for s in layout.shapes],
            dtype,
            {**spec.record(), "feature_shapes": [list(s) for s in layout.shapes], "feature_dtype": layout.dtype},
        )
    samples = (
        {name: to_frame(store.read(i, name), spec, input_kind, bit_depth) for name, spec in specs.items()}
        for i in range(len(store))
    )
    attrs = {
        "stage": "frames",
        "task": task,
        "input_kind": input_kind,
        "bit_depth": bit_depth,
        "features": str(features),
    }
    write_store(frames, store.sample_ids, tensors, samples, attrs=attrs)
