"""The codec conformance kit: what every registered codec must do through the workflow's own coding path
(coding.code_shard / encode_shard / decode_point on a real frames store, bitstreams.rate). Plain functions and
one table, `TABLE`, of each codec's parameters; tests/test_conformance.py runs the kit on every name in
`lamofc_lib.codecs.REGISTRY`, and a registered codec without an entry in `TABLE` fails there.

The checks, on a small store of smooth features coded at one operating point:

- round trip: the codec's own decoder (`Codec.decode`) on the workflow's bitstream files gives frames of the
  frame's shape and the input kind's dtype whose RMSE against the coded frames, in frame units (10-bit levels
  for quantized frames, [0, 1] for normalized ones), is within the codec's declared bound; the bound itself
  must be under half of every frame's standard deviation, so a codec that gives back a flat frame (RMSE = the
  frame's standard deviation) fails it; and decode_point's reconstructed features are that frame, post-processed;
- rate: the BPFP that bitstreams.rate reports per sample is 8 x the sizes (os.stat) of the sample's bitstream
  files over the sample's feature points (counted from the feature arrays), and the folder holds no file that
  is not a sidecar or a counted bitstream;
- determinism: encoding the same frames again gives the same bytes;
- damage: a bitstream truncated to half its bytes, cut to its first 8 bytes, or with its middle byte altered
  is refused by decode_point and by bitstreams.rate with a CodecError naming the file (the sidecar's size and
  SHA-256), leaving no reconstruction. The codec's own decoder must refuse, with a CodecError naming the file,
  the damages listed in its `decoder_detects`; for the others it may decode garbage (it must still give a frame
  of the right shape or a CodecError, never another exception), and only the sidecar check guards the workflow.

A new codec adds a `Parameters` entry to `TABLE` (point, settings, declared bound, what its decoder detects,
for a trained codec its sizes and training block) and must pass tests/test_conformance.py.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from store_helpers import write_one

from lamofc_lib.bitstreams import rate, read_sidecars
from lamofc_lib.codecs import REGISTRY, Codec, CodecError, get_codec
from lamofc_lib.coding import code_shard, decode_point, encode_shard
from lamofc_lib.preprocess import TensorSpec, from_frame, preprocess_store, store_frames
from lamofc_lib.store import FeatureStore, as_dtype

TASK = "csr"
TRUNCATION = [-2.0, 2.0]  # the smooth features lie within +-2 (see smooth_features)
SHAPE = (1, 1, 60, 124)  # one 60 x 124 plane: not a multiple of 8 or 64, so every codec pads and crops
SAMPLES = 3
DAMAGES = ("truncated", "cut", "altered")


def _vtm_missing() -> str | None:
    if os.environ.get("LAMOFC_VTM_DIR"):
        return None
    return (
        "VTM is not installed: set LAMOFC_VTM_DIR to a folder with VTM-23.3's EncoderAppStatic/DecoderAppStatic "
        "(and encoder_intra_vtm.cfg there or in ../cfg)"
    )


@dataclass(frozen=True)
class Parameters:
    """One codec's conformance parameters."""

    point: str  # the operating point coded
    max_rmse: float  # declared round-trip bound: RMSE per frame, in frame units
    decoder_detects: frozenset[str]  # the DAMAGES that Codec.decode refuses by itself
    settings: Mapping = field(default_factory=dict)  # the codec's config block
    quantizer: str = "uniform"  # "uniform" (TRUNCATION) or "kmeans" (centres fitted on the features)
    sizes: Mapping | None = None  # a trained codec's N and M
    training: Mapping | None = None  # a trained codec's training block (TrainSettings.from_config)
    missing: Callable[[], str | None] = lambda: None  # why the codec cannot run here (it is skipped), or None


