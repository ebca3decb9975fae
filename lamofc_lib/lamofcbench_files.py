"""LaMoFCBench's released per-sample feature files: one `<sample id>.zst` per sample, a zstd-compressed
`torch.save` pickle of nested dicts, lists and tuples of tensors, as the reference (NTU-AI4X/LaMoFCBench)
writes and its handlers parse them, imported into the feature store with their tensor names, shapes and dtypes.

How it is reached: a task whose `features_from` folder holds `.zst` files imports them through
:func:`lamofc_lib.feature_files.import_features` (rule import_features), which calls :func:`import_zst_features`
and checks the tensors against the task.

Loading is safe. The file is decompressed with `zstandard`, then read with `torch.load(weights_only=True)`, so
no pickled class is ever constructed; what the weights-only loader refuses (a custom class, a function) is
re-raised as a `FeatureFileError` naming the file and the refused global. The loaded object is then walked: only
tensors, dicts with non-empty string keys, lists, tuples, ints, floats, bools, strings and None are accepted;
anything else (a set, bytes, a complex number, a dtype, ...) is refused naming the file and the key path.

Names: a tensor is named by its key path, dict keys as they are and list/tuple indices as numbers, joined with
dots: `{"output": t, "key": [k0, ..., k4]}` gives `output`, `key.0` ... `key.4`; Kimi-Audio's
`{"model.layers.4": (h, (k, v))}` gives `model.layers.4.0`, `model.layers.4.1.0`, `model.layers.4.1.1`. Keys
are kept verbatim: the reference handlers' renamings (DINOv3's `backbone.blocks.9` -> `layer.9`, Qwen's
`layer.i.k_cache`) are not applied here. A file `{"features": ..., "metadata": ...}` (exactly these two keys:
the reference coder's output format) is read through its `features`. A name must be a valid store name (no
"/", not starting with "."), and two key paths may not give one name; the file is refused otherwise. The store
lists the tensors in natural order of their key paths (numbers by value: `model.layers.2` before `.10`),
whatever the order in the files; each tensor's attribute `source_key` holds its key path (strings and ints).

Tensors: only floating tensors are features: float16, bfloat16, float32 and float64 are stored in their own
dtype (bfloat16 as its exact float32 values with the store dtype "bfloat16", see `store.BFLOAT16`); an integer,
bool, complex, 8-bit float or quantized tensor, a sparse tensor, an empty one, one of rank 0 or above 4, and
NaN or Inf values are refused naming the file and the tensor. Numbers, strings, bools and None found in the
file (in the features or in the wrapper's `metadata`) are metadata, never tensors: the store attribute
`file_metadata` maps each sample id to {dotted key path: value} (non-finite floats as strings, the wrapper's
entries under `metadata.`).

Shapes: every tensor is stored as an N x C x H x W view (a reshape, the values in memory order) so that
`preprocess.PACKINGS` apply, with its packing as the attribute `packing` and each sample's original shape in
`source_shapes` (to restore it for re-injection):

- rank 4 (N, C, H, W) as is, packing tokens: a key/value cache (1, heads, T, head size) becomes the frame
  T x (heads * head size), heads side by side, head-major (LaMoFCBench's K/V frame);
- rank 3 (B, T, C) -> (B, 1, T, C), packing tokens: the frame (B * T) x C (a hidden state (1, T, C) is
  LaMoFCBench's T x C frame; FalconMamba's (1, 8192, 16) state its 8192 x 16 frame);
- rank 2 (R, C) -> (1, 1, R, C), packing plane: R x C (SD3.5's prompt embeddings);
- rank 1 (C,) -> (1, 1, 1, C), packing plane: 1 x C (SD3.5's pooled embeddings).

A task's layout overrides both the names and the packings: its `Task.import_tensors` renames and reshapes the
file's tensors (the DINOv3 scenarios split a (B, T, C) level into its items `layer.L.b`, each its own T x 4096
frame as LaMoFCBench codes them; sd35_canny gives SD3.5's VAE moments (32, 128, 128) and latent (16, 128, 128)
their batch axis), and the packing of a tensor its layout names is the layout's (sd35_canny's `tiles`: the 4 x 8
and 4 x 4 grids of channel planes LaMoFCBench lays them out in).

Samples: every file must hold the same tensor names, each with the same key path, rank and dtype (the sizes may
differ: T varies with the prompt, and the store keeps ragged samples); a difference is refused naming the file
and the first file. Each file is read twice (once to check it and learn the shapes the store declares, once
to write it), so one sample is in memory at a time.
"""

from __future__ import annotations

import io
import math
import pickle
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import zstandard

