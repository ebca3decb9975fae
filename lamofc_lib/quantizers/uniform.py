"""LaMoFC's uniform quantizer: truncation to a range, B-bit codes (floor or round) for VVC codecs, or the range
mapped to [0, 1] for learned codecs.

Every function here must stay bit-exact with the LaMoFC reference implementation, because the coded bitstreams
and the reported rate/accuracy numbers depend on the exact integer codes. In particular the arithmetic of
:func:`quantize` follows the stored feature's dtype, as the reference's numpy expressions do: float16 for
float16 features (the tti latents, which the reference stores as fp16 ``.npy`` files) and float32 for everything
else (never float64). :func:`dequantize`, :func:`normalize` and :func:`denormalize` work in float32 for any input
(the reference casts to float32 there). The default quantizer truncates toward zero (floor), which gives a
deliberate -0.5 LSB bias compared with round-to-nearest.

Range arguments ``lo`` / ``hi`` are either two scalars (one range for the whole array) or two sequences of length
C (one range per layer along axis 1 of an N x C x H x W array, as used by the ``dpt`` task whose four layers have
the ranges [-1, 1], [-2, 2], [-10, 10] and [-20, 20]). :mod:`lamofc_lib.preprocess` re-exports the functions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeAlias

import numpy as np

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


class Uniform:
    """The quantizer of a TensorSpec with quantizer floor or round: its truncation range, B-bit codes."""

    name = "uniform"

    @staticmethod
    def check(spec) -> None:
        if spec.centres is not None:
            raise ValueError(f"a {spec.quantizer} TensorSpec has a truncation and no centres")
        truncation_ranges(spec.truncation)

    @staticmethod
    def to_codec_input(x: np.ndarray, spec, input_kind: str, bit_depth: int) -> np.ndarray:
        lo, hi = truncation_bounds(spec.truncation)
        if input_kind == "quantized":
            return quantize(x, lo, hi, bit_depth=bit_depth, rounding=spec.quantizer == "round")
        return normalize(x, lo, hi)

    @staticmethod
    def symbols(x: np.ndarray, spec, bit_depth: int) -> np.ndarray:
        """The integer symbols of the tensor: its B-bit codes (what a VVC codec codes; a learned codec codes the
        normalized values, whose B-bit codes these are)."""
        lo, hi = truncation_bounds(spec.truncation)
        return quantize(x, lo, hi, bit_depth=bit_depth, rounding=spec.quantizer == "round")

    @staticmethod
    def from_codec_output(y: np.ndarray, spec, input_kind: str, bit_depth: int) -> np.ndarray:
        lo, hi = truncation_bounds(spec.truncation)
        if input_kind == "quantized":
            return dequantize(y, lo, hi, bit_depth=bit_depth)
        return denormalize(y, lo, hi)
