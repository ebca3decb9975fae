"""Tests for the VVenC codec (lamofc_lib.codecs.vvenc): real VVC bitstreams, decoded by FFmpeg's VVC decoder."""

from __future__ import annotations

import re

import numpy as np
import pytest

from lamofc_lib.codecs import CodecError, get_codec
from lamofc_lib.codecs.vvenc import padded_shape

SETTINGS = {"preset": "faster", "bit_depth": 10, "samples_per_job": 10, "truncation": "vvc"}
SHAPE = (257, 99)  # odd, and neither side a multiple of 8 (coded as 264 x 104)
POINTS = ("0", "22", "42")


def smooth_frame(shape=SHAPE) -> np.ndarray:
    """Smooth 10-bit content spanning most of the range (values 112..912)."""
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    return (512 + 400 * np.sin(x / 15.0) * np.cos(y / 20.0)).astype(np.uint16)


def mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return 10 * np.log10(1023.0**2 / max(mse(a, b), 1e-12))


@pytest.fixture(scope="module")
def codec():
    return get_codec("vvenc", SETTINGS)


@pytest.fixture(scope="module")
def coded(codec, tmp_path_factory):
    """Frame, bitstream path and reconstruction at each QP of POINTS."""
    root = tmp_path_factory.mktemp("vvc")
    frame = smooth_frame()
    out = {}
    for qp in POINTS:
        work = root / f"work-{qp}"
        work.mkdir()
        bitstream = root / f"qp{qp}.bin"
        codec.encode(frame, qp, bitstream, work)
        out[qp] = (bitstream, codec.decode(bitstream, SHAPE, work))
    return frame, out


def test_padded_shape():
    assert padded_shape(SHAPE) == (264, 104)
    assert padded_shape((24, 64)) == (24, 64)
    assert padded_shape((1, 1)) == (8, 8)


def test_decodes_to_a_frame_of_the_original_shape(coded):
    frame, out = coded
    for qp in POINTS:
        bitstream, rec = out[qp]
        assert bitstream.stat().st_size > 0
        assert bitstream.read_bytes()[:4] == b"\x00\x00\x00\x01"  # Annex B start code
        assert rec.shape == SHAPE
        assert rec.dtype == np.uint16
        assert int(rec.max()) < 1024


def test_low_qp_is_close_to_the_original(coded):
    frame, out = coded
    assert psnr(frame, out["0"][1]) > 45
    assert psnr(frame, out["22"][1]) > 45
    # The crop keeps the frame's own rows and columns, not the edge padding: the last row/column match too.
    rec = out["0"][1].astype(int)
    assert np.abs(rec[-1] - frame[-1]).max() <= 4
    assert np.abs(rec[:, -1] - frame[:, -1]).max() <= 4


def test_higher_qp_is_coarser_and_smaller(coded):
    frame, out = coded
    sizes = {qp: out[qp][0].stat().st_size for qp in POINTS}
    errors = {qp: mse(frame, out[qp][1]) for qp in POINTS}
    assert sizes["42"] < sizes["22"] < sizes["0"]
    assert errors["42"] > errors["22"] > errors["0"]
    assert psnr(frame, out["42"][1]) < 45


def test_encoding_is_deterministic(codec, coded, tmp_path):
    frame, out = coded
    for run in ("a", "b"):
        work = tmp_path / run
        work.mkdir()
        codec.encode(frame.copy(), "22", tmp_path / f"{run}.bin", work)
    first = (tmp_path / "a.bin").read_bytes()
    assert first == (tmp_path / "b.bin").read_bytes()
    assert first == out["22"][0].read_bytes()


def test_small_aligned_frame_round_trip(codec, tmp_path):
    frame = smooth_frame((24, 64))
    codec.encode(frame, "0", tmp_path / "small.bin", tmp_path)
    rec = codec.decode(tmp_path / "small.bin", (24, 64), tmp_path)
    assert rec.shape == (24, 64)
    assert psnr(frame, rec) > 45
    # The encoder's temporary input is removed, its log is kept in the work folder.
    assert not (tmp_path / "input.yuv").exists()
    assert (tmp_path / "vvenc.log").is_file()