from lamofc_lib.io import FeatureFileError
from lamofc_lib.store import BFLOAT16, TensorLayout, write_store

SUFFIX = ".zst"
"""A released feature file is `<sample id>.zst`."""

FEATURE_DTYPES = {
    torch.float16: "float16",
    torch.bfloat16: BFLOAT16,
    torch.float32: "float32",
    torch.float64: "float64",
}
"""The tensor dtypes that are features, and the store dtype each is kept in."""

VIEW_PACKINGS = {4: "tokens", 3: "tokens", 2: "plane", 1: "plane"}
"""The packing of a tensor of each rank (see the module docstring for its N x C x H x W view)."""

MAX_DEPTH = 32
"""Deepest nesting of containers a file may have (a pickle can also hold a list that contains itself)."""

WRAPPER = {"features", "metadata"}
"""The top-level keys of the reference coder's output files; their tensors are under `features`."""

Key = tuple[str | int, ...]


@dataclass
class _Sample:
    """One file's tensors by name (each with its key path) and its metadata (dotted key path -> value)."""

    tensors: dict[str, tuple[Key, torch.Tensor]]
    metadata: dict[str, str | int | float | bool | None]


def _where(key: Key) -> str:
    return "the top level" if not key else "key " + ".".join(map(str, key))


def _refused_global(err: Exception) -> str:
    """What the weights-only loader refused, from its message (the line after 'WeightsUnpickler error:')."""
    text = str(err)
    found = re.search(r"WeightsUnpickler error:\s*(.*?)\s*(?:Please use|Check the documentation|$)", text, re.S)
    detail = found.group(1) if found and found.group(1) else text.splitlines()[0]
    return " ".join(detail.split())


def _load(path: Path) -> object:
    """The object pickled in a .zst file, decompressed and loaded weights-only."""
    try:
        with path.open("rb") as fh, zstandard.ZstdDecompressor().stream_reader(fh, read_across_frames=True) as r:
            data = r.read()
    except zstandard.ZstdError as err:
        raise FeatureFileError(f"feature file {path} is not zstd-compressed or is corrupt: {err}") from None
    if not data:
        raise FeatureFileError(f"feature file {path} is empty once decompressed")
    try:
        return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as err:
        raise FeatureFileError(
            f"feature file {path} was refused by torch's weights-only loader (it holds something other than "
            f"tensors, containers, numbers and strings, or is not a torch.save file): {_refused_global(err)}"
        ) from None
    except Exception as err:  # the unpickler fails on malformed bytes with any error (KeyError, ...)
        raise FeatureFileError(
            f"feature file {path} is not a readable torch.save file: {type(err).__name__}: {err}"
        ) from None


def _walk(path: Path, obj: object, key: Key, tensors: dict, metadata: dict, metadata_only: bool = False) -> None:
    """Collect the tensors (key path -> tensor) and metadata leaves (key path -> value) under `obj`."""
    if len(key) > MAX_DEPTH:
        raise FeatureFileError(f"feature file {path} nests containers deeper than {MAX_DEPTH} levels at {_where(key)}")
    if isinstance(obj, torch.Tensor):
        if metadata_only:
            raise FeatureFileError(f"feature file {path} holds a tensor in its metadata, at {_where(key)}")
        tensors[key] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str) or not k:
                raise FeatureFileError(
                    f"feature file {path} has the dict key {k!r} at {_where(key)}; keys must be non-empty strings"
                )
            _walk(path, v, (*key, k), tensors, metadata, metadata_only)
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            _walk(path, v, (*key, i), tensors, metadata, metadata_only)
    elif obj is None or isinstance(obj, bool | int | float | str):
        metadata[key] = obj
    else:
        raise FeatureFileError(
            f"feature file {path} holds a {type(obj).__name__} at {_where(key)}; only tensors, dicts, lists, "
            "tuples, numbers, strings and None are allowed"
        )


def _metadata_value(value):
    """A metadata leaf as JSON can hold it (a non-finite float as its string)."""
    return str(value) if isinstance(value, float) and not math.isfinite(value) else value


def _checked_tensor(path: Path, name: str, t: torch.Tensor) -> torch.Tensor:
    if t.layout != torch.strided:
        raise FeatureFileError(f"feature file {path}: tensor '{name}' is {t.layout}, expected a dense tensor")
    if t.dtype not in FEATURE_DTYPES:
        raise FeatureFileError(
            f"feature file {path}: tensor '{name}' is {t.dtype}; only floating tensors "
            f"({', '.join(map(str, FEATURE_DTYPES))}) are features"
        )
    if t.ndim not in VIEW_PACKINGS or 0 in t.shape:
        raise FeatureFileError(
            f"feature file {path}: tensor '{name}' has shape {tuple(t.shape)}; expected 1 to 4 non-empty dimensions"
        )
    if not bool(torch.isfinite(t).all()):
        raise FeatureFileError(f"feature file {path}: tensor '{name}' holds NaN or Inf values")
    return t.detach()


