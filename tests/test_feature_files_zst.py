"""LaMoFCBench's released feature files (.zst: zstd-compressed torch.save pickles of nested dicts, lists and tuples
of tensors) are imported into the store with their names, shapes, dtypes and values bit for bit; files holding
anything but tensors, containers, numbers and strings, or that do not fit, are refused naming the file.

Files are written here as the reference writes them (torch.save into a buffer, compressed with zstandard);
expectations are computed by hand with torch and NumPy."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
import zstandard

from lamofc_lib.feature_files import FeatureFileError
from lamofc_lib.lamofcbench_files import import_zst_features
from lamofc_lib.preprocess import pack
from lamofc_lib.store import FeatureStore


class Custom:
    """A class no weights-only load may construct."""

    def __init__(self):
        self.value = 1


def save_zst(path: Path, obj) -> Path:
    """Write `obj` as the reference does: torch.save to bytes, zstd level 3."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    path.write_bytes(zstandard.ZstdCompressor(level=3).compress(buffer.getvalue()))
    return path


def rand(gen: torch.Generator, shape, dtype, scale=3.0) -> torch.Tensor:
    return (torch.randn(shape, generator=gen) * scale).to(dtype)


def as_numpy(t: torch.Tensor) -> np.ndarray:
    return t.float().numpy() if t.dtype == torch.bfloat16 else t.numpy()


