"""A sample's feature as a set of named tensors, each with its own dtype, shape, truncation, quantizer and
packing, through the store, pre-processing, the real VVenC and back (the LaMoFCBench case: key/value caches,
states and several layers per sample; today's tasks are the one-tensor case).

The synthetic task splits a small Llama-architecture model (random weights) after its first layer and keeps
three tensors per prompt: the first layer's key cache, stored in float16 as a deployment keeps its cache, its
value cache in bfloat16 (as Qwen3's and Kimi-Audio's caches), and the float32 hidden state there."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from lamofc_lib.bitstreams import rate, read_sidecars
from lamofc_lib.codecs import get_codec
from lamofc_lib.coding import decode_point, encode_shard, quantization_measures
from lamofc_lib.distortion import feature_errors
from lamofc_lib.preprocess import preprocess_store
from lamofc_lib.store import FeatureStore, TensorLayout
from lamofc_lib.tasks.base import Layout, Task, TensorExtraction

PROMPT_TOKENS = [5, 11]  # two samples, ragged along the token axis
HEADS, HEAD_SIZE, HIDDEN = 2, 16, 64
TRUNCATION = {"key": [-1, 1], "value": [-0.5, 0.5], "hidden": {"range": [-0.25, 0.25], "quantizer": "round"}}
POINT = "27"


class KeyCacheTask(Task):
    """Features: the key cache of layer 0 (float16, tokens packing), its value cache (bfloat16, tokens packing)
    and the hidden state after it (float32, one plane)."""

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
            "value": TensorLayout(
                [(1, HEADS, t.shape[1], HEAD_SIZE) for t in tokens], "bfloat16", {"packing": "tokens"}
            ),
            "hidden": TensorLayout([(1, 1, t.shape[1], HIDDEN) for t in tokens], "float32", {"packing": "plane"}),
        }

        def samples():
            for ids in tokens:
                with torch.no_grad():
                    out = self.model(ids, use_cache=True, output_hidden_states=True)
                cache = out.past_key_values.layers[split]
                yield {
                    "key": cache.keys.numpy().astype(np.float16),
                    "value": cache.values.to(torch.bfloat16).float().numpy(),
                    "hidden": out.hidden_states[split + 1][None].numpy(),
                }

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


def _bfloat16(x: np.ndarray) -> np.ndarray:
    """float32 values rounded to bfloat16 by torch, as float32."""
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(torch.bfloat16).float().numpy()


def _dequantized(q: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """The reference's dequantization, written out: q / ((2^10 - 1) / (hi - lo)) + lo in float32."""
    return q.astype(np.float32) / np.float32(1023 / (hi - lo)) + np.float32(lo)


def test_each_tensor_is_stored_in_the_dtype_the_task_gave_it(coded):
    store = FeatureStore(coded / "features.zarr")
    assert store.tensors == ["key", "value", "hidden"]
    assert [store.layout(n).dtype for n in store.tensors] == ["float16", "bfloat16", "float32"]
    assert store.layout("key").shapes == [(1, HEADS, n, HEAD_SIZE) for n in PROMPT_TOKENS]
    assert store.layout("hidden").shapes == [(1, 1, n, HIDDEN) for n in PROMPT_TOKENS]
    assert store.points(1) == 2 * HEADS * 11 * HEAD_SIZE + 11 * HIDDEN
    value = store.read(1, "value")  # bfloat16 values, read as float32, exactly
    assert value.dtype == np.float32 and np.array_equal(_bfloat16(value), value) and np.ptp(value) > 0


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


def test_per_tensor_bytes_pooled_bpfp_and_ebpfp(coded):
    """BPFP: all the sample's bitstream bits over all its points; EBPFP (LaMoFCBench): each tensor's bits
    times 32 over its dtype's bits (float16 and bfloat16: 16), over all points; each tensor's own BPFP."""
    folder = coded / "bits" / "000"
    rows = rate([folder])
    for i, n in enumerate(PROMPT_TOKENS):
        bits = {name: 8 * (folder / f"{i:05d}.{name}.bin").stat().st_size for name in ("key", "value", "hidden")}
        points = {"key": HEADS * n * HEAD_SIZE, "value": HEADS * n * HEAD_SIZE, "hidden": n * HIDDEN}
        for name in bits:
            assert rows[i][f"bits.{name}"] == bits[name] > 0
            assert rows[i][f"bpfp.{name}"] == pytest.approx(bits[name] / points[name], rel=1e-12)
        assert rows[i]["bits"] == sum(bits.values())
        assert rows[i]["feature_points"] == sum(points.values())
        assert rows[i]["bpfp"] == pytest.approx(sum(bits.values()) / sum(points.values()), rel=1e-12)
        equivalent = 2 * bits["key"] + 2 * bits["value"] + bits["hidden"]
        assert rows[i]["ebpfp"] == pytest.approx(equivalent / sum(points.values()), rel=1e-12)
    (_, record), _ = read_sidecars([folder])
    assert [t.name for t in record.tensors] == ["key", "value", "hidden"]
    assert [t.quantizer for t in record.tensors] == ["floor", "floor", "round"]
    assert [t.feature_dtype for t in record.tensors] == ["float16", "bfloat16", "float32"]


