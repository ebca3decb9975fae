"""The feature store: a Zarr group holding, for every sample, a set of named tensors.

A sample's feature is one or more named tensors (today's tasks have one, named `FEATURE`; a model whose split
point carries a key/value cache, several layers or states has one per part). Each tensor is one chunked Zarr
array of the group, in its own dtype (float16 features stay float16), one chunk per sample, so one sample's
tensor is always one chunk read. Packed frames use the same layout (one 2-D frame per tensor and sample).

Samples may differ in shape (csr prompts have different token counts): each array is sized to the largest
sample along each axis, its attribute `shapes` records each sample's true shape, and the padding is zeros,
which the lossless Blosc compression stores almost for free.

Compression: Blosc LZ4 (level 5, byte shuffle). Float features barely compress (measured on 8 random-normal
samples of 1370 x 1536 and on the demo's features: Zstd level 5 gives 1.15x at 19 MB/s writing, LZ4 1.07x at
123 MB/s), so the store favours speed; `python -m lamofc_lib.benchmarks speed` prints today's figures.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from lamofc_lib.dtypes import BFLOAT16, as_dtype, dtype_bits, storage_dtype
from lamofc_lib.io import atomic_path

__all__ = [
    "BFLOAT16",
    "absent",
    "FEATURE",
    "FeatureStore",
    "StoreShards",
    "TensorLayout",
    "as_dtype",
    "dtype_bits",
    "storage_dtype",
    "write_store",
]

Shape = tuple[int, ...]
Sample = Mapping[str, np.ndarray]

FEATURE = "feature"
"""The name of the tensor of a task whose samples carry one tensor."""


def absent(shape: Sequence[int]) -> bool:
    """Whether a sample's tensor of this shape is one the sample does not have: a batch of no items (first axis
    0). A scenario whose samples carry different numbers of items (ADE20K's slide crops: 2 for most images, more
    for wide ones) names every item any sample may have (`layer.9.0` ... `layer.9.3`); a sample with fewer has
    the others absent. An absent tensor has no frame to code (no bitstream, 0 bits, 0 points) and is not put back
    into the model."""
    return len(shape) > 0 and int(shape[0]) == 0


@dataclass
class TensorLayout:
    """One named tensor of every sample: its shape per sample, its dtype, and attributes of its own (e.g. the
    packing that lays it out as a 2-D frame, or the truncation its frames were made with)."""

    shapes: list[Shape]
    dtype: str = "float32"
    attrs: dict = field(default_factory=dict)


def _compressor() -> BloscCodec:
    return BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")


def write_store(
    path: str | Path,
    sample_ids: Sequence[str],
    tensors: Mapping[str, TensorLayout],
    samples: Iterable[Sample],
    attrs: Mapping | None = None,
) -> None:
    """Write `samples` (in `sample_ids` order; each a mapping of tensor name to array of its declared shape, where
    a tensor declared absent for the sample may be left out) to a new store at `path`, written atomically. Every
    tensor is cast to its layout's dtype."""
    if not tensors:
        raise ValueError("write_store: no tensors declared")
    layouts = {name: _checked_layout(name, layout, len(sample_ids)) for name, layout in tensors.items()}
    with atomic_path(path) as tmp:
        group = zarr.open_group(str(tmp), mode="w")
        group.attrs.update({**(attrs or {}), "sample_ids": list(sample_ids), "tensors": list(layouts)})
        arrays = {}
        for name, (layout, full) in layouts.items():
            array = group.create_array(
                name,
                shape=(len(sample_ids), *full),
                chunks=(1, *full),
                dtype=storage_dtype(layout.dtype),
                compressors=_compressor(),
                fill_value=0,
            )
            array.attrs.update({**layout.attrs, "shapes": [list(s) for s in layout.shapes], "dtype": layout.dtype})
            arrays[name] = array
        count = 0
        for i, sample in enumerate(samples):
            if i >= len(sample_ids):
                raise ValueError(f"write_store: more samples than the {len(sample_ids)} declared")
            missing = {name for name, (layout, _) in layouts.items() if absent(layout.shapes[i])} - set(sample)
            if set(sample) | missing != set(layouts):
                raise ValueError(
                    f"write_store: sample {sample_ids[i]} has tensors {sorted(sample)}, declared {sorted(layouts)}"
                )
            for name, (layout, full) in layouts.items():
                x = np.asarray(sample[name]) if name in sample else np.zeros(layout.shapes[i], np.float32)
                if x.shape != layout.shapes[i]:
                    raise ValueError(
                        f"write_store: tensor '{name}' of sample {sample_ids[i]} has shape {x.shape}, "
                        f"declared {layout.shapes[i]}"
                    )
                block = np.zeros(full, dtype=storage_dtype(layout.dtype))
                block[tuple(slice(0, n) for n in x.shape)] = as_dtype(x, layout.dtype)
                arrays[name][i] = block
            count += 1
        if count != len(sample_ids):
            raise ValueError(f"write_store: {count} samples written, {len(sample_ids)} declared")


