"""The coding stages between the feature store and the reconstructed features:
pre-processing (features -> frames), encoding (frames -> bitstreams + sidecars) and decoding with
post-processing (bitstreams -> reconstructed features)."""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lamofc_lib import preprocess
from lamofc_lib.codecs import Codec, CodecError
from lamofc_lib.io import atomic_path, file_sha256, read_json, write_json
from lamofc_lib.metrics import feature_mse
from lamofc_lib.preprocess import from_frame, to_frame
from lamofc_lib.store import FeatureStore, write_store

SIDECAR_VERSION = 1
log = logging.getLogger(__name__)


def preprocess_store(
    features: str | Path, frames: str | Path, task: str, truncation, input_kind: str, bit_depth: int
) -> None:
    """Write the packed frame of every sample of the feature store `features` to the store `frames`.

    Samples are quantized as stored (float16 stays float16 in the quantizer's arithmetic); the frames'
    attribute `feature_dtype` records which dtype that was."""
    store = FeatureStore(features)
    dtype = "uint16" if input_kind == "quantized" else "float32"
    shapes = [preprocess.frame_shape(task, s) for s in store.shapes]
    frames_iter = (to_frame(store.read(i), task, truncation, input_kind, bit_depth) for i in range(len(store)))
    attrs = {
        "stage": "frames",
        "task": task,
        "truncation": truncation,
        "input_kind": input_kind,
        "bit_depth": bit_depth,
        "feature_shapes": [list(s) for s in store.shapes],
        "feature_dtype": str(store.dtype),
        "features": str(features),
    }
    write_store(frames, store.sample_ids, shapes, frames_iter, attrs=attrs, dtype=dtype)


@dataclass
class Sidecar:
    """What decoding needs and where a bitstream came from; one JSON file beside each bitstream."""

    sample_index: int
    sample_id: str
    task: str
    codec: str
    codec_version: str
    point: str
    feature_shape: list[int]
    frame_shape: list[int]
    truncation: list
    input_kind: str
    bit_depth: int
    packing: str
    bitstream: str
    bytes: int
    sha256: str
    feature_points: int
    encode_seconds: float
    version: int = SIDECAR_VERSION
    feature_dtype: str = "float32"  # the uncompressed feature's dtype; reconstructions are stored in it


def bitstream_name(index: int) -> str:
    return f"{index:05d}.bin"


def encode_shard(
    frames: str | Path, out_dir: str | Path, codec: Codec, point: str, indices: Iterable[int]
) -> list[Sidecar]:
    """Encode the frames `indices` of the frame store at `point` into the folder `out_dir` (written atomically).

    The folder holds `NNNNN.bin` bitstreams and their `NNNNN.json` sidecars; the encoder's own output goes to
    this module's logger (the job log).
    """
    store = FeatureStore(frames)
    attrs = store.attrs
    if attrs.get("input_kind") != codec.input_kind:
        raise ValueError(
            f"frames {frames} were prepared as '{attrs.get('input_kind')}', codec {codec.name} takes "
            f"'{codec.input_kind}'"
        )
    records = []
    version = codec.version()
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for i in indices:
            frame = store.read(i)
            bitstream = tmp / bitstream_name(i)
            start = time.perf_counter()
            with tempfile.TemporaryDirectory() as work:
                codec.encode(frame, point, bitstream, Path(work))
                if not bitstream.is_file() or bitstream.stat().st_size == 0:
                    raise CodecError(f"{codec.name} exited 0 but wrote no bitstream to {bitstream}")
                _log_tool_output(Path(work))
            seconds = time.perf_counter() - start
            shape = attrs["feature_shapes"][i]
            record = Sidecar(
                sample_index=i,
                sample_id=store.sample_ids[i],
                task=attrs["task"],
                codec=codec.name,
                codec_version=version,
                point=point,
                feature_shape=list(shape),
                frame_shape=list(frame.shape),
                truncation=attrs["truncation"],
                input_kind=attrs["input_kind"],
                bit_depth=attrs["bit_depth"],
                packing=attrs["task"],
                bitstream=bitstream.name,
                bytes=bitstream.stat().st_size,
                sha256=file_sha256(bitstream),
                feature_points=int(np.prod(shape)),
                encode_seconds=round(seconds, 4),
                feature_dtype=attrs.get("feature_dtype", "float32"),
            )
            write_json(bitstream.with_suffix(".json"), asdict(record))
            records.append(record)
    return records


def _log_tool_output(work: Path) -> None:
    for path in sorted(work.glob("*.log")):
        log.info("%s:\n%s", path.name, path.read_text())


