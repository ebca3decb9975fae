"""Tests for lamofc_lib.store (the Zarr feature store) and lamofc_lib.io.atomic_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from store_helpers import write_one

from lamofc_lib.io import atomic_path, read_json, write_json
from lamofc_lib.store import FEATURE, FeatureStore, TensorLayout, as_dtype, dtype_bits, write_store

IDS = ["s0", "s1", "s2"]
# Ragged along H (csr-like token counts) and, for the third sample, along C and W too.
SHAPES = [(1, 1, 5, 32), (1, 1, 11, 32), (1, 2, 8, 7)]


def samples(shapes=SHAPES, dtype="float32", seed=0):
    """Distinct, non-zero samples (a zero sample would leave its chunk unwritten)."""
    rng = np.random.default_rng(seed)
    out = []
    for i, s in enumerate(shapes):
        if dtype == "uint16":
            out.append(rng.integers(1, 1024, size=s).astype(np.uint16))
        else:
            out.append((rng.standard_normal(s) * (i + 1) + 0.5).astype(dtype))
    return out


def leftovers(parent: Path) -> list[str]:
    """Everything in `parent`, hidden partial outputs included."""
    return sorted(p.name for p in parent.iterdir()) if parent.exists() else []


# --------------------------------------------------------------------------------------------------
# write_store / FeatureStore
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float16", "uint16"])
def test_round_trip_of_ragged_samples(tmp_path, dtype):
    data = samples(dtype=dtype)
    write_one(tmp_path / "store", IDS, SHAPES, iter(data), dtype=dtype)
    store = FeatureStore(tmp_path / "store")
    assert len(store) == 3
    assert store.sample_ids == IDS
    assert store.tensors == [FEATURE] and store.layout().shapes == SHAPES
    for i, x in enumerate(data):
        y = store.read(i)
        assert y.shape == SHAPES[i]
        assert y.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(y, x)
        assert store.points(i) == int(np.prod(SHAPES[i]))


def test_float16_features_stay_float16(tmp_path):
    """fp16 features (SD3 latents) are stored as float16, not widened: the Zarr array, its `dtype` attribute
    and every read are float16, and the values are the fp16 values written (bit for bit)."""
    data = samples(dtype="float16", seed=3)
    assert all(x.dtype == np.float16 for x in data)
    write_one(tmp_path / "store", IDS, SHAPES, iter(data), dtype="float16")
    array = zarr.open_array(str(tmp_path / "store" / FEATURE), mode="r")
    assert array.dtype == np.float16
    store = FeatureStore(tmp_path / "store")
    assert store.layout().dtype == "float16"
    for i, x in enumerate(data):
        y = store.read(i)
        assert y.dtype == np.float16
        np.testing.assert_array_equal(y.view(np.uint16), x.view(np.uint16))
    # half the bytes of the float32 store of the same values
    write_one(tmp_path / "wide", IDS, SHAPES, (x.astype(np.float32) for x in data))
    assert FeatureStore(tmp_path / "wide").layout().dtype == "float32"
    assert array.nbytes * 2 == zarr.open_array(str(tmp_path / "wide" / FEATURE), mode="r").nbytes


def test_bfloat16_is_rounded_as_torch_rounds_it_and_stored_as_its_float32_values(tmp_path):
    """NumPy has no bfloat16: values are rounded to it (ties to even) as torch's cast does, kept as float32, and
    the store says bfloat16 (16 bits a value for EBPFP)."""
    import torch

    rng = np.random.default_rng(0)
    x = (rng.standard_normal(10_000) * 50).astype(np.float32)
    ties = (rng.integers(0, 1 << 15, 64, dtype=np.uint32) << 16 | 0x8000).view(np.float32)  # halfway cases
    x = np.concatenate([x, ties, np.float32([0.0, -0.0, 1e-40, 3.0e38])])
    expected = torch.from_numpy(x).to(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(as_dtype(x, "bfloat16"), expected)
    assert dtype_bits("bfloat16") == 16 and dtype_bits("float16") == 16 and dtype_bits("float32") == 32
    path = tmp_path / "bf16.zarr"
    write_store(path, ["a"], {"t": TensorLayout([x.shape], "bfloat16")}, [{"t": x}])
    store = FeatureStore(path)
    assert store.layout("t").dtype == "bfloat16" and store.read(0, "t").dtype == np.float32
    np.testing.assert_array_equal(store.read(0, "t"), expected)


def test_attrs_are_kept(tmp_path):
    attrs = {"stage": "features", "task": "csr", "truncation": [-5, 5], "nested": {"a": [1, 2]}}
    write_one(tmp_path / "store", IDS, SHAPES, samples(), attrs=attrs)
    store = FeatureStore(tmp_path / "store")
    assert store.attrs == {**attrs, "sample_ids": IDS, "tensors": [FEATURE]}
    assert store.layout().attrs == {"packing": "tokens"}


def test_one_chunk_per_sample_and_zero_padding(tmp_path):
    data = samples()
    write_one(tmp_path / "store", IDS, SHAPES, data)
    array = zarr.open_array(str(tmp_path / "store" / FEATURE), mode="r")
    full = (1, 2, 11, 32)  # largest extent along each axis
    assert array.shape == (3, *full)
    assert array.chunks == (1, *full)
    assert array.nchunks == 3
    # Exactly one chunk object on disk per sample.
    root = tmp_path / "store" / FEATURE
    chunk_files = sorted(p.relative_to(root).as_posix() for p in (root / "c").rglob("*") if p.is_file())
    assert chunk_files == [f"c/{i}/0/0/0/0" for i in range(3)]
    # The padding around each sample is zeros and the sample sits at the origin.
    for i, x in enumerate(data):
        block = np.asarray(array[i])
        region = tuple(slice(0, n) for n in x.shape)
        np.testing.assert_array_equal(block[region], x)
        padding = block.copy()
        padding[region] = 0
        assert not padding.any()


def test_wrong_sample_shape_raises_and_leaves_no_store(tmp_path):
    data = samples()
    data[1] = data[1][:, :, :10]  # declared (1, 1, 11, 32)
    with pytest.raises(
        ValueError, match=r"tensor 'feature' of sample s1 has shape \(1, 1, 10, 32\), declared \(1, 1, 11, 32\)"
    ):
        write_one(tmp_path / "store", IDS, SHAPES, data)
    assert leftovers(tmp_path) == []


def test_too_few_samples_raise_and_leave_no_store(tmp_path):
    with pytest.raises(ValueError, match="2 samples written, 3 declared"):
        write_one(tmp_path / "store", IDS, SHAPES, samples()[:2])
    assert leftovers(tmp_path) == []


def test_too_many_samples_raise_and_leave_no_store(tmp_path):
    with pytest.raises(ValueError, match="more samples than the 3 declared"):
        write_one(tmp_path / "store", IDS, SHAPES, [*samples(), samples()[0]])
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("ids", "shapes"),
    [(IDS[:2], SHAPES), ([], []), (IDS[:2], [(1, 1, 5, 32), (5, 32)])],
    ids=["ids-vs-shapes", "empty", "mixed-rank"],
)
def test_inconsistent_declarations_raise_and_leave_no_store(tmp_path, ids, shapes):
    with pytest.raises(ValueError, match="write_store"):
        write_one(tmp_path / "store", ids, shapes, [np.ones(s, np.float32) for s in shapes])
    assert leftovers(tmp_path) == []


def test_failed_rewrite_keeps_the_previous_store(tmp_path):
    data = samples()
    write_one(tmp_path / "store", IDS, SHAPES, data, attrs={"run": 1})
    with pytest.raises(ValueError):
        write_one(tmp_path / "store", IDS, SHAPES, data[:2], attrs={"run": 2})
    store = FeatureStore(tmp_path / "store")
    assert store.attrs["run"] == 1
    np.testing.assert_array_equal(store.read(2), data[2])
    assert leftovers(tmp_path) == ["store"]


def test_rewrite_replaces_the_previous_store(tmp_path):
    write_one(tmp_path / "store", IDS, SHAPES, samples(seed=0))
    new_shapes = [(1, 1, 3, 4)]
    new = samples(new_shapes, seed=1)
    write_one(tmp_path / "store", ["only"], new_shapes, new)
    store = FeatureStore(tmp_path / "store")
    assert store.sample_ids == ["only"]
    np.testing.assert_array_equal(store.read(0), new[0])
    assert zarr.open_array(str(tmp_path / "store" / FEATURE), mode="r").shape == (1, 1, 1, 3, 4)


def test_named_tensors_of_different_dtype_and_shape(tmp_path):
    """A sample's feature as a set of named tensors, each in its own dtype and shape (e.g. an LLM's key cache in
    bfloat16-as-float16 and a float32 state): each is its own array of the group, read back bit for bit."""
    rng = np.random.default_rng(5)
    keys = [rng.standard_normal((1, 2, n, 8)).astype(np.float16) for n in (3, 6)]
    state = [rng.standard_normal((1, 1, 4, 16)).astype(np.float32) for _ in range(2)]
    tensors = {
        "key": TensorLayout([k.shape for k in keys], "float16", {"packing": "tokens"}),
        "state": TensorLayout([s.shape for s in state], "float32", {"packing": "plane"}),
    }
    samples = ({"key": k, "state": s} for k, s in zip(keys, state, strict=True))
    write_store(tmp_path / "store", ["a", "b"], tensors, samples, attrs={"task": "kv"})
    store = FeatureStore(tmp_path / "store")
    assert store.tensors == ["key", "state"]
    assert store.layout("key").shapes == [(1, 2, 3, 8), (1, 2, 6, 8)] and store.layout("key").dtype == "float16"
    assert store.layout("state").attrs == {"packing": "plane"}
    for i in range(2):
        got = store.sample(i)
        assert sorted(got) == ["key", "state"]
        assert got["key"].dtype == np.float16 and got["state"].dtype == np.float32
        np.testing.assert_array_equal(got["key"].view(np.uint16), keys[i].view(np.uint16))
        np.testing.assert_array_equal(got["state"], state[i])
    assert store.points(1) == 2 * 6 * 8 + 4 * 16
    with pytest.raises(ValueError, match=r"holds tensors \['key', 'state'\]: name the one"):
        store.read(0)
    with pytest.raises(KeyError, match="no tensor 'value'"):
        store.read(0, "value")


def test_a_sample_without_a_declared_tensor_raises_and_leaves_no_store(tmp_path):
    tensors = {name: TensorLayout([(1, 1, 2, 2)], "float32") for name in ("key", "value")}
    with pytest.raises(ValueError, match=r"sample a has tensors \['key'\], declared \['key', 'value'\]"):
        write_store(tmp_path / "store", ["a"], tensors, [{"key": np.ones((1, 1, 2, 2))}])
    assert leftovers(tmp_path) == []


def test_a_store_of_the_one_array_format_is_refused_by_name(tmp_path):
    """Stores written before named tensors (one Zarr array at the root) get a message, not a KeyError."""
    zarr.create_array(str(tmp_path / "old.zarr"), shape=(1, 2), dtype="float32")
    with pytest.raises(ValueError, match=r"old.zarr is a feature store of an older LaMoFC version"):
        FeatureStore(tmp_path / "old.zarr")


def test_feature_store_on_a_folder_that_is_not_a_store(tmp_path):
    folder = tmp_path / "not-a-store"
    folder.mkdir()
    (folder / "data.npy").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match=str(folder)):
        FeatureStore(folder)
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "missing")):
        FeatureStore(tmp_path / "missing")


# --------------------------------------------------------------------------------------------------
# atomic_path
# --------------------------------------------------------------------------------------------------


class Boom(Exception):
    pass


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_atomic_path_leaves_nothing_on_exception(tmp_path, kind):
    target = tmp_path / "sub" / "out"
    with pytest.raises(Boom), atomic_path(target) as tmp:
        assert tmp != target and tmp.parent == target.parent
        if kind == "file":
            tmp.write_text("half")
        else:
            tmp.mkdir()
            (tmp / "part").write_text("half")
        raise Boom
    assert not target.exists()
    assert leftovers(target.parent) == []


def test_atomic_path_exception_keeps_an_existing_output(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(Boom), atomic_path(target) as tmp:
        tmp.write_text("new")
        raise Boom
    assert target.read_text() == "old"
    assert leftovers(tmp_path) == ["out.txt"]


@pytest.mark.parametrize(("old", "new"), [("file", "file"), ("folder", "folder"), ("folder", "file")])
def test_atomic_path_replaces_an_existing_output(tmp_path, old, new):
    target = tmp_path / "out"
    if old == "file":
        target.write_text("old")
    else:
        target.mkdir()
        (target / "stale").write_text("old")
    with atomic_path(target) as tmp:
        # The old output stays in place until the new one is complete.
        assert target.read_text() == "old" if old == "file" else (target / "stale").is_file()
        if new == "file":
            tmp.write_text("new")
        else:
            tmp.mkdir()
            (tmp / "fresh").write_text("new")
    if new == "file":
        assert target.is_file() and target.read_text() == "new"
    else:
        assert sorted(p.name for p in target.iterdir()) == ["fresh"]
    assert leftovers(tmp_path) == ["out"]


def test_atomic_path_that_writes_nothing_raises(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(FileNotFoundError, match="nothing was written"), atomic_path(target):
        pass
    assert leftovers(tmp_path) == []


def test_write_json_round_trip(tmp_path):
    data = {"b": [1, 2.5, "x"], "a": {"nested": None}}
    write_json(tmp_path / "d" / "x.json", data)
    assert read_json(tmp_path / "d" / "x.json") == data
    assert leftovers(tmp_path / "d") == ["x.json"]
