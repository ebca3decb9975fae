"""Tests for lamofc_lib.coding: pre-processing, encoding into shards, decoding, rate and feature MSE, with the
real VVenC codec."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from store_helpers import write_one

from lamofc_lib.bitstreams import rate, read_sidecars
from lamofc_lib.codecs import CodecError, get_codec
from lamofc_lib.coding import code_shard, decode_point, encode_shard
from lamofc_lib.distortion import feature_errors
from lamofc_lib.preprocess import TensorSpec, frame_shape, from_frame, pack, preprocess_store, quantize, to_frame
from lamofc_lib.store import FeatureStore

SETTINGS = {"preset": "faster", "bit_depth": 10, "samples_per_job": 10, "truncation": "vvc"}
POINT = "22"
# cls-like DINOv2 features (equal shapes) and csr-like Llama features (ragged token counts).
CASES = {
    "cls": {"shapes": [(1, 1, 17, 24)] * 3, "truncation": [-20, 20], "packing": "tokens"},
    "csr": {"shapes": [(1, 1, 5, 32), (1, 1, 13, 32), (1, 1, 9, 32)], "truncation": [-5, 5], "packing": "plane"},
}
SIDECAR_FIELDS = {"sample_index", "sample_id", "task", "codec", "codec_version", "point", "input_kind", "bit_depth"}
TENSOR_FIELDS = {"name", "bitstream", "bytes", "sha256", "feature_shape", "feature_dtype", "feature_points"}
TENSOR_FIELDS |= {"frame_shape", "packing", "truncation", "quantizer", "decoded_sha256"}  # None: VVC decodes exactly
TENSOR_FIELDS |= {"centres"}  # None: the uniform quantizer has none


def make_features(shapes, amplitude: float, seed: int = 0) -> list[np.ndarray]:
    """Smooth float32 features on a grid of 1/8, so perturbations of them are exact in float32."""
    rng = np.random.default_rng(seed)
    out = []
    for i, (n, c, h, w) in enumerate(shapes):
        y, x = np.mgrid[0:h, 0:w]
        base = amplitude * np.sin(x / 5.0 + i) * np.cos(y / 4.0) + rng.normal(0, 0.05 * amplitude, (h, w))
        out.append((np.round(np.broadcast_to(base, (n, c, h, w)) * 8) / 8).astype(np.float32))
    return out


def write_features(path: Path, task: str, seed: int = 0) -> list[np.ndarray]:
    case = CASES[task]
    data = make_features(case["shapes"], amplitude=0.4 * case["truncation"][1], seed=seed)
    ids = [f"{task}-{i}" for i in range(3)]
    write_one(path, ids, case["shapes"], data, attrs={"stage": "features"}, packing=case["packing"])
    return data


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir())


@pytest.fixture(scope="module")
def codec():
    return get_codec("vvenc", SETTINGS)


@pytest.fixture(scope="module", params=sorted(CASES))
def pipeline(request, codec, tmp_path_factory):
    """features -> frames -> two shards ([0, 1] and [2]) -> reconstructed features, for one task."""
    task = request.param
    root = tmp_path_factory.mktemp(task)
    data = write_features(root / "features", task)
    truncation = CASES[task]["truncation"]
    preprocess_store(root / "features", root / "frames", task, truncation, codec.input_kind, codec.bit_depth)
    records = encode_shard(root / "frames", root / "bits" / "000", codec, POINT, [0, 1])
    records += encode_shard(root / "frames", root / "bits" / "001", codec, POINT, range(2, 3))
    shards = [root / "bits" / "000", root / "bits" / "001"]
    timings = decode_point(shards, root / "reconstructed", codec)
    return {
        "task": task,
        "root": root,
        "data": data,
        "truncation": truncation,
        "records": records,
        "shards": shards,
        "timings": timings,
    }


def bitstreams(p) -> list[Path]:
    return [
        p["shards"][0] / "00000.feature.bin",
        p["shards"][0] / "00001.feature.bin",
        p["shards"][1] / "00002.feature.bin",
    ]


def spec(p) -> TensorSpec:
    return TensorSpec(CASES[p["task"]]["packing"], p["truncation"])


def copy_shards(p, dest: Path) -> list[Path]:
    return [Path(shutil.copytree(s, dest / s.name)) for s in p["shards"]]


# --------------------------------------------------------------------------------------------------
# Pre-processing
# --------------------------------------------------------------------------------------------------


def test_frames_are_the_packed_quantized_features(pipeline):
    p = pipeline
    frames = FeatureStore(p["root"] / "frames")
    assert frames.attrs["input_kind"] == "quantized"
    assert frames.attrs["bit_depth"] == 10
    assert frames.layout().attrs["feature_shapes"] == [list(s) for s in CASES[p["task"]]["shapes"]]
    packing = CASES[p["task"]]["packing"]
    lo, hi = p["truncation"]
    for i, x in enumerate(p["data"]):
        frame = frames.read(i)
        assert frame.dtype == np.uint16
        assert frame.shape == frame_shape(packing, x.shape)
        np.testing.assert_array_equal(frame, pack(quantize(x, lo, hi, bit_depth=10), packing))
        # to_frame / from_frame invert each other up to the quantizer's step.
        back = from_frame(frame, spec(p), x.shape, "quantized", 10)
        assert back.shape == x.shape
        assert np.abs(back - x).max() <= (hi - lo) / 1023 * (1 + 1e-5)
        np.testing.assert_array_equal(to_frame(x, spec(p), "quantized", 10), frame)


# --------------------------------------------------------------------------------------------------
# Encoding: shards and sidecars
# --------------------------------------------------------------------------------------------------


def test_shard_folders_hold_bitstreams_and_sidecars_only(pipeline):
    first, second = pipeline["shards"]
    assert leftovers(first) == ["00000.feature.bin", "00000.json", "00001.feature.bin", "00001.json"]
    assert leftovers(second) == ["00002.feature.bin", "00002.json"]
    assert leftovers(first.parent) == ["000", "001"]  # no partial folders beside them


def test_encoder_output_goes_to_the_job_log(pipeline, codec, tmp_path, caplog):
    with caplog.at_level("INFO", logger="lamofc_lib.coding"):
        encode_shard(pipeline["root"] / "frames", tmp_path / "000", codec, POINT, [0])
    assert "libvvenc version" in caplog.text


def test_sidecars_hold_what_decoding_needs(pipeline, codec):
    p = pipeline
    shapes = CASES[p["task"]]["shapes"]
    for i, bitstream in enumerate(bitstreams(p)):
        sidecar = json.loads(bitstream.with_name(f"{i:05d}.json").read_text())
        assert set(sidecar) >= SIDECAR_FIELDS | {"tensors"}
        (tensor,) = sidecar["tensors"]
        assert tensor["decoded_sha256"] is None and sidecar["threads"] is None  # VVC decodes exactly
        assert set(tensor) == TENSOR_FIELDS
        assert sidecar["sample_index"] == i
        assert sidecar["sample_id"] == f"{p['task']}-{i}"
        assert tensor["name"] == "feature"
        assert tensor["feature_shape"] == list(shapes[i])
        assert tensor["feature_dtype"] == "float32"
        assert tensor["frame_shape"] == list(frame_shape(CASES[p["task"]]["packing"], shapes[i]))
        assert tensor["truncation"] == p["truncation"]
        assert tensor["quantizer"] == "floor"
        assert sidecar["bit_depth"] == 10
        assert sidecar["input_kind"] == "quantized"
        assert tensor["packing"] == CASES[p["task"]]["packing"]
        assert sidecar["task"] == p["task"]
        assert sidecar["codec"] == "vvenc"
        assert sidecar["point"] == POINT
        assert sidecar["codec_version"] == codec.version()
        assert sidecar["codec_version"].startswith("VVenC ")
        assert tensor["bitstream"] == bitstream.name
        assert tensor["bytes"] == bitstream.stat().st_size > 0
        assert tensor["sha256"] == hashlib.sha256(bitstream.read_bytes()).hexdigest()
        assert tensor["feature_points"] == int(np.prod(shapes[i]))
    assert [r.sample_index for r in p["records"]] == [0, 1, 2]


def test_read_sidecars_orders_the_samples_of_all_shards(pipeline):
    items = read_sidecars(list(reversed(pipeline["shards"])))
    assert [folder / r.tensors[0].bitstream for folder, r in items] == bitstreams(pipeline)
    assert [r.sample_index for _, r in items] == [0, 1, 2]
    # A single folder may be given as a path.
    assert [r.sample_index for _, r in read_sidecars(pipeline["shards"][0])] == [0, 1]


def test_read_sidecars_raises_when_a_sample_is_missing(pipeline, tmp_path):
    # Samples 0 and 1 missing: only the second shard.
    with pytest.raises(CodecError, match="do not cover samples"):
        read_sidecars([pipeline["shards"][1]])
    # A sample coded twice.
    with pytest.raises(CodecError, match="do not cover samples"):
        read_sidecars([pipeline["shards"][0], pipeline["shards"][0], pipeline["shards"][1]])
    # A sidecar whose bitstream is gone.
    first, second = copy_shards(pipeline, tmp_path)
    (first / "00001.feature.bin").unlink()
    with pytest.raises(CodecError, match=re.escape(str(first / "00001.feature.bin"))):
        read_sidecars([first, second])
    # A bitstream whose sidecar is gone: sample 1 is missing.
    (first / "00001.json").unlink()
    with pytest.raises(CodecError, match="do not cover samples"):
        read_sidecars([first, second])


def test_encode_shard_rejects_an_empty_bitstream_from_any_codec(pipeline, codec, tmp_path):
    # A tool that exits 0 without output: the check lives in encode_shard, not in each codec.
    class Silent(type(codec)):
        name = "silent"

        def encode(self, frame, point, bitstream, workdir):
            Path(bitstream).write_bytes(b"")

    silent = Silent(codec.settings)
    with pytest.raises(CodecError, match="silent exited 0 but wrote no bitstream"):
        encode_shard(pipeline["root"] / "frames", tmp_path / "bits" / "000", silent, POINT, [0])
    assert leftovers(tmp_path / "bits") == []


def test_encode_shard_rejects_frames_of_another_input_kind(pipeline, codec, tmp_path):
    p = pipeline
    preprocess_store(p["root"] / "features", tmp_path / "frames", p["task"], p["truncation"], "normalized", 10)
    assert FeatureStore(tmp_path / "frames").read(0).dtype == np.float32
    with pytest.raises(ValueError, match="prepared as 'normalized'.*takes 'quantized'"):
        encode_shard(tmp_path / "frames", tmp_path / "bits" / "000", codec, POINT, [0, 1])
    assert not (tmp_path / "bits").exists() or leftovers(tmp_path / "bits") == []


def test_encode_shard_leaves_no_partial_folder_when_the_codec_raises(codec, tmp_path):
    # Quantized at 12 bits: sample 0 stays below 1024 and is coded, sample 1 does not fit VVenC's 10 bits.
    lo, hi = -20, 20
    shapes = [(1, 1, 17, 24)] * 2
    data = [np.full(shapes[0], -18.0, np.float32), np.full(shapes[1], 5.0, np.float32)]
    write_one(tmp_path / "features", ["a", "b"], shapes, data)
    preprocess_store(tmp_path / "features", tmp_path / "frames", "cls", [lo, hi], "quantized", 12)
    frames = FeatureStore(tmp_path / "frames")
    assert frames.read(0).max() < 1024 <= frames.read(1).min()
    out = tmp_path / "bits" / "000"
    with pytest.raises(ValueError, match="above 10 bits"):
        encode_shard(tmp_path / "frames", out, codec, POINT, [0, 1])
    assert leftovers(tmp_path / "bits") == []
    # The same shard without the offending sample is written completely.
    encode_shard(tmp_path / "frames", out, codec, POINT, [0])
    assert leftovers(out) == ["00000.feature.bin", "00000.json"]


def test_a_code_job_encodes_decodes_and_times_its_shard(pipeline, codec, tmp_path):
    """code_shard (rule code): the shard's bitstreams are those encode_shard writes, its reconstruction the
    post-processed decoding of them (as decode_point gives), and each sidecar holds both timings."""
    p = pipeline
    bits, rec = tmp_path / "bitstreams" / "001", tmp_path / "reconstructed" / "001.zarr"
    records = code_shard(p["root"] / "frames", bits, rec, codec, POINT, range(1, 3))
    assert [r.sample_index for r in records] == [1, 2]
    assert leftovers(bits) == ["00001.feature.bin", "00001.json", "00002.feature.bin", "00002.json"]
    # VVC coding is exact: the same bytes as the pipeline's encodings of these samples
    assert (bits / "00001.feature.bin").read_bytes() == bitstreams(p)[1].read_bytes()
    store = FeatureStore(rec)
    assert store.sample_ids == FeatureStore(p["root"] / "features").sample_ids[1:]
    whole = FeatureStore(p["root"] / "reconstructed")
    for k, i in enumerate((1, 2)):
        np.testing.assert_array_equal(store.read(k), whole.read(i))
    for i in (1, 2):
        sidecar = json.loads((bits / f"{i:05d}.json").read_text())
        assert sidecar["encode_seconds"] > 0 and sidecar["decode_seconds"] > 0


def test_a_bitstream_altered_after_coding_is_refused_where_its_rate_is_read(pipeline, tmp_path):
    """Its reconstruction is no longer its decoding: scoring (which reads the rate) names the file."""
    shard = tmp_path / "000"
    shutil.copytree(pipeline["shards"][0], shard)
    bitstream = shard / "00001.feature.bin"
    bitstream.write_bytes(bitstream.read_bytes()[:-1])
    with pytest.raises(CodecError, match=r"00001.feature.bin has \d+ bytes, its sidecar says \d+"):
        rate([shard])


# --------------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------------


def test_reconstruction_has_the_original_samples_and_shapes(pipeline, codec):
    p = pipeline
    original = FeatureStore(p["root"] / "features")
    rec = FeatureStore(p["root"] / "reconstructed")
    assert rec.sample_ids == original.sample_ids
    assert rec.layout().shapes == original.layout().shapes == CASES[p["task"]]["shapes"]
    assert rec.attrs["stage"] == "reconstructed"
    assert rec.attrs["codec"] == "vvenc"
    assert rec.attrs["point"] == POINT
    assert rec.attrs["codec_version"] == codec.version()
    assert [t["sample_index"] for t in p["timings"]] == [0, 1, 2]
    assert all(t["decode_seconds"] > 0 for t in p["timings"])
    lo, hi = p["truncation"]
    step = (hi - lo) / 1023
    for i, x in enumerate(p["data"]):
        y = rec.read(i)
        assert y.shape == x.shape
        assert y.dtype == np.float32
        # Each sample is the post-processed decoding of its own bitstream ...
        frame = codec.decode(bitstreams(p)[i], frame_shape(spec(p).packing, x.shape), p["root"])
        np.testing.assert_array_equal(y, from_frame(frame, spec(p), x.shape, "quantized", 10))
        # ... and close to the original at QP 22: within 10 quantizer steps RMS (about 7 measured), and far
        # below the features' own variance (about 10^4 steps^2).
        error = float(np.mean((y.astype(np.float64) - x) ** 2))
        assert error < (10 * step) ** 2
        assert error < 0.01 * float(np.var(x))


def test_decode_point_rejects_a_bitstream_that_no_longer_matches_its_sidecar(pipeline, codec, tmp_path):
    first, second = copy_shards(pipeline, tmp_path / "bits")
    last = second / "00002.feature.bin"  # samples 0 and 1 decode before the failure
    last.write_bytes(last.read_bytes() + b"\x00")
    out = tmp_path / "out" / "reconstructed"
    with pytest.raises(CodecError, match=re.escape(f"bitstream {last} has")):
        decode_point([first, second], out, codec)
    assert leftovers(out.parent) == []
    # Truncated to half its size: same.
    data = last.read_bytes()[:-1]
    last.write_bytes(data[: len(data) // 2])
    with pytest.raises(CodecError, match="truncated or altered"):
        decode_point([first, second], out, codec)
    assert leftovers(out.parent) == []


def test_decode_point_rejects_a_corrupt_bitstream_of_the_right_size(pipeline, codec, tmp_path):
    first, second = copy_shards(pipeline, tmp_path / "bits")
    last = second / "00002.feature.bin"
    data = bytearray(last.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 16] = bytes(b ^ 0xFF for b in data[mid : mid + 16])
    last.write_bytes(bytes(data))
    out = tmp_path / "out" / "reconstructed"
    with pytest.raises(CodecError, match=re.escape(f"bitstream {last} does not match the SHA-256 in its sidecar")):
        decode_point([first, second], out, codec)
    assert leftovers(out.parent) == []


def test_decode_point_rejects_a_one_byte_change_the_decoder_would_conceal(pipeline, codec, tmp_path):
    # FFmpeg's VVC decoder silently decodes some single-byte flips (e.g. in the PPS) to a wrong picture;
    # the sidecar's SHA-256 catches every change.
    first, second = copy_shards(pipeline, tmp_path / "bits")
    last = second / "00002.feature.bin"
    data = bytearray(last.read_bytes())
    data[-1] ^= 0x01
    last.write_bytes(bytes(data))
    with pytest.raises(CodecError, match="SHA-256"):
        decode_point([first, second], tmp_path / "out", codec)
    assert not (tmp_path / "out").exists()


def test_decode_point_rejects_a_missing_trailing_shard(pipeline, codec, tmp_path):
    first, _ = copy_shards(pipeline, tmp_path / "bits")
    with pytest.raises(CodecError, match=r"do not cover samples 0\.\.2 once each"):
        decode_point([first], tmp_path / "out", codec, samples=3)
    assert not (tmp_path / "out").exists()


def test_read_sidecars_rejects_mixed_points(pipeline, tmp_path):
    first, second = copy_shards(pipeline, tmp_path / "bits")
    sidecar = second / "00002.json"
    sidecar.write_text(sidecar.read_text().replace(f'"point": "{POINT}"', '"point": "99"'))
    with pytest.raises(CodecError, match="mix task/codec/point"):
        read_sidecars([first, second])


def test_decode_point_rejects_bitstreams_of_another_codec(pipeline, codec, tmp_path):
    first, second = copy_shards(pipeline, tmp_path / "bits")
    for sidecar in [*first.glob("*.json"), *second.glob("*.json")]:
        sidecar.write_text(sidecar.read_text().replace('"codec": "vvenc"', '"codec": "vtm"'))
    with pytest.raises(CodecError, match="coded by 'vtm', not 'vvenc'"):
        decode_point([first, second], tmp_path / "out", codec)
    assert not (tmp_path / "out").exists()


def test_decode_point_without_bitstreams_raises(codec, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CodecError, match="no bitstreams in"):
        decode_point([tmp_path / "empty"], tmp_path / "out", codec)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------------
# Rate and feature MSE
# --------------------------------------------------------------------------------------------------


def test_rate_is_bits_on_disk_over_original_feature_points(pipeline):
    p = pipeline
    rows = rate(p["shards"])
    shapes = CASES[p["task"]]["shapes"]
    assert [r["sample_index"] for r in rows] == [0, 1, 2]
    for row, bitstream, shape in zip(rows, bitstreams(p), shapes, strict=True):
        size = bitstream.stat().st_size
        assert row["bits"] == 8 * size
        assert row["feature_points"] == int(np.prod(shape))
        assert row["bpfp"] == 8 * size / int(np.prod(shape))  # exact, not approximately
        assert 0 < row["bpfp"] < 32


def _mse(original, reconstructed) -> list[float]:
    return feature_errors(original, reconstructed)["mse"].tolist()


def test_feature_mse_is_zero_for_identical_stores(pipeline, tmp_path):
    p = pipeline
    write_features(tmp_path / "copy", p["task"])
    original = FeatureStore(p["root"] / "features")
    assert _mse(original, original) == [0.0, 0.0, 0.0]
    assert _mse(original, FeatureStore(tmp_path / "copy")) == [0.0, 0.0, 0.0]


def test_feature_mse_matches_a_hand_computed_value(pipeline, tmp_path):
    p = pipeline
    data = p["data"]
    shapes = CASES[p["task"]]["shapes"]
    perturbed = [x.copy() for x in data]
    perturbed[0] += np.float32(0.5)  # every point off by 0.5 -> 0.25
    perturbed[1][0, 0, 2, 3] += np.float32(3.0)  # one point off by 3 -> 9 / points
    perturbed[1][0, 0, 4, 7] -= np.float32(1.0)  # and one by -1 -> + 1 / points
    ids = FeatureStore(p["root"] / "features").sample_ids
    write_one(tmp_path / "perturbed", ids, shapes, perturbed)
    mse = _mse(FeatureStore(p["root"] / "features"), FeatureStore(tmp_path / "perturbed"))
    assert mse == [0.25, 10.0 / int(np.prod(shapes[1])), 0.0]


def test_feature_mse_rejects_other_samples_or_shapes(pipeline, tmp_path):
    p = pipeline
    original = FeatureStore(p["root"] / "features")
    shapes = CASES[p["task"]]["shapes"]
    write_one(tmp_path / "renamed", ["x", "y", "z"], shapes, p["data"])
    with pytest.raises(ValueError, match="does not hold the samples"):
        _mse(original, FeatureStore(tmp_path / "renamed"))
    # Same samples, but one row of tokens only: NumPy would broadcast it silently.
    small = [(n, c, 1, w) for n, c, _, w in shapes]
    write_one(tmp_path / "small", original.sample_ids, small, [x[:, :, :1] for x in p["data"]])
    with pytest.raises(ValueError, match="other shapes of tensor 'feature'"):
        _mse(original, FeatureStore(tmp_path / "small"))


# --------------------------------------------------------------------------------------------------
# float16 features (tti latents): stored as fp16, quantized in fp16 arithmetic, reconstructed as fp16
# --------------------------------------------------------------------------------------------------

TTI_TRUNCATION = [-6.176, 4.668]
TTI_SHAPES = [(1, 16, 8, 8), (1, 16, 8, 8), (1, 16, 8, 8)]
TTI_SPEC = TensorSpec("tiles", TTI_TRUNCATION)


def fp16_latents(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(s) * 1.1).astype(np.float16) for s in TTI_SHAPES]


def test_fp16_features_round_trip_through_store_and_preprocess_store(tmp_path):
    data = fp16_latents()
    ids = ["397133", "37777", "252219"]
    write_one(
        tmp_path / "features", ids, TTI_SHAPES, data, attrs={"stage": "features"}, dtype="float16", packing="tiles"
    )
    features = FeatureStore(tmp_path / "features")
    assert features.layout().dtype == "float16"
    lo, hi = TTI_TRUNCATION
    preprocess_store(tmp_path / "features", tmp_path / "frames", "tti", TTI_TRUNCATION, "quantized", 10)
    frames = FeatureStore(tmp_path / "frames")
    assert frames.layout().attrs["feature_dtype"] == "float16"
    assert frames.layout().attrs["feature_shapes"] == [list(s) for s in TTI_SHAPES]
    assert (
        frames.layout().dtype == "uint16" and frames.layout().shapes == [(32, 32)] * 3
    )  # 4 x 4 grid of 8 x 8 channel tiles
    # The reference's expression on the fp16 latent, each operand an explicit float16, then SD3 packing.
    lo16, hi16, scale16 = np.float16(lo), np.float16(hi), np.float16(1023 / (hi - lo))
    differ = 0
    for i, x in enumerate(data):
        frame = frames.read(i)
        codes = ((np.minimum(np.maximum(x, lo16), hi16) - lo16) * scale16).astype(np.uint16)
        expected = codes[0].reshape(4, 4, 8, 8).transpose(0, 2, 1, 3).reshape(32, 32)  # P[8i+h, 8j+w] = F[4i+j]
        np.testing.assert_array_equal(frame, expected)
        widened = to_frame(x.astype(np.float32), TTI_SPEC, "quantized", 10)
        diff = frame.astype(np.int64) - widened
        assert np.abs(diff).max() <= 1
        differ += int(np.count_nonzero(diff))
        back = from_frame(frame, TTI_SPEC, x.shape, "quantized", 10)
        assert back.dtype == np.float32 and back.shape == x.shape
        assert np.abs(back.astype(np.float64) - x).max() <= 2 * (hi - lo) / 1023
    assert differ > 0  # fp16 arithmetic gives other codes than float32 arithmetic on some values
    # Learned codecs get float32 frames, normalized as the widened feature (the reference casts to float32).
    preprocess_store(tmp_path / "features", tmp_path / "norm", "tti", TTI_TRUNCATION, "normalized", 10)
    norm = FeatureStore(tmp_path / "norm")
    assert norm.layout().dtype == "float32" and norm.layout().attrs["feature_dtype"] == "float16"
    np.testing.assert_array_equal(norm.read(0), to_frame(data[0].astype(np.float32), TTI_SPEC, "normalized", 10))


def test_feature_mse_of_fp16_features_is_computed_in_float64(tmp_path):
    data = fp16_latents(seed=1)
    ids = ["1", "2", "3"]
    write_one(tmp_path / "features", ids, TTI_SHAPES, data, dtype="float16", packing="tiles")
    # float32 reconstructions off by exactly 2**-12 (exact in float32 at these magnitudes, below fp16's
    # resolution): float16 arithmetic would see no error at all, float64 gives exactly 2**-24 per point.
    offset = np.float32(2.0**-12)
    write_one(tmp_path / "rec", ids, TTI_SHAPES, [x.astype(np.float32) + offset for x in data], packing="tiles")
    original, rec = FeatureStore(tmp_path / "features"), FeatureStore(tmp_path / "rec")
    assert (original.layout().dtype, rec.layout().dtype) == ("float16", "float32")
    assert _mse(original, rec) == [2.0**-24] * 3
    big = np.abs(original.read(0)) >= 1  # fp16 spacing 2**-10 or more there: the offset is invisible
    assert big.any() and np.all(rec.read(0).astype(np.float16)[big] == original.read(0)[big])


def test_fp16_features_are_reconstructed_in_fp16_as_the_reference_saves_them(codec, tmp_path):
    data = fp16_latents(seed=2)
    ids = ["1", "2", "3"]
    write_one(tmp_path / "features", ids, TTI_SHAPES, data, dtype="float16", packing="tiles")
    preprocess_store(tmp_path / "features", tmp_path / "frames", "tti", TTI_TRUNCATION, "quantized", 10)
    records = encode_shard(tmp_path / "frames", tmp_path / "bits", codec, POINT, range(3))
    assert {r.tensors[0].feature_dtype for r in records} == {"float16"}
    decode_point([tmp_path / "bits"], tmp_path / "rec", codec)
    rec = FeatureStore(tmp_path / "rec")
    assert rec.layout().dtype == "float16"
    # The decoded frame dequantized in float32, then cast to float16 (the reference's order).
    frames = FeatureStore(tmp_path / "frames")
    for i, x in enumerate(data):
        assert rec.read(i).dtype == np.float16 and rec.read(i).shape == x.shape
        decoded = codec.decode(tmp_path / "bits" / f"{i:05d}.feature.bin", frames.layout().shapes[i], tmp_path)
        expected = from_frame(decoded, TTI_SPEC, x.shape, "quantized", 10).astype(np.float16)
        np.testing.assert_array_equal(rec.read(i), expected)