TABLE: dict[str, Parameters] = {
    # VVenC at QP 22, preset faster, 10-bit 4:0:0: measured RMSE 2.13 to 2.27 levels (0.28 to 0.33 BPFP) on the
    # three frames, whose standard deviations are 173 to 252 levels; a decoder off by one row gives 29, one that
    # crops the wrong window of the padded frame 145. The decoder (FFmpeg's, -err_detect explode) refuses a
    # truncated file, a cut one and one with its middle byte altered (not every byte: the first is the start
    # code's zero_byte, and a file with it altered decodes unchanged).
    "vvenc": Parameters(point="22", max_rmse=4.0, settings={"preset": "faster"}, decoder_detects=frozenset(DAMAGES)),
    # VTM-23.3 at QP 22 (the paper's intra cfg): not measured here (no VTM binaries); the reference encoder's
    # rate-distortion at a QP is at least VVenC's, so VVenC's bound. Its decoder refuses a truncated file
    # (tests/test_vtm.py) and a cut one; an altered byte is left to the sidecar check.
    "vtm": Parameters(point="22", max_rmse=4.0, decoder_detects=frozenset({"truncated", "cut"}), missing=_vtm_missing),
    # The Hyperprior (N=16, M=24) trained for 200 steps at lambda 1 on the three normalized frames: measured
    # RMSE 0.037 to 0.040 on the pinned code path (frame standard deviations 0.169 to 0.247). At lambda 0.2 the
    # same training ended at 0.039 to 0.045 on one host's own code path, 0.061 to 0.067 on another's and 0.081
    # on the pinned one (over this bound): a briefly trained model's error is not a property to bound closely
    # (docs/benchmark.md, "Determinism"). Its bitstream is the z string after its 4-byte length, then the y
    # string to the end of the file: the decoder refuses a file cut inside the length-prefixed part, but a cut or
    # an altered byte inside the y string (the half truncation, the middle byte) decodes to another frame: a range
    # coder's strings carry no check, so only the sidecar's size and SHA-256 refuse those.
    "hyperprior": Parameters(
        point="1",
        max_rmse=0.08,
        decoder_detects=frozenset({"cut"}),
        sizes={"N": 16, "M": 24},
        training={"steps": 200, "batch": 2, "crop": [64, 64], "lr": 5e-3, "seed": 1, "log_every": 50},
    ),
    # ELIC (N=16, M=144) trained for 150 steps at lambda 0.2 on LaMoFCBench's K-means frames (codes / 256):
    # measured RMSE 0.040 to 0.057 at 0.53 to 0.66 BPFP (frame standard deviations 0.203 to 0.284; 0.08 to 0.12
    # after 100 steps, and lr 1e-2 diverges). Eleven strings, all but the last length-prefixed: the half
    # truncation cuts a prefixed string and is refused, as is a cut file; an altered byte inside a string
    # decodes to another frame (the sidecar check refuses it).
    "elic": Parameters(
        point="0.2",
        max_rmse=0.1,
        decoder_detects=frozenset({"truncated", "cut"}),
        quantizer="kmeans",
        sizes={"N": 16, "M": 144},
        training={"steps": 150, "batch": 2, "crop": [64, 64], "lr": 5e-3, "seed": 1, "log_every": 50},
    ),
}


def parameters(name: str) -> Parameters:
    """The conformance parameters of the registered codec `name`; a codec without any fails, saying what to add."""
    if name not in TABLE:
        raise LookupError(
            f"codec '{name}' is registered but has no conformance parameters: add its Parameters (point, settings, "
            f"declared max_rmse, decoder_detects, and for a trained codec sizes and training) to TABLE in "
            f"tests/conformance.py"
        )
    return TABLE[name]


# --- set-up ----------------------------------------------------------------------------------------------------