def test_reconstruction_has_each_tensor_back_in_its_dtype_with_a_pooled_mse(coded):
    original = FeatureStore(coded / "features.zarr")
    rec = FeatureStore(coded / "reconstructed.zarr")
    assert rec.tensors == ["key", "value", "hidden"]
    assert [rec.layout(n).dtype for n in rec.tensors] == ["float16", "bfloat16", "float32"]
    expected = []
    for i in range(2):
        squared, points = 0.0, 0
        for name, (lo, hi) in (("key", (-1, 1)), ("value", (-0.5, 0.5)), ("hidden", (-0.25, 0.25))):
            x, y = original.read(i, name).astype(np.float64), rec.read(i, name).astype(np.float64)
            assert y.shape == x.shape
            # QP 27: the RMS error is a small part of the truncation range
            assert math.sqrt(np.mean((y - np.clip(x, lo, hi)) ** 2)) < 0.03 * (hi - lo)  # about 0.012 measured
            squared += float(np.sum((y - x) ** 2))
            points += x.size
        expected.append(squared / points)
        value = rec.read(i, "value")
        assert np.array_equal(_bfloat16(value), value)  # decoded values are bfloat16 values
    np.testing.assert_allclose(feature_errors(original, rec)["mse"], expected, rtol=1e-12)


def test_per_tensor_total_and_quantization_mse(coded):
    """Per tensor and pooled: the total MSE against the reconstruction and the quantization MSE against the
    tensor's own codes dequantized by hand (no codec), cast back to its dtype (bfloat16 by torch)."""
    original, rec = FeatureStore(coded / "features.zarr"), FeatureStore(coded / "reconstructed.zarr")
    frames = FeatureStore(coded / "frames.zarr")
    sidecars = [record for _, record in read_sidecars([coded / "bits" / "000"])]
    errors = pd.concat([feature_errors(original, rec), quantization_measures(original, sidecars)], axis=1)
    cast = {"key": lambda v: v.astype(np.float16), "value": _bfloat16, "hidden": lambda v: v}
    for i, n in enumerate(PROMPT_TOKENS):
        squared, squared_q = 0.0, 0.0
        for name, (lo, hi) in (("key", (-1, 1)), ("value", (-0.5, 0.5)), ("hidden", (-0.25, 0.25))):
            x = original.read(i, name).astype(np.float64)
            frame = frames.read(i, name)
            codes = frame[None, None] if name == "hidden" else frame.reshape(n, HEADS, HEAD_SIZE).transpose(1, 0, 2)
            quantized = cast[name](_dequantized(codes, lo, hi)).astype(np.float64).reshape(x.shape)
            sq, sq_q = np.sum((x - rec.read(i, name)) ** 2), np.sum((x - quantized) ** 2)
            assert errors[f"mse.{name}"][i] == pytest.approx(sq / x.size, rel=1e-9)
            assert errors[f"quant_mse.{name}"][i] == pytest.approx(sq_q / x.size, rel=1e-6)
            squared, squared_q = squared + sq, squared_q + sq_q
        assert errors["mse"][i] == pytest.approx(squared / original.points(i), rel=1e-9)
        assert errors["quant_mse"][i] == pytest.approx(squared_q / original.points(i), rel=1e-6)
        assert 0 < errors["quant_mse"][i] < errors["mse"][i]


def test_the_entropy_columns_are_those_of_the_stored_codes_pooled_over_points(coded):
    """Per tensor, the zero-order entropy of its 10-bit codes as the frames store holds them (-sum p log2 p over
    their histogram, by hand); pooled, the tensors' entropies weighted by their points, as BPFP pools bits."""
    original, frames = FeatureStore(coded / "features.zarr"), FeatureStore(coded / "frames.zarr")
    measures = quantization_measures(original, [record for _, record in read_sidecars([coded / "bits" / "000"])])
    for i in range(len(PROMPT_TOKENS)):
        bits = 0.0
        for name in ("key", "value", "hidden"):
            _, counts = np.unique(frames.read(i, name), return_counts=True)
            p = counts / counts.sum()
            expected = float(-(p * np.log2(p)).sum())
            assert measures[f"entropy.{name}"][i] == pytest.approx(expected, rel=1e-12) and 0 < expected <= 10
            bits += expected * counts.sum()
        assert measures["entropy"][i] == pytest.approx(bits / original.points(i), rel=1e-12)
