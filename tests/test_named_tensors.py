"""A sample's feature as a set of named tensors, each with its own dtype, shape, truncation, quantizer and
packing, through the store, pre-processing, the real VVenC and back (the LaMoFCBench case: key/value caches,
states and several layers per sample; today's tasks are the one-tensor case).

The synthetic task splits a small Llama-architecture model (random weights) after its first layer and keeps
two tensors per prompt: the first layer's key cache, stored in float16 as a deployment keeps its cache, and
the float32 hidden state there."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from lamofc_lib.bitstreams import rate, read_sidecars
from lamofc_lib.codecs import get_codec
from lamofc_lib.coding import decode_point, encode_shard
from lamofc_lib.preprocess import preprocess_store
from lamofc_lib.scoring import store_mse
from lamofc_lib.store import FeatureStore, TensorLayout
from lamofc_lib.tasks.base import Layout, Task, TensorExtraction

PROMPT_TOKENS = [5, 11]  # two samples, ragged along the token axis
HEADS, HEAD_SIZE, HIDDEN = 2, 16, 64
TRUNCATION = {"key": [-1, 1], "hidden": {"range": [-0.25, 0.25], "quantizer": "round"}}
POINT = "27"


class KeyCacheTask(Task):
    """Features: the key cache of layer 0 (float16, tokens packing) and the hidden state after it (float32,
    one plane)."""

    name = "kv"

    def __init__(self):
        super().__init__()
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        config = LlamaConfig(
            vocab_size=100,
            hidden_size=HIDDEN,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=HEADS,
        )
        self.model = LlamaForCausalLM(config).eval()

    def write_head(self, model, split, head, head_out):
        raise NotImplementedError

    def layout(self, manifest, model, split) -> Layout:
        raise NotImplementedError

    def features(self, manifest: pd.DataFrame, model, split) -> TensorExtraction:
        tokens = [torch.arange(n)[None] * 7 % 100 for n in manifest["tokens"]]
        tensors = {
            "key": TensorLayout([(1, HEADS, t.shape[1], HEAD_SIZE) for t in tokens], "float16", {"packing": "tokens"}),
            "hidden": TensorLayout([(1, 1, t.shape[1], HIDDEN) for t in tokens], "float32", {"packing": "plane"}),
        }

        def samples():
            for ids in tokens:
                with torch.no_grad():
                    out = self.model(ids, use_cache=True, output_hidden_states=True)
                key = out.past_key_values.layers[split].keys
                yield {"key": key.numpy().astype(np.float16), "hidden": out.hidden_states[split + 1][None].numpy()}

        return TensorExtraction(tensors, samples(), {"stage": "features", "split": split})


@pytest.fixture(scope="module")
def coded(tmp_path_factory):
    """features -> frames -> VVenC bitstreams (one shard) -> reconstructed features."""
    root = tmp_path_factory.mktemp("kv")
    manifest = pd.DataFrame({"sample_id": ["p0", "p1"], "tokens": PROMPT_TOKENS})
    KeyCacheTask().extract(manifest, {}, 0, root / "features.zarr")
    codec = get_codec("vvenc", {"preset": "faster", "bit_depth": 10})
    preprocess_store(root / "features.zarr", root / "frames.zarr", "kv", TRUNCATION, codec.input_kind, 10)
    encode_shard(root / "frames.zarr", root / "bits" / "000", codec, POINT, [0, 1])
    decode_point([root / "bits" / "000"], root / "reconstructed.zarr", codec)
    return root


def test_each_tensor_is_stored_in_the_dtype_the_task_gave_it(coded):
    store = FeatureStore(coded / "features.zarr")
    assert store.tensors == ["key", "hidden"]
    assert store.layout("key").dtype == "float16" and store.layout("hidden").dtype == "float32"
    assert store.layout("key").shapes == [(1, HEADS, n, HEAD_SIZE) for n in PROMPT_TOKENS]
    assert store.layout("hidden").shapes == [(1, 1, n, HIDDEN) for n in PROMPT_TOKENS]
    assert store.points(1) == HEADS * 11 * HEAD_SIZE + 11 * HIDDEN


def test_frames_use_each_tensors_truncation_quantizer_and_packing(coded):
    """Frames computed by hand: key with the floor quantizer in float16 arithmetic, heads side by side; the
    hidden state rounded to nearest, as its one plane."""
    features, frames = FeatureStore(coded / "features.zarr"), FeatureStore(coded / "frames.zarr")
    for i, n in enumerate(PROMPT_TOKENS):
        key = features.read(i, "key")
        scale = np.float16(1023 / 2)
        codes = ((np.clip(key, np.float16(-1), np.float16(1)) + np.float16(1)) * scale).astype(np.uint16)
        expected_key = np.concatenate([codes[0, h] for h in range(HEADS)], axis=1)  # n x (heads * head size)
        np.testing.assert_array_equal(frames.read(i, "key"), expected_key)
        hidden = features.read(i, "hidden")[0, 0].astype(np.float64)
        expected_hidden = np.floor((np.clip(hidden, -0.25, 0.25) + 0.25) * 1023 / 0.5 + 0.5)
        got = frames.read(i, "hidden").astype(np.int64)
        assert got.shape == (n, HIDDEN)
        # float32 arithmetic against float64: a value exactly at a rounding edge may land one code off
        assert np.abs(got - expected_hidden).max() <= 1 and np.mean(got != expected_hidden) < 0.01


def test_per_tensor_bytes_and_pooled_bpfp(coded):
    folder = coded / "bits" / "000"
    rows = rate([folder])
    for i, n in enumerate(PROMPT_TOKENS):
        key_bits = 8 * (folder / f"{i:05d}.key.bin").stat().st_size
        hidden_bits = 8 * (folder / f"{i:05d}.hidden.bin").stat().st_size
        points = HEADS * n * HEAD_SIZE + n * HIDDEN
        assert rows[i]["bits.key"] == key_bits > 0 and rows[i]["bits.hidden"] == hidden_bits > 0
        assert rows[i]["bits"] == key_bits + hidden_bits
        assert rows[i]["feature_points"] == points
        assert rows[i]["bpfp"] == (key_bits + hidden_bits) / points
    (_, record), _ = read_sidecars([folder])
    assert [t.name for t in record.tensors] == ["key", "hidden"]
    assert [t.quantizer for t in record.tensors] == ["floor", "round"]


def test_reconstruction_has_each_tensor_back_in_its_dtype_with_a_pooled_mse(coded):
    original = FeatureStore(coded / "features.zarr")
    rec = FeatureStore(coded / "reconstructed.zarr")
    assert rec.tensors == ["key", "hidden"]
    assert rec.layout("key").dtype == "float16" and rec.layout("hidden").dtype == "float32"
    expected = []
    for i in range(2):
        squared, points = 0.0, 0
        for name, (lo, hi) in (("key", (-1, 1)), ("hidden", (-0.25, 0.25))):
            x, y = original.read(i, name).astype(np.float64), rec.read(i, name).astype(np.float64)
            assert y.shape == x.shape
            # QP 27: the RMS error is a small part of the truncation range
            assert math.sqrt(np.mean((y - np.clip(x, lo, hi)) ** 2)) < 0.03 * (hi - lo)  # about 0.012 measured
            squared += float(np.sum((y - x) ** 2))
            points += x.size
        expected.append(squared / points)
    np.testing.assert_allclose(store_mse(original, rec), expected, rtol=1e-12)