def smooth_features(path: Path, samples: int = SAMPLES, shape=SHAPE, seed: int = 0) -> Path:
    """A feature store of `samples` smooth float32 planes (sums of low-frequency waves within +-2, plus a little
    noise), one tensor packed as a plane."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[-2], : shape[-1]].astype(np.float32)
    features = []
    for _ in range(samples):
        waves = sum(
            np.sin(yy * rng.uniform(0.02, 0.15) + xx * rng.uniform(0.02, 0.15) + rng.uniform(0, 6)) for _ in range(3)
        )
        plane = waves * (2 / 3) + rng.normal(0, 0.004, waves.shape)
        features.append(np.clip(plane, *TRUNCATION).astype(np.float32).reshape(shape))
    ids = [f"s{i}" for i in range(samples)]
    write_one(path, ids, [shape] * samples, features, {"task": TASK}, packing="plane")
    return Path(path)


def configured_codec(name: str, params: Parameters, features: Path, folder: Path) -> tuple[Codec, Path]:
    """The codec `name` configured by `params`, and the frames store of `features` it takes (written in
    `folder` by preprocess.preprocess_store). A trained codec's model is trained first on those frames by the
    codec's own train_point hook, as the workflow's train rule does."""
    cls = REGISTRY[name]
    calibration = None
    truncation = TRUNCATION
    if params.quantizer == "kmeans":
        from lamofc_lib.quantizers.kmeans import calibrate_store

        calibration, truncation = folder / "calibration", None
        calibrate_store(features, calibration, TASK, samples=SAMPLES)
    frames = folder / "frames.zarr"
    bit_depth = int(params.settings.get("bit_depth", 10))
    preprocess_store(features, frames, TASK, truncation, cls.input_kind, bit_depth, calibration)
    if not cls.trained:
        return get_codec(name, params.settings, threads=1), frames
    import torch

    torch.set_num_threads(1)
    model = folder / "model.pt"
    training_frames = store_frames(features, cls.input_kind, truncation, calibration, TASK)
    cls.train_point(training_frames, params.point, params.sizes, params.training, model, folder / "loss.csv",
                    "cpu", {"task": "conformance"})  # fmt: skip
    return get_codec(name, params.settings, threads=1, model=model), frames


def code(codec: Codec, frames: Path, point: str, folder: Path) -> tuple[Path, Path]:
    """The workflow's code job on every sample: bitstreams and reconstructed features in `folder`."""
    bits, reconstructed = folder / "bits", folder / "reconstructed.zarr"
    code_shard(frames, bits, reconstructed, codec, point, range(len(FeatureStore(frames))))
    return bits, reconstructed


# --- checks ----------------------------------------------------------------------------------------------------


def check_round_trip(codec: Codec, frames: Path, bits: Path, reconstructed: Path, max_rmse: float,
                     workdir: Path) -> list[float]:  # fmt: skip
    """Each frame decoded from the workflow's bitstream by the codec's decoder is within `max_rmse` of the coded
    frame; returns the RMSEs."""
    store = FeatureStore(frames)
    rec = FeatureStore(reconstructed)
    assert rec.sample_ids == store.sample_ids
    dtype = np.uint16 if codec.input_kind == "quantized" else np.float32
    errors = []
    for folder, record in read_sidecars([bits]):
        for tensor in record.tensors:
            frame = store.read(record.sample_index, tensor.name)
            decoded = codec.decode(folder / tensor.bitstream, frame.shape, workdir)
            assert decoded.shape == frame.shape and decoded.dtype == dtype, (decoded.shape, decoded.dtype)
            rmse = float(np.sqrt(np.mean((decoded.astype(np.float64) - frame.astype(np.float64)) ** 2)))
            std = float(frame.astype(np.float64).std())
            assert max_rmse < std / 2, (
                f"{codec.name}: the declared bound {max_rmse} does not tell a flat frame (RMSE {std:.4g}) from a "
                f"coded one: code frames with more structure or declare a tighter bound"
            )
            assert rmse <= max_rmse, (
                f"{codec.name}: sample {record.sample_index} tensor {tensor.name} decodes with RMSE {rmse:.4g}, "
                f"over its declared bound {max_rmse} (frame units)"
            )
            errors.append(rmse)
            # The workflow's reconstruction is this frame, post-processed as the sidecar says.
            centres = tuple(tensor.centres) if tensor.centres is not None else None
            spec = TensorSpec(tensor.packing, tensor.truncation, tensor.quantizer, centres)
            expected = from_frame(decoded, spec, tensor.feature_shape, record.input_kind, record.bit_depth)
            np.testing.assert_array_equal(rec.read(record.sample_index, tensor.name),
                                          as_dtype(expected, tensor.feature_dtype))  # fmt: skip
    return errors


