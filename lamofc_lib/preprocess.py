"""Feature pre- and post-processing: truncation, quantization, normalization and frame packing.

Every function here must stay bit-exact with the benchmark's reference implementation, because the
coded bitstreams and the reported rate/accuracy numbers depend on the exact integer codes. In
particular the arithmetic of :func:`quantize` follows the stored feature's dtype, as the reference's
numpy expressions do: float16 for float16 features (the tti latents, which the reference stores as
fp16 ``.npy`` files) and float32 for everything else (never float64). :func:`dequantize`,
:func:`normalize` and :func:`denormalize` work in float32 for any input (the reference casts to float32
there). The default quantizer truncates toward zero (floor), which gives a deliberate -0.5 LSB bias
compared with round-to-nearest.

A sample's feature is a set of named tensors (see :mod:`lamofc_lib.store`); each tensor becomes its own
2-D frame, with its own truncation, quantizer and packing (a :class:`TensorSpec`).

Range arguments ``lo`` / ``hi`` are either two scalars (one range for the whole array) or two
sequences of length C (one range per layer along axis 1 of an N x C x H x W array, as used by the
``dpt`` task whose four layers have the ranges [-1, 1], [-2, 2], [-10, 10] and [-20, 20]).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

import numpy as np

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
    "tensor_specs",
    "unpack",
]

Bound: TypeAlias = float | Sequence[float] | np.ndarray
"""A truncation bound: a scalar, or one value per layer (axis 1 of an N x C x H x W array)."""


# --------------------------------------------------------------------------------------------------
# Range handling
# --------------------------------------------------------------------------------------------------


def _float_bound(func: str, name: str, value: object) -> float:
    """Convert one bound to a finite Python float, naming it in the error otherwise."""
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{func}: {name}={value!r} is not a real number") from exc
    if not math.isfinite(out):
        raise ValueError(f"{func}: {name}={value!r} must be finite")
    return out


def _ranges(func: str, x: np.ndarray, lo: Bound, hi: Bound) -> tuple[list[float], list[float], bool]:
    """Validate ``lo`` / ``hi`` against ``x`` and return them as lists of Python floats.

    The flag is True for per-layer ranges (one value per index of axis 1 of a 4-D ``x``).
    """
    lo_nd, hi_nd = np.ndim(lo), np.ndim(hi)
    if lo_nd > 1 or hi_nd > 1:
        raise ValueError(f"{func}: lo={lo!r} and hi={hi!r} must be scalars or 1-D sequences")
    if lo_nd != hi_nd:
        raise ValueError(f"{func}: lo={lo!r} and hi={hi!r} must both be scalars or both be sequences")
    if lo_nd == 0:
        los = [_float_bound(func, "lo", lo)]
        his = [_float_bound(func, "hi", hi)]
        per_layer = False
    else:
        los = [_float_bound(func, f"lo[{i}]", v) for i, v in enumerate(np.asarray(lo).tolist())]
        his = [_float_bound(func, f"hi[{i}]", v) for i, v in enumerate(np.asarray(hi).tolist())]
        if x.ndim != 4:
            raise ValueError(f"{func}: per-layer ranges need a 4-D N x C x H x W array, got shape {x.shape}")
        if len(los) != x.shape[1] or len(his) != x.shape[1]:
            raise ValueError(
                f"{func}: per-layer ranges have lengths {len(los)} (lo) and {len(his)} (hi) "
                f"but the array has C={x.shape[1]} layers (shape {x.shape})"
            )
        per_layer = True
    for i, (a, b) in enumerate(zip(los, his, strict=True)):
        if not b > a:
            where = f" for layer {i}" if per_layer else ""
            raise ValueError(f"{func}: need hi > lo{where}, got lo={a!r}, hi={b!r}")
    return los, his, per_layer


def _as_f32(values: list[float], per_layer: bool, dtype: type[np.floating] = np.float32) -> np.ndarray:
    """Cast Python floats to float32 (or ``dtype``), shaped to broadcast along axis 1 when per layer.

    Casting a Python float to float32 (float16) here is exactly what numpy 2 does implicitly with a
    weak Python scalar in ``float32_array op python_float`` (``float16_array op python_float``, NEP 50;
    numpy 1's value-based casting gave the same), so both forms give identical bits.
    """
    arr = np.asarray(values, dtype=np.float64).astype(dtype)
    return arr.reshape(1, -1, 1, 1) if per_layer else arr.reshape(())


def quantization_dtype(x: np.ndarray) -> type[np.floating]:
    """The dtype :func:`quantize` computes in: float16 for a float16 ``x``, float32 for anything else.

    The reference evaluates ``(np.clip(x, lo, hi) - lo) * scale`` on the loaded ``.npy`` array with
    Python-float ``lo``, ``hi`` and ``scale``, so numpy keeps the array's dtype: float16 for the SD3
    latents (saved in fp16), float32 for the DINOv2 and Llama features. In float16 the scale itself
    is rounded (tti: 1023 / 10.844 = 94.337... becomes 94.3125) and products above 512 are rounded to
    0.5, so about one code in ten differs by one from the float32 arithmetic's.
    """
    return np.float16 if np.asarray(x).dtype == np.float16 else np.float32


def _check_bit_depth(func: str, bit_depth: int) -> int:
    """Return ``bit_depth`` as an int after checking it is an integer in 1..16 (uint16 codes)."""
    if isinstance(bit_depth, bool) or not isinstance(bit_depth, int | np.integer):
        raise ValueError(f"{func}: bit_depth={bit_depth!r} must be an integer in 1..16")
    if not 1 <= int(bit_depth) <= 16:
        raise ValueError(f"{func}: bit_depth={bit_depth!r} is out of range; expected 1..16")
    return int(bit_depth)


def _check_real(func: str, name: str, arr: np.ndarray) -> None:
    """Reject arrays that cannot be converted meaningfully to float32 (bool, complex, object...)."""
    if arr.dtype.kind not in "uif":
        raise ValueError(f"{func}: {name} has dtype {arr.dtype}; expected an integer or float array")


def _refuse_non_finite(func: str, x: np.ndarray) -> None:
    """Refuse a feature holding NaN or +/-Inf, naming how many of each: truncation would hide them (Inf clips to a
    bound, NaN has no code), and a feature holding them comes from a broken extraction."""
    finite = np.isfinite(x)
    if finite.all():
        return
    counts = {"NaN": np.isnan(x), "+Inf": np.isposinf(x), "-Inf": np.isneginf(x)}
    found = ", ".join(f"{int(np.count_nonzero(m))} {what}" for what, m in counts.items() if m.any())
    raise ValueError(
        f"{func}: x contains {found} value(s) of {x.size}; a feature must be finite (NaN or Inf means a broken "
        "extraction: check the model's output and extract again)"
    )


def _scales(lo: list[float], hi: list[float], bit_depth: int) -> list[float]:
    """Quantizer scales ``(2**B - 1) / (hi - lo)``, computed in Python float (float64) like the reference."""
    levels = 2**bit_depth - 1
    return [levels / (b - a) for a, b in zip(lo, hi, strict=True)]


# --------------------------------------------------------------------------------------------------
# Quantization
# --------------------------------------------------------------------------------------------------


def quantize(x: np.ndarray, lo: Bound, hi: Bound, bit_depth: int = 10, rounding: bool = False) -> np.ndarray:
    """Truncate ``x`` to [lo, hi] and quantize it uniformly to ``bit_depth``-bit uint16 codes.

    Bit-exact with the reference: ``q = ((clip(x, lo, hi) - lo) * scale).astype(uint16)`` in the
    dtype of :func:`quantization_dtype` (float16 for a float16 ``x``, else float32), where
    ``scale = (2**B - 1) / (hi - lo)`` is computed in float64 and then used in that dtype. The cast
    truncates (floor, as the value is >= 0), which is the benchmark's default. ``rounding=True``
    rounds to nearest instead (``floor(v + 0.5)``, capped at ``2**B - 1``). With sequences for
    ``lo`` / ``hi`` each layer ``x[:, c]`` of a 4-D ``x`` uses its own range (no benchmark task has
    per-layer ranges on float16 features; the reference's per-layer truncation would write float32).

    NaN and +/-Inf are refused (ValueError naming how many of each), not truncated: the float-to-integer cast
    of NaN is platform dependent, and clipping Inf to a bound would code a broken extraction as a valid feature.
    The check is on ``x`` as given, so a finite float64 value beyond float32's range still clips.
    """
    bit_depth = _check_bit_depth("quantize", bit_depth)
    x = np.asarray(x)
    _check_real("quantize", "x", x)
    los, his, per_layer = _ranges("quantize", x, lo, hi)
    _refuse_non_finite("quantize", x)
    dtype = quantization_dtype(x)
    xf = x.astype(dtype, copy=False)
    lo_t = _as_f32(los, per_layer, dtype)
    hi_t = _as_f32(his, per_layer, dtype)
    scale_t = _as_f32(_scales(los, his, bit_depth), per_layer, dtype)
    v = (np.clip(xf, lo_t, hi_t) - lo_t) * scale_t
    if rounding:
        v = np.minimum(np.floor(v + dtype(0.5)), dtype(2**bit_depth - 1))
    return v.astype(np.uint16)


def dequantize(q: np.ndarray, lo: Bound, hi: Bound, bit_depth: int = 10) -> np.ndarray:
    """Map integer codes back to float32 values: ``q / scale + lo`` in float32 (per layer if given).

    This reconstructs the lower edge of each quantization bin, matching the reference; together with
    the floor quantizer it is the benchmark's intended -0.5 LSB biased reconstruction.
    """
    bit_depth = _check_bit_depth("dequantize", bit_depth)
    q = np.asarray(q)
    _check_real("dequantize", "q", q)
    los, his, per_layer = _ranges("dequantize", q, lo, hi)
    lo32 = _as_f32(los, per_layer)
    scale32 = _as_f32(_scales(los, his, bit_depth), per_layer)
    return q.astype(np.float32) / scale32 + lo32


# --------------------------------------------------------------------------------------------------
# Normalization (for learned codecs)
# --------------------------------------------------------------------------------------------------


def normalize(x: np.ndarray, lo: Bound, hi: Bound) -> np.ndarray:
    """Truncate ``x`` to [lo, hi] and map it linearly to [0, 1] in float32, without rounding.

    Learned codecs take continuous inputs, so this is the counterpart of :func:`quantize` for them,
    and it is the reference's learned-codec pre-processing (its uniform quantization with bit depth 1):
    ``(clip(x, lo, hi) - lo) * scale`` with ``scale = 1 / (hi - lo)`` computed in float64 and used as
    float32 (a multiplication, not a division by ``hi - lo``: the two differ in the last bit of about
    one value in five). Always float32, float16 features included: the reference's Hyperprior training
    and evaluation cast the loaded features to float32 first. Per-layer ranges work like in
    :func:`quantize`, and so does the refusal of NaN and +/-Inf (ValueError naming how many of each).
    """
    x = np.asarray(x)
    _check_real("normalize", "x", x)
    los, his, per_layer = _ranges("normalize", x, lo, hi)
    _refuse_non_finite("normalize", x)
    lo32 = _as_f32(los, per_layer)
    hi32 = _as_f32(his, per_layer)
    scale32 = _as_f32(_scales(los, his, 1), per_layer)
    return (np.clip(x.astype(np.float32, copy=False), lo32, hi32) - lo32) * scale32


def denormalize(y: np.ndarray, lo: Bound, hi: Bound) -> np.ndarray:
    """Invert :func:`normalize` as the reference does: ``y / scale + lo`` in float32, ``scale = 1 / (hi - lo)``
    (per layer if given)."""
    y = np.asarray(y)
    _check_real("denormalize", "y", y)
    los, his, per_layer = _ranges("denormalize", y, lo, hi)
    lo32 = _as_f32(los, per_layer)
    scale32 = _as_f32(_scales(los, his, 1), per_layer)
    return y.astype(np.float32, copy=False) / scale32 + lo32


# --------------------------------------------------------------------------------------------------
# Frame packing
# --------------------------------------------------------------------------------------------------

PACKINGS: tuple[str, ...] = ("tokens", "tiles", "plane")
"""How an N x C x H x W tensor becomes a 2-D frame. tokens: ``P[n*H + h, c*W + w] = F[n, c, h, w]`` (each
layer's token rows side by side; DINOv2's cls/seg/dpt features, or a key/value cache of heads x tokens x
head size). tiles: a g x g grid of the C = g*g channel planes (SD3 latents). plane: the one H x W plane of a
1 x 1 x H x W tensor (Llama hidden states)."""


def _check_packing(func: str, packing: str) -> str:
    """Return ``packing`` if it is one of :data:`PACKINGS`, else raise naming it."""
    if not isinstance(packing, str) or packing not in PACKINGS:
        raise ValueError(f"{func}: packing {packing!r} is unknown; expected one of {', '.join(PACKINGS)}")
    return packing


def _check_shape(func: str, shape: Sequence[int]) -> tuple[int, int, int, int]:
    """Return ``shape`` as a tuple of four positive ints (N, C, H, W), else raise naming it."""
    try:
        items = tuple(shape)
    except TypeError:
        items = ()
    ok = len(items) == 4 and all(isinstance(d, int | np.integer) and not isinstance(d, bool) and d >= 1 for d in items)
    if not ok:
        raise ValueError(f"{func}: feature shape {shape!r} must be four positive integers N x C x H x W")
    n, c, h, w = (int(d) for d in items)
    return (n, c, h, w)


def _grid_side(func: str, shape: tuple[int, int, int, int]) -> int:
    """Side g of the g x g tile grid (N must be 1 and C = g*g)."""
    n, c, _, _ = shape
    g = math.isqrt(c)
    if n != 1 or g * g != c:
        raise ValueError(f"{func}: packing 'tiles' needs N == 1 and a square number of channels C, got shape {shape}")
    return g


def frame_shape(packing: str, shape: Sequence[int]) -> tuple[int, int]:
    """Shape (rows, cols) of the 2-D frame that :func:`pack` makes from an N x C x H x W tensor.

    tokens: (N*H, C*W); tiles: (g*H, g*W) with C = g*g; plane: (H, W) with N = C = 1.
    """
    packing = _check_packing("frame_shape", packing)
    dims = _check_shape("frame_shape", shape)
    n, c, h, w = dims
    if packing == "tokens":
        return (n * h, c * w)
    if packing == "tiles":
        g = _grid_side("frame_shape", dims)
        return (g * h, g * w)
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

    tokens: ``P[n*H + h, c*W + w] = F[n, c, h, w]``. tiles: ``P[i*H + h, j*W + w] = F[0, g*i + j, h, w]``.
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
        g = math.isqrt(c)
        out = x[0].reshape(g, g, h, w).transpose(0, 2, 1, 3).reshape(rows, cols)
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
        g = math.isqrt(c)
        out = frame.reshape(g, h, g, w).transpose(0, 2, 1, 3).reshape(1, c, h, w)
    else:
        out = frame.reshape(1, 1, h, w)
    return _fresh(out, frame)


# --------------------------------------------------------------------------------------------------
# Frames: one named tensor's truncation, quantizer and packing
# --------------------------------------------------------------------------------------------------

QUANTIZERS = ("floor", "round")
"""floor: the reference's truncating quantizer (bin lower edges); round: round to nearest."""


@dataclass(frozen=True)
class TensorSpec:
    """How one named tensor becomes a frame: its packing, its truncation (``[lo, hi]``, or one pair per layer)
    and its quantizer."""

    packing: str
    truncation: list
    quantizer: str = "floor"

    def __post_init__(self):
        _check_packing("TensorSpec", self.packing)
        if self.quantizer not in QUANTIZERS:
            raise ValueError(f"quantizer {self.quantizer!r} is unknown; expected one of {', '.join(QUANTIZERS)}")
        truncation_ranges(self.truncation)

    def record(self) -> dict:
        return {"packing": self.packing, "truncation": self.truncation, "quantizer": self.quantizer}


def truncation_ranges(truncation) -> list[tuple[float, float]]:
    """The [lo, hi] pairs of a truncation entry (one pair, or one per layer)."""
    try:
        if isinstance(truncation[0], int | float):
            lo, hi = truncation
            return [(float(lo), float(hi))]
        return [(float(lo), float(hi)) for lo, hi in truncation]
    except (TypeError, ValueError, IndexError):
        raise ValueError(f"truncation {truncation!r} must be [lo, hi] or a list of [lo, hi] pairs") from None


def truncation_bounds(truncation):
    """lo, hi as scalars, or per-layer lists, as `quantize` and `normalize` take them."""
    pairs = truncation_ranges(truncation)
    if isinstance(truncation[0], int | float):
        return pairs[0]
    return [lo for lo, _ in pairs], [hi for _, hi in pairs]


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
    """Truncate, quantize (or normalize, for learned codecs) and pack one N x C x H x W tensor.

    The quantizer computes in the tensor's own dtype (float16 for fp16 features such as the tti latents,
    float32 otherwise; see `quantization_dtype`), so pass the stored array, not a widened copy."""
    lo, hi = truncation_bounds(spec.truncation)
    if input_kind == "quantized":
        y = quantize(x, lo, hi, bit_depth=bit_depth, rounding=spec.quantizer == "round")
    elif input_kind == "normalized":
        y = normalize(x, lo, hi)
    else:
        raise ValueError(f"input kind '{input_kind}' is unknown; expected quantized or normalized")
    return pack(y, spec.packing)


def from_frame(frame: np.ndarray, spec: TensorSpec, shape, input_kind: str, bit_depth: int) -> np.ndarray:
    """The exact inverse of `to_frame` (up to the codec's and the quantizer's loss), in float32."""
    lo, hi = truncation_bounds(spec.truncation)
    y = unpack(frame, spec.packing, tuple(shape))
    if input_kind == "quantized":
        return dequantize(y, lo, hi, bit_depth=bit_depth)
    return denormalize(y, lo, hi)


def preprocess_store(
    features: str | Path, frames: str | Path, task: str, truncation, input_kind: str, bit_depth: int
) -> None:
    """Write the packed frame of every tensor of every sample of the feature store `features` to the store
    `frames` (one frame tensor per feature tensor, same names).

    `truncation` is the task's configured truncation entry (see `preprocess.tensor_specs`); each tensor's
    packing is the one its feature store records. Tensors are quantized as stored (float16 stays float16 in
    the quantizer's arithmetic); each frame tensor records its spec, feature shapes and feature dtype."""
    from lamofc_lib.store import FeatureStore, TensorLayout, write_store

    store = FeatureStore(features)
    specs = tensor_specs({name: store.layout(name).attrs["packing"] for name in store.tensors}, truncation)
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