def _checked_layout(name: str, layout: TensorLayout, samples: int) -> tuple[TensorLayout, Shape]:
    """The layout with int shapes, and the array's per-sample block shape (the largest along each axis)."""
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"write_store: tensor name {name!r} is not a valid array name")
    shapes = [tuple(int(v) for v in s) for s in layout.shapes]
    if len(shapes) != samples or not shapes:
        raise ValueError(f"write_store: tensor '{name}' declares {len(shapes)} shapes for {samples} sample ids")
    rank = len(shapes[0])
    if any(len(s) != rank for s in shapes):
        raise ValueError(
            f"write_store: tensor '{name}' must have one rank in all samples, got {sorted(set(shapes))[:3]}"
        )
    full = tuple(max(1, *(s[d] for s in shapes)) for d in range(rank))  # a chunk of an all-absent tensor: 1 item
    dtype = BFLOAT16 if layout.dtype == BFLOAT16 else str(np.dtype(layout.dtype))
    return TensorLayout(shapes, dtype, dict(layout.attrs)), full


class FeatureStore:
    """Read access to a store written by `write_store`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not (self.path / "zarr.json").is_file():
            raise FileNotFoundError(f"{self.path} is not a feature store (no zarr.json)")
        group = zarr.open(str(self.path), mode="r")
        if not isinstance(group, zarr.Group) or "tensors" not in group.attrs:
            raise ValueError(
                f"{self.path} is a feature store of an older LaMoFC version (one array, no named tensors); "
                "delete it to rebuild it"
            )
        self.attrs = dict(group.attrs)
        self.sample_ids: list[str] = list(self.attrs["sample_ids"])
        self.tensors: list[str] = list(self.attrs["tensors"])
        self._arrays = {name: group[name] for name in self.tensors}
        self._layouts = {}
        for name, array in self._arrays.items():
            tensor_attrs = dict(array.attrs)
            shapes = [tuple(s) for s in tensor_attrs.pop("shapes")]
            dtype = BFLOAT16 if tensor_attrs.pop("dtype", None) == BFLOAT16 else str(np.dtype(array.dtype))
            self._layouts[name] = TensorLayout(shapes, dtype, tensor_attrs)

    def __len__(self) -> int:
        return len(self.sample_ids)

    def _name(self, tensor: str | None) -> str:
        if tensor is None:
            if len(self.tensors) != 1:
                raise ValueError(f"{self.path} holds tensors {self.tensors}: name the one to read")
            return self.tensors[0]
        if tensor not in self._layouts:
            raise KeyError(f"{self.path} has no tensor '{tensor}'; it has {self.tensors}")
        return tensor

    def layout(self, tensor: str | None = None) -> TensorLayout:
        """Shapes, dtype and attributes of a tensor (the only one when `tensor` is None)."""
        return self._layouts[self._name(tensor)]

    @property
    def shapes(self) -> list[Shape]:
        """Per-sample shapes of the only tensor (a store of one-tensor samples)."""
        return self.layout().shapes

    @property
    def dtype(self) -> np.dtype:
        """The NumPy dtype the only tensor is read in (a store of one-tensor samples; float32 for bfloat16)."""
        return storage_dtype(self.layout().dtype)

    def read(self, i: int, tensor: str | None = None) -> np.ndarray:
        """Tensor `tensor` (the only one when None) of sample `i` at its own shape and dtype (one chunk read;
        bfloat16 values come as float32)."""
        name = self._name(tensor)
        shape = self._layouts[name].shapes[i]
        return np.asarray(self._arrays[name][i])[tuple(slice(0, n) for n in shape)]

    def has(self, i: int, tensor: str | None = None) -> bool:
        """Whether sample `i` has tensor `tensor` (see `absent`)."""
        return not absent(self.layout(tensor).shapes[i])

    def sample(self, i: int) -> dict[str, np.ndarray]:
        """Every tensor of sample `i` that it has, by name."""
        return {name: self.read(i, name) for name in self.tensors if self.has(i, name)}

    def points(self, i: int) -> int:
        """Number of feature points (values) of sample `i`, over all its tensors."""
        return sum(math.prod(layout.shapes[i]) for layout in self._layouts.values())


class StoreShards:
    """Several stores of the same tensors read as one, samples in the given order: a point's reconstruction,
    written as one store per group of samples (one per code job)."""

    def __init__(self, paths: Sequence[str | Path]):
        if not paths:
            raise ValueError("StoreShards: no stores given")
        self.stores = [FeatureStore(p) for p in paths]
        first = self.stores[0]
        for store in self.stores[1:]:
            if store.tensors != first.tensors:
                raise ValueError(f"{store.path} has tensors {store.tensors}, {first.path} {first.tensors}")
        self.path = first.path.parent
        self.attrs = first.attrs
        self.tensors = first.tensors
        self.sample_ids = [s for store in self.stores for s in store.sample_ids]
        self._where = [(store, i) for store in self.stores for i in range(len(store))]
        self._layouts = {
            name: TensorLayout(
                [shape for store in self.stores for shape in store.layout(name).shapes],
                first.layout(name).dtype,
                first.layout(name).attrs,
            )
            for name in self.tensors
        }

    def __len__(self) -> int:
        return len(self.sample_ids)

    def layout(self, tensor: str) -> TensorLayout:
        return self._layouts[tensor]

    def read(self, i: int, tensor: str | None = None) -> np.ndarray:
        store, j = self._where[i]
        return store.read(j, tensor)

    def has(self, i: int, tensor: str | None = None) -> bool:
        store, j = self._where[i]
        return store.has(j, tensor)

    def sample(self, i: int) -> dict[str, np.ndarray]:
        store, j = self._where[i]
        return store.sample(j)

    def points(self, i: int) -> int:
        store, j = self._where[i]
        return store.points(j)