def _read(path: Path, rename: Callable | None = None) -> _Sample:
    """A file's named tensors and metadata, every check applied; `rename` (a task's `import_tensors`) maps each
    tensor to the task's own tensors."""
    obj = _load(path)
    found, leaves = {}, {}
    if isinstance(obj, dict) and set(obj) == WRAPPER:
        _walk(path, obj["metadata"], ("metadata",), found, leaves, metadata_only=True)
        obj = obj["features"]
    _walk(path, obj, (), found, leaves)
    if not found:
        raise FeatureFileError(f"feature file {path} holds no tensors")
    tensors: dict[str, tuple[Key, torch.Tensor]] = {}
    for key, t in found.items():
        name = ".".join(map(str, key))
        if not name or "/" in name or name.startswith("."):
            raise FeatureFileError(
                f"feature file {path}: tensor name {name!r} (from {_where(key)}) is not a valid store name "
                "(no '/', not starting with '.')"
            )
        if name in tensors:
            raise FeatureFileError(
                f"feature file {path}: {_where(tensors[name][0])} and {_where(key)} both give the tensor name '{name}'"
            )
        tensors[name] = (key, _checked_tensor(path, name, t))
    if rename is not None:
        renamed: dict[str, tuple[Key, torch.Tensor]] = {}
        for name, (key, t) in tensors.items():
            for new, value in rename(name, t).items():
                if new in renamed:
                    raise FeatureFileError(f"feature file {path}: two tensors give the task's tensor '{new}'")
                renamed[new] = (key, value)
        tensors = renamed
    metadata = {".".join(map(str, k)): _metadata_value(v) for k, v in leaves.items()}
    return _Sample(tensors, metadata)


def _natural(key: Key) -> tuple:
    """Sort key of a key path: numbers (list indices, digit runs in dict keys) by value."""
    parts = []
    for part in key:
        if isinstance(part, int):
            parts.append(((0, part),))
        else:
            pieces = re.split(r"(\d+)", part)  # digit runs at the odd positions
            parts.append(tuple((0, int(p)) if i % 2 else (1, p) for i, p in enumerate(pieces) if p))
    return tuple(parts)


def _view(shape: Sequence[int]) -> tuple[int, int, int, int]:
    """The N x C x H x W view of a tensor of this shape (see the module docstring)."""
    dims = [int(d) for d in shape]
    if len(dims) == 4:
        return (dims[0], dims[1], dims[2], dims[3])
    if len(dims) == 3:
        return (dims[0], 1, dims[1], dims[2])
    if len(dims) == 2:
        return (1, 1, dims[0], dims[1])
    return (1, 1, 1, dims[0])


def _packing(name: str, rank: int, expected: Mapping[str, TensorLayout] | None) -> str:
    """A tensor's packing: the task's (its layout's `packing`), else that of its file rank (VIEW_PACKINGS)."""
    layout = (expected or {}).get(name)
    return str(layout.attrs["packing"]) if layout is not None and "packing" in layout.attrs else VIEW_PACKINGS[rank]


def _array(t: torch.Tensor) -> np.ndarray:
    """A tensor's values as NumPy holds them (bfloat16 as its exact float32 values), in its N x C x H x W view."""
    x = t.float().numpy() if t.dtype == torch.bfloat16 else t.contiguous().numpy()
    return x.reshape(_view(t.shape))


def _differences(ref: dict, got: dict) -> str:
    missing, extra = sorted(set(ref) - set(got)), sorted(set(got) - set(ref))
    parts = [f"lacks {missing}"] if missing else []
    parts += [f"has the extra tensors {extra}"] if extra else []
    for name in sorted(set(ref) & set(got)):
        (rkey, rrank, rdtype), (gkey, grank, gdtype) = ref[name], got[name]
        if rkey != gkey:
            parts.append(f"has '{name}' at {_where(gkey)}, not {_where(rkey)}")
        if rrank != grank:
            parts.append(f"has '{name}' of rank {grank}, not {rrank}")
        if rdtype != gdtype:
            parts.append(f"has '{name}' in {gdtype}, not {rdtype}")
    return "; ".join(parts)