@pytest.mark.parametrize(
    "frame",
    [
        np.full((24, 64), 1024, dtype=np.uint16),
        np.pad(np.zeros((23, 64), np.uint16), ((0, 1), (0, 0)), constant_values=65535),
        np.zeros((24, 64), dtype=np.float32),
        np.zeros((24, 64), dtype=np.int32),
        np.zeros((24, 64), dtype=np.uint8),
        np.zeros((1, 24, 64), dtype=np.uint16),
    ],
    ids=["1024", "65535-in-last-row", "float32", "int32", "uint8", "3-D"],
)
def test_invalid_frames_raise_value_error(codec, tmp_path, frame):
    with pytest.raises(ValueError, match="vvenc"):
        codec.encode(frame, "22", tmp_path / "x.bin", tmp_path)
    assert not (tmp_path / "x.bin").exists()


def test_largest_10_bit_value_is_accepted(codec, tmp_path):
    frame = np.full((24, 64), 1023, dtype=np.uint16)
    codec.encode(frame, "0", tmp_path / "x.bin", tmp_path)
    assert (codec.decode(tmp_path / "x.bin", (24, 64), tmp_path) >= 1020).all()


def test_other_bit_depths_are_rejected():
    with pytest.raises(ValueError, match="bit_depth 8"):
        get_codec("vvenc", {**SETTINGS, "bit_depth": 8})


def damaged(kind: str, data: bytes) -> bytes:
    n = len(data)
    if kind == "flipped-middle":
        mid = n // 2
        return data[:mid] + bytes(b ^ 0xFF for b in data[mid : mid + 16]) + data[mid + 16 :]
    if kind == "first-half":
        return data[: n // 2]
    if kind == "last-byte-missing":
        return data[:-1]
    if kind == "empty":
        return b""
    if kind == "not-vvc":
        return bytes(range(256)) * 2
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["flipped-middle", "first-half", "last-byte-missing", "empty", "not-vvc"])
def test_damaged_bitstreams_raise_codec_error_naming_the_file(codec, coded, tmp_path, kind):
    bitstream = tmp_path / f"{kind}.bin"
    bitstream.write_bytes(damaged(kind, coded[1]["22"][0].read_bytes()))
    with pytest.raises(CodecError, match=re.escape(str(bitstream))):
        codec.decode(bitstream, SHAPE, tmp_path)
    assert not (tmp_path / "decoded.raw").exists()
    # The decoder's complaint and non-zero exit status are kept in the log.
    assert re.search(r"\[exit [1-9]\d*\]\s*$", (tmp_path / "vvc-decoder.log").read_text())


def test_two_concatenated_bitstreams_raise(codec, coded, tmp_path):
    data = coded[1]["22"][0].read_bytes()
    bitstream = tmp_path / "twice.bin"
    bitstream.write_bytes(data + data)
    with pytest.raises(CodecError, match="decoded to .* expected one 104x264 frame"):
        codec.decode(bitstream, SHAPE, tmp_path)


def test_bitstream_of_another_size_raises(codec, coded, tmp_path):
    with pytest.raises(CodecError, match=re.escape(str(coded[1]["22"][0]))):
        codec.decode(coded[1]["22"][0], (24, 64), tmp_path)


def test_missing_bitstream_raises(codec, tmp_path):
    with pytest.raises(CodecError, match=re.escape(str(tmp_path / "absent.bin"))):
        codec.decode(tmp_path / "absent.bin", SHAPE, tmp_path)


def test_version_mentions_vvenc(codec):
    version = codec.version()
    assert re.match(r"VVenC \d+\.\d+", version), version
    assert "ffmpeg version" in version