def assert_bits_equal(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape
    unsigned = {2: np.uint16, 4: np.uint32, 8: np.uint64}[got.dtype.itemsize]
    np.testing.assert_array_equal(got.view(unsigned), want.view(unsigned))


def qwen_sample(gen: torch.Generator, tokens: int) -> dict:
    """Qwen3's layout: output (1, T, C) and the K/V caches of 5 layers, each (1, heads, T, head size), bf16."""
    return {
        "output": rand(gen, (1, tokens, 64), torch.bfloat16, 50.0),
        "key": [rand(gen, (1, 2, tokens, 8), torch.bfloat16, 20.0) for _ in range(5)],
        "value": [rand(gen, (1, 2, tokens, 8), torch.bfloat16) for _ in range(5)],
    }


def test_qwen_files_keep_names_ragged_shapes_bf16_values_and_kv_frames(tmp_path):
    gen = torch.Generator().manual_seed(0)
    written = {"sample3-layer4-item1": qwen_sample(gen, 5), "sample7-layer4-item1": qwen_sample(gen, 7)}
    for sid, obj in written.items():
        save_zst(tmp_path / f"{sid}.zst", obj)
    ids = list(written)
    import_zst_features(tmp_path, ids, tmp_path / "f.zarr", attrs={"task": "qwen-arc"})
    store = FeatureStore(tmp_path / "f.zarr")
    assert store.sample_ids == ids
    assert store.tensors == [*(f"key.{i}" for i in range(5)), "output", *(f"value.{i}" for i in range(5))]
    assert store.attrs["imported_from"] == str(tmp_path) and store.attrs["task"] == "qwen-arc"
    for i, obj in enumerate(written.values()):
        tokens = obj["output"].shape[1]
        # output (1, T, 64) -> (1, 1, T, 64), tokens: the frame is T x 64
        layout = store.layout("output")
        assert layout.dtype == "bfloat16" and layout.attrs["packing"] == "tokens"
        assert layout.shapes[i] == (1, 1, tokens, 64) and layout.attrs["source_shapes"][i] == [1, tokens, 64]
        out = store.read(i, "output")
        assert_bits_equal(out, obj["output"].float().numpy()[:, None])
        assert_bits_equal(pack(out, "tokens"), obj["output"][0].float().numpy())
        for kind in ("key", "value"):
            for layer, cache in enumerate(obj[kind]):
                name = f"{kind}.{layer}"
                layout = store.layout(name)
                assert layout.dtype == "bfloat16" and layout.shapes[i] == (1, 2, tokens, 8)
                assert layout.attrs["source_shapes"][i] == [1, 2, tokens, 8]
                assert layout.attrs["source_key"] == [kind, layer]
                x = store.read(i, name)
                assert_bits_equal(x, cache.float().numpy())
                # LaMoFCBench's K/V frame: row t = head 0's 8 values of token t, then head 1's
                by_hand = np.array(
                    [[float(cache[0, h, t, d]) for h in range(2) for d in range(8)] for t in range(tokens)],
                    dtype=np.float32,
                )
                frame = pack(x, layout.attrs["packing"])
                assert frame.shape == (tokens, 16)
                assert_bits_equal(frame, by_hand)
    assert store.attrs["file_metadata"] == {}


def test_falconmamba_files_keep_fp32_output_and_fp16_states(tmp_path):
    gen = torch.Generator().manual_seed(1)
    obj = {
        "output": rand(gen, (1, 6, 32), torch.float32),
        "ssm_state": [rand(gen, (1, 24, 16), torch.float16) for _ in range(5)],
        "conv_state": [rand(gen, (1, 24, 4), torch.float16) for _ in range(5)],
    }
    save_zst(tmp_path / "arc-0.zst", obj)
    import_zst_features(tmp_path, ["arc-0"], tmp_path / "f.zarr")
    store = FeatureStore(tmp_path / "f.zarr")
    assert sorted(store.tensors) == sorted(
        ["output", *(f"ssm_state.{i}" for i in range(5)), *(f"conv_state.{i}" for i in range(5))]
    )
    assert store.layout("output").dtype == "float32" and store.layout("output").shapes == [(1, 1, 6, 32)]
    assert_bits_equal(store.read(0, "output"), obj["output"].numpy().reshape(1, 1, 6, 32))
    for kind, width in (("ssm_state", 16), ("conv_state", 4)):
        for layer, state in enumerate(obj[kind]):
            layout = store.layout(f"{kind}.{layer}")
            assert layout.dtype == "float16" and layout.shapes == [(1, 1, 24, width)]
            assert layout.attrs["packing"] == "tokens" and layout.attrs["source_shapes"] == [[1, 24, width]]
            x = store.read(0, f"{kind}.{layer}")
            assert_bits_equal(x, state.numpy().reshape(1, 1, 24, width))
            assert_bits_equal(pack(x, "tokens"), state[0].numpy())  # the reference's 8192 x 16 frame, scaled down


def test_kimi_nested_tuples_are_named_by_their_key_paths_in_natural_order(tmp_path):
    gen = torch.Generator().manual_seed(2)

    def kv():
        return (rand(gen, (1, 2, 4, 8), torch.bfloat16), rand(gen, (1, 2, 4, 8), torch.bfloat16))

    layers = {i: kv() for i in range(4)}
    hidden, last = rand(gen, (1, 4, 24), torch.bfloat16), kv()
    # the file's own order (as in the reference's dump): layers 0, 4, 2, 3, 1
    obj = {"model.layers.0": layers[0], "model.layers.4": (hidden, last)}
    obj |= {f"model.layers.{i}": layers[i] for i in (2, 3, 1)}
    save_zst(tmp_path / "LibriSpeech-test-clean-0.zst", obj)
    import_zst_features(tmp_path, ["LibriSpeech-test-clean-0"], tmp_path / "f.zarr")
    store = FeatureStore(tmp_path / "f.zarr")
    expected = [f"model.layers.{i}.{j}" for i in range(4) for j in (0, 1)]
    expected += ["model.layers.4.0", "model.layers.4.1.0", "model.layers.4.1.1"]
    assert store.tensors == expected
    assert store.layout("model.layers.4.1.0").attrs["source_key"] == ["model.layers.4", 1, 0]
    assert store.layout("model.layers.4.0").shapes == [(1, 1, 4, 24)]
    assert_bits_equal(store.read(0, "model.layers.4.0"), hidden.float().numpy()[:, None])
    assert_bits_equal(store.read(0, "model.layers.4.1.1"), last[1].float().numpy())
    for i in range(4):
        for j in (0, 1):
            assert_bits_equal(store.read(0, f"model.layers.{i}.{j}"), layers[i][j].float().numpy())


def test_the_coded_output_wrapper_is_read_through_features_and_numbers_become_metadata(tmp_path):
    gen = torch.Generator().manual_seed(3)
    pooled, prompt = rand(gen, (12,), torch.float16), rand(gen, (7, 12), torch.float16)
    moments = rand(gen, (8, 4, 4), torch.float16)
    obj = {
        "features": {
            "text_encoder-item0": {"clip_pooled_prompt_embeds": pooled, "clip_prompt_embeds": prompt},
            "vae.encoder": {"vae.encoder_f0": moments},
            "layer_id": 4,
        },
        "metadata": {"bpfp": 0.25, "arch": "hyperprior", "shape": (2, 3), "mse": float("nan"), "note": None},
    }
    save_zst(tmp_path / "img0.zst", obj)
    import_zst_features(tmp_path, ["img0"], tmp_path / "f.zarr")
    store = FeatureStore(tmp_path / "f.zarr")
    assert store.tensors == [
        "text_encoder-item0.clip_pooled_prompt_embeds",
        "text_encoder-item0.clip_prompt_embeds",
        "vae.encoder.vae.encoder_f0",
    ]
    layout = store.layout("text_encoder-item0.clip_pooled_prompt_embeds")  # (C,) -> 1 x 1 x 1 x C, plane
    assert layout.shapes == [(1, 1, 1, 12)] and layout.attrs["packing"] == "plane"
    assert layout.attrs["source_shapes"] == [[12]] and layout.dtype == "float16"
    assert_bits_equal(
        pack(store.read(0, "text_encoder-item0.clip_pooled_prompt_embeds"), "plane"), pooled[None].numpy()
    )
    layout = store.layout("text_encoder-item0.clip_prompt_embeds")  # (R, C) -> 1 x 1 x R x C, plane
    assert layout.shapes == [(1, 1, 7, 12)] and layout.attrs["packing"] == "plane"
    assert_bits_equal(pack(store.read(0, "text_encoder-item0.clip_prompt_embeds"), "plane"), prompt.numpy())
    layout = store.layout("vae.encoder.vae.encoder_f0")  # (B, T, C) -> B x 1 x T x C, tokens
    assert layout.shapes == [(8, 1, 4, 4)] and layout.attrs["packing"] == "tokens"
    assert_bits_equal(store.read(0, "vae.encoder.vae.encoder_f0"), moments.numpy()[:, None])
    assert store.attrs["file_metadata"] == {
        "img0": {
            "layer_id": 4,
            "metadata.bpfp": 0.25,
            "metadata.arch": "hyperprior",
            "metadata.shape.0": 2,
            "metadata.shape.1": 3,
            "metadata.mse": "nan",
            "metadata.note": None,
        }
    }


def _good(gen, tokens=3):
    return {"output": rand(gen, (1, tokens, 8), torch.bfloat16), "key": [rand(gen, (1, 2, tokens, 4), torch.bfloat16)]}


def _refusals(gen):
    """(name, files to write: sample id -> object or raw bytes, sample ids to import, words the error names)."""
    good = _good(gen)
    nan = _good(gen)
    nan["key"][0][0, 1, 2, 3] = float("nan")
    fp16 = _good(gen)
    fp16["output"] = fp16["output"].half()
    raw = io.BytesIO()
    torch.save(_good(gen), raw)
    return [
        ("custom class", {"a": {**good, "extra": Custom()}}, ["a"], ["weights-only", "Custom"]),
        ("int tensor", {"a": {**good, "ids": torch.arange(5)}}, ["a"], ["'ids'", "torch.int64"]),
        ("a set", {"a": {**good, "extra": {1, 2}}}, ["a"], ["set", "key extra"]),
        ("not zstd", {"a": raw.getvalue()}, ["a"], ["zstd"]),
        ("not a torch file", {"a": zstandard.ZstdCompressor().compress(b"hello")}, ["a"], ["torch.save"]),
        ("missing file", {"a": good}, ["a", "b"], ["does not exist", "sample b"]),
        ("other names", {"a": good, "b": {"output": good["output"]}}, ["a", "b"], ["lacks ['key.0']"]),
        ("other dtype", {"a": good, "b": fp16}, ["a", "b"], ["'output' in float16, not bfloat16"]),
        ("NaN", {"a": good, "b": nan}, ["a", "b"], ["'key.0'", "NaN"]),
        ("one name twice", {"a": {"k.0": good["output"], "k": [good["output"]]}}, ["a"], ["name 'k.0'"]),
        ("slash in a key", {"a": {"a/b": good["output"]}}, ["a"], ["'a/b'"]),
        ("rank 5", {"a": {"x": torch.zeros(1, 1, 1, 1, 2)}}, ["a"], ["'x'", "(1, 1, 1, 1, 2)"]),
        ("no tensors", {"a": {"n": 1}}, ["a"], ["no tensors"]),
    ]


REFUSALS = _refusals(torch.Generator().manual_seed(4))


@pytest.mark.parametrize(("name", "files", "ids", "words"), REFUSALS, ids=[case[0] for case in REFUSALS])
def test_a_file_that_is_unsafe_or_does_not_fit_is_refused_naming_it(tmp_path, name, files, ids, words):
    for sid, obj in files.items():
        path = tmp_path / f"{sid}.zst"
        if isinstance(obj, bytes):
            path.write_bytes(obj)
        else:
            save_zst(path, obj)
    with pytest.raises(FeatureFileError) as err:
        import_zst_features(tmp_path, ids, tmp_path / "f.zarr")
    message = str(err.value)
    bad = tmp_path / f"{ids[-1]}.zst"  # the last sample's file is the one at fault
    assert str(bad) in message, (name, message)
    assert all(w in message for w in words), (name, message)
    assert not (tmp_path / "f.zarr").exists()