def read_sidecars(dirs: Sequence[str | Path], samples: int | None = None) -> list[tuple[Path, Sidecar]]:
    """(bitstream path, sidecar) of every bitstream in the shard folders `dirs`, in sample order.

    Raises CodecError unless they cover samples 0..samples-1 exactly once (0..n-1 when `samples` is None) and
    agree on task, codec and point.
    """
    if isinstance(dirs, str | Path):
        dirs = [dirs]  # one folder, not a sequence of one-character folder names
    found = []
    for d in dirs:
        for path in sorted(Path(d).glob("*.json")):
            record = Sidecar(**read_json(path))
            bitstream = path.with_name(record.bitstream)
            if not bitstream.is_file():
                raise CodecError(f"sidecar {path} names bitstream {bitstream}, which is missing")
            found.append((bitstream, record))
    found.sort(key=lambda item: item[1].sample_index)
    indices = [r.sample_index for _, r in found]
    count = len(indices) if samples is None else samples
    if indices != list(range(count)):
        raise CodecError(f"bitstreams in {', '.join(map(str, dirs))} do not cover samples 0..{count - 1} once each")
    kinds = {(r.task, r.codec, r.point) for _, r in found}
    if len(kinds) > 1:
        raise CodecError(f"bitstreams in {', '.join(map(str, dirs))} mix task/codec/point {sorted(kinds)}")
    return found


def decode_point(
    shard_dirs: Sequence[str | Path], out: str | Path, codec: Codec, samples: int | None = None
) -> list[dict[str, float]]:
    """Decode every bitstream of one operating point and post-process it into the feature store `out`.

    Returns per-sample decoding times. A bitstream that was altered since encoding (size or SHA-256 differ from
    its sidecar) or fails to decode raises CodecError and leaves no output.
    """
    if isinstance(shard_dirs, str | Path):
        shard_dirs = [shard_dirs]
    items = read_sidecars(shard_dirs, samples)
    timings: list[dict[str, float]] = []
    if not items:
        raise CodecError(f"no bitstreams in {', '.join(map(str, shard_dirs))}")
    first = items[0][1]

    def features():
        for bitstream, record in items:
            if record.codec != codec.name:
                raise CodecError(f"{bitstream} was coded by '{record.codec}', not '{codec.name}'")
            actual = bitstream.stat().st_size
            if actual != record.bytes:
                raise CodecError(
                    f"bitstream {bitstream} has {actual} bytes, its sidecar says {record.bytes}: it was truncated "
                    "or altered"
                )
            if file_sha256(bitstream) != record.sha256:
                raise CodecError(f"bitstream {bitstream} does not match the SHA-256 in its sidecar: it was altered")
            start = time.perf_counter()
            with tempfile.TemporaryDirectory() as work:
                frame = codec.decode(bitstream, tuple(record.frame_shape), Path(work))
            timings.append({"sample_index": record.sample_index, "decode_seconds": time.perf_counter() - start})
            yield from_frame(
                frame,
                record.packing,
                record.feature_shape,
                record.truncation,
                record.input_kind,
                record.bit_depth,
            )

    attrs = {
        "stage": "reconstructed",
        "task": first.task,
        "codec": codec.name,
        "codec_version": first.codec_version,
        "point": first.point,
    }
    write_store(
        out,
        [r.sample_id for _, r in items],
        [tuple(r.feature_shape) for _, r in items],
        (x.astype(first.feature_dtype) for x in features()),
        attrs=attrs,
        dtype=first.feature_dtype,
    )
    return timings


def rate(shard_dirs: Sequence[str | Path]) -> list[dict]:
    """Per-sample coded size: bits from the bitstream files on disk, points of the original feature."""
    rows = []
    for bitstream, record in read_sidecars(shard_dirs):
        bits = 8 * bitstream.stat().st_size
        rows.append(
            {
                "sample_index": record.sample_index,
                "bits": bits,
                "feature_points": record.feature_points,
                "bpfp": bits / record.feature_points,
            }
        )
    return rows


def store_mse(original: FeatureStore, reconstructed: FeatureStore) -> list[float]:
    """Per-sample mean squared error between the original and the reconstructed feature stores, in float64
    whatever the stores' dtypes (fp16 originals against float32 reconstructions included)."""
    if original.sample_ids != reconstructed.sample_ids:
        raise ValueError(f"{reconstructed.path} does not hold the samples of {original.path}")
    if original.shapes != reconstructed.shapes:
        # Without this check NumPy would broadcast, e.g., a 1 x 1 x 1 x W sample against 1 x 1 x H x W.
        raise ValueError(f"{reconstructed.path} has other sample shapes than {original.path}")
    return [feature_mse(original.read(i), reconstructed.read(i)) for i in range(len(original))]