def import_zst_features(
    folder: str | Path,
    sample_ids: Sequence[str],
    out: str | Path,
    attrs: Mapping | None = None,
    rename: Callable | None = None,
    expected: Mapping[str, TensorLayout] | None = None,
    stems: Sequence[str] | None = None,
) -> None:
    """Write the `.zst` feature files of `sample_ids` (`<folder>/<stem>.zst`, the stem the sample id or, given
    `stems`, the reference's file stem of each sample, e.g. `<image>-stackedpatches`; in this order: the
    manifest's) to a new feature store at `out`, with `attrs` added to the store's attributes. `rename(name,
    tensor)` gives the tensors a task makes of each file tensor (`Task.import_tensors`: the DINOv3 scenarios
    take the reference's `layer.9` or older `segmentation_model.0.backbone.blocks.9` batch as `layer.9.0`, ...).
    `expected`: the task's layout of the tensors; a sample whose layout has a tensor absent (store.absent: an
    ADE20K image with fewer slide crops than the slots) may lack it in its file, and it is stored absent (a
    tensor no file holds, with the layout's shape and dtype). Every file holds the same tensors otherwise, in the
    same dtypes and ranks."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FeatureFileError(f"feature folder {folder} does not exist")
    if not sample_ids:
        raise FeatureFileError(f"no sample ids given to import from {folder}")
    paths = []
    for stem in stems or sample_ids:
        if not stem or "/" in stem or stem in (".", ".."):
            raise FeatureFileError(f"sample id {stem!r} cannot name a feature file in {folder}")
        paths.append(folder / f"{stem}{SUFFIX}")
    first: tuple[Path, dict] | None = None
    signature: dict[str, tuple] = {}  # each tensor's (key path, rank, dtype), from the first file holding it
    lacking: list[set[str]] = []  # per sample so far, the tensors its layout has absent
    source_shapes: dict[str, list[tuple[int, ...] | None]] = {}
    file_metadata = {}
    for k, (sid, path) in enumerate(zip(sample_ids, paths, strict=True)):
        if not path.is_file():
            raise FeatureFileError(f"feature file {path} does not exist (sample {sid} of the manifest)")
        sample = _read(path, rename)
        own = {name: (key, t.ndim, FEATURE_DTYPES[t.dtype]) for name, (key, t) in sample.tensors.items()}
        may_lack = {name for name, t in (expected or {}).items() if t.shapes[k][:1] == (0,)}
        first = first or (path, own)
        new = {name for name in set(own) - set(signature) if all(name in lacked for lacked in lacking)}
        wanted = {name: signature[name] for name in signature if name not in may_lack or name in own}
        wanted |= {name: own[name] for name in new}
        if own != wanted:
            raise FeatureFileError(f"feature file {path} does not match {first[0]}: it {_differences(wanted, own)}")
        lacking.append(may_lack)
        for name in set(own) - set(signature):
            signature[name] = own[name]
            source_shapes.setdefault(name, [None] * k)  # earlier samples lacked it: absent there
        for name in signature:
            source_shapes[name].append(tuple(sample.tensors[name][1].shape) if name in own else None)
        if sample.metadata:
            file_metadata[sid] = sample.metadata
    assert first is not None
    for name, t in (expected or {}).items():  # absent from every sample: no file holds it
        if name not in signature and all(shape[:1] == (0,) for shape in t.shapes):
            # the (0, 1, T, D) view of a (0, T, D) batch, as the files' levels are
            signature[name] = ((name,), len(t.shapes[0]) - 1, t.dtype)
            source_shapes[name] = [tuple(0 if d is None else d for d in shape[:1] + shape[2:]) for shape in t.shapes]
    order = {name: k for k, name in enumerate(expected or {})}  # the layout's order, else the files' key paths'
    names = sorted(signature, key=lambda name: (order.get(name, len(order)), _natural(signature[name][0])))
    for name in names:  # an absent slot: no items, the other dimensions of the tensor's files
        present = next((s for s in source_shapes[name] if s is not None), None)
        source_shapes[name] = [(0, *present[1:]) if s is None else s for s in source_shapes[name]]
    tensors = {
        name: TensorLayout(
            [_view(s) for s in source_shapes[name]],
            signature[name][2],
            {
                "packing": _packing(name, signature[name][1], expected),
                "source_shapes": [list(s) for s in source_shapes[name]],
                "source_key": list(signature[name][0]),
            },
        )
        for name in names
    }

    def samples() -> Iterator[dict[str, np.ndarray]]:
        for path in paths:
            yield {name: _array(t) for name, (_, t) in _read(path, rename).tensors.items()}

    store_attrs = {
        **(attrs or {}),
        "imported_from": str(folder),
        "file_format": "LaMoFCBench .zst (zstd-compressed torch.save, loaded weights-only)",
        "file_metadata": file_metadata,
    }
    write_store(out, list(sample_ids), tensors, samples(), attrs=store_attrs)
