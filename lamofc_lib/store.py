"""The feature store: one chunked Zarr array per task, one chunk per sample (also used for packed frames).

Samples of one task may differ in shape (csr prompts have different token counts). The array is sized to the
largest sample along each axis, every chunk holds exactly one sample, and the attribute `shapes` records each
sample's true N x C x H x W, so one sample is always one chunk read. Padding is zeros, which the lossless
Blosc/Zstd compression stores almost for free.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from lamofc_lib.io import atomic_path

Shape = tuple[int, ...]


def _compressor() -> BloscCodec:
    return BloscCodec(cname="zstd", clevel=5, shuffle="shuffle")


def write_store(
    path: str | Path,
    sample_ids: Sequence[str],
    shapes: Sequence[Shape],
    samples: Iterable[np.ndarray],
    attrs: Mapping | None = None,
    dtype: str = "float32",
) -> None:
    """Write `samples` (in `sample_ids` order, each of its declared shape) to a new store at `path`.

    The array has the element type `dtype` (e.g. "float16" for SD3's fp16 latents, which are kept, not
    widened; "uint16" for quantized frames), recorded in the attribute `dtype` too; samples are cast to it."""
    shapes = [tuple(int(v) for v in s) for s in shapes]
    if len(sample_ids) != len(shapes) or not shapes:
        raise ValueError(f"write_store: {len(sample_ids)} sample ids for {len(shapes)} shapes")
    rank = len(shapes[0])
    if any(len(s) != rank for s in shapes):
        raise ValueError(f"write_store: samples must all have the same rank, got {sorted(set(shapes))[:3]}")
    full = tuple(max(s[d] for s in shapes) for d in range(rank))
    with atomic_path(path) as tmp:
        array = zarr.create_array(
            str(tmp),
            shape=(len(shapes), *full),
            chunks=(1, *full),
            dtype=dtype,
            compressors=_compressor(),
            fill_value=0,
        )
        array.attrs.update(
            {
                **(attrs or {}),
                "sample_ids": list(sample_ids),
                "shapes": [list(s) for s in shapes],
                "dtype": dtype,
            }
        )
        count = 0
        for i, x in enumerate(samples):
            if i >= len(shapes):
                raise ValueError(f"write_store: more samples than the {len(shapes)} declared")
            x = np.asarray(x)
            if x.shape != shapes[i]:
                raise ValueError(f"write_store: sample {sample_ids[i]} has shape {x.shape}, declared {shapes[i]}")
            block = np.zeros(full, dtype=dtype)
            block[tuple(slice(0, n) for n in x.shape)] = x
            array[i] = block
            count += 1
        if count != len(shapes):
            raise ValueError(f"write_store: {count} samples written, {len(shapes)} declared")


class FeatureStore:
    """Read access to a store written by `write_store`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not (self.path / "zarr.json").is_file():
            raise FileNotFoundError(f"{self.path} is not a feature store (no zarr.json)")
        self._array = zarr.open_array(str(self.path), mode="r")
        self.attrs = dict(self._array.attrs)
        self.sample_ids: list[str] = list(self.attrs["sample_ids"])
        self.shapes: list[Shape] = [tuple(s) for s in self.attrs["shapes"]]
        self.dtype: np.dtype = np.dtype(self._array.dtype)
        """The element type every `read` returns (float16 for fp16 features, float32, uint16 frames)."""

    def __len__(self) -> int:
        return len(self.sample_ids)

    def read(self, i: int) -> np.ndarray:
        """Sample `i` at its own shape (one chunk read)."""
        return np.asarray(self._array[i])[tuple(slice(0, n) for n in self.shapes[i])]

    def points(self, i: int) -> int:
        """Number of feature points of sample `i`."""
        return int(np.prod(self.shapes[i]))