def check_rate(features: Path, bits: Path) -> list[float]:
    """bitstreams.rate's per-sample bits and BPFP are 8 x the bitstream files' sizes (os.stat) over the
    feature points (the feature arrays' sizes); returns the BPFPs."""
    store = FeatureStore(features)
    rows = rate([bits])
    assert [row["sample_index"] for row in rows] == list(range(len(store)))
    counted = set()
    for row in rows:
        i = row["sample_index"]
        files = sorted(bits.glob(f"{i:05d}.*.bin"))
        assert [f.name for f in files] == sorted(f"{i:05d}.{name}.bin" for name in store.tensors)
        counted |= {f.name for f in files}
        bits_on_disk = 8 * sum(os.stat(f).st_size for f in files)
        points = sum(store.read(i, name).size for name in store.tensors)
        assert row["bits"] == bits_on_disk, (row["bits"], bits_on_disk)
        assert row["feature_points"] == points
        assert math.isclose(row["bpfp"], bits_on_disk / points, rel_tol=1e-12), (row["bpfp"], bits_on_disk / points)
    sidecars = {f"{i:05d}.json" for i in range(len(store))}
    extra = sorted(p.name for p in bits.iterdir() if p.name not in counted | sidecars)
    assert not extra, f"the bitstream folder holds files the rate does not count: {extra}"
    return [row["bpfp"] for row in rows]


def check_deterministic(codec: Codec, frames: Path, point: str, bits: Path, again: Path) -> None:
    """Encoding the same frames a second time (encode_shard into `again`) gives the same bytes."""
    encode_shard(frames, again, codec, point, range(len(FeatureStore(frames))))
    first = sorted(p.name for p in bits.glob("*.bin"))
    assert first and sorted(p.name for p in again.glob("*.bin")) == first
    for name in first:
        assert (again / name).read_bytes() == (bits / name).read_bytes(), f"{codec.name}: {name} differs"


def damage(path: Path, kind: str) -> None:
    """Truncate `path` to half its bytes, cut it to its first 8, or flip every bit of its middle byte."""
    data = path.read_bytes()
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "cut":
        assert len(data) > 16, f"{path} is too short to cut to 8 bytes meaningfully"
        path.write_bytes(data[:8])
    elif kind == "altered":
        k = len(data) // 2
        path.write_bytes(data[:k] + bytes([data[k] ^ 0xFF]) + data[k + 1 :])
    else:
        raise ValueError(f"unknown damage {kind!r}; one of {DAMAGES}")


def check_damage(codec: Codec, bits: Path, kind: str, decoder_detects: frozenset[str], workdir: Path) -> bool:
    """Damage the last sample's last bitstream in a copy of `bits`: decode_point and rate refuse it naming the
    file, and the codec's own decoder refuses it when `kind` is in `decoder_detects` (otherwise it gives a frame
    or refuses). Returns whether the codec's decoder refused it."""
    copy = workdir / f"damaged-{kind}"
    shutil.copytree(bits, copy)
    folder, record = read_sidecars([copy])[-1]
    tensor = record.tensors[-1]
    path = folder / tensor.bitstream
    damage(path, kind)
    out = workdir / f"reconstructed-{kind}.zarr"
    try:
        decode_point([copy], out, codec)
    except CodecError as err:
        assert str(path) in str(err), f"decode_point's error does not name {path}: {err}"
    else:
        raise AssertionError(f"decode_point decoded a {kind} bitstream {path}")
    assert not out.exists(), "a refused decoding left a reconstruction"
    try:
        rate([copy])
    except CodecError as err:
        assert str(path) in str(err), f"rate's error does not name {path}: {err}"
    else:
        raise AssertionError(f"bitstreams.rate counted a {kind} bitstream {path}")
    try:
        decoded = codec.decode(path, tuple(tensor.frame_shape), workdir)
    except CodecError as err:
        assert str(path) in str(err), f"{codec.name}'s decoder error does not name {path}: {err}"
        return True
    assert kind not in decoder_detects, f"{codec.name}'s decoder decoded a {kind} bitstream {path}"
    assert decoded.shape == tuple(tensor.frame_shape), decoded.shape
    return False
