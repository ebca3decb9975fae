"""Feature dtypes, bfloat16 included: NumPy has no bfloat16, so a bfloat16 tensor is held as float32 holding
bfloat16 values (exact), and what is written or reconstructed in it is rounded to bfloat16 as torch casts."""

from __future__ import annotations

import numpy as np

BFLOAT16 = "bfloat16"
"""The name of the bfloat16 dtype; a store's layout and array attributes say it where the array is float32."""


def storage_dtype(dtype: str) -> np.dtype:
    """The NumPy dtype a tensor of `dtype` is held in (float32 for bfloat16)."""
    return np.dtype(np.float32) if dtype == BFLOAT16 else np.dtype(dtype)


def dtype_bits(dtype: str) -> int:
    """Bits per value of a tensor dtype (bfloat16 included)."""
    return 16 if dtype == BFLOAT16 else 8 * np.dtype(dtype).itemsize


def as_dtype(x: np.ndarray, dtype: str) -> np.ndarray:
    """`x` cast to `dtype`; for bfloat16, float32 values rounded to the nearest bfloat16 (ties to even, as
    torch's cast), so that a reconstruction holds exactly what a bfloat16 tensor could."""
    if dtype != BFLOAT16:
        return np.asarray(x).astype(dtype)
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)
    return rounded.view(np.float32)
