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

from lamofc_lib.codecs import Codec, CodecError
from lamofc_lib.io import atomic_path, file_sha256, read_json, write_json
from lamofc_lib.preprocess import TensorSpec, frame_shape, from_frame, tensor_specs, to_frame
from lamofc_lib.store import FeatureStore, TensorLayout, write_store

SIDECAR_VERSION = 2
log = logging.getLogger(__name__)


def preprocess_store(
    features: str | Path, frames: str | Path, task: str, truncation, input_kind: str, bit_depth: int
) -> None:
    """Write the packed frame of every tensor of every sample of the feature store `features` to the store
    `frames` (one frame tensor per feature tensor, same names).

    `truncation` is the task's configured truncation entry (see `preprocess.tensor_specs`); each tensor's
    packing is the one its feature store records. Tensors are quantized as stored (float16 stays float16 in
    the quantizer's arithmetic); each frame tensor records its spec, feature shapes and feature dtype."""
    store = FeatureStore(features)
    specs = tensor_specs({name: store.layout(name).attrs["packing"] for name in store.tensors}, truncation)
    dtype = "uint16" if input_kind == "quantized" else "float32"
    tensors = {}
    for name, spec in specs.items():
        layout = store.layout(name)
        tensors[name] = TensorLayout(
            [frame_shape(spec.packing, s) for s in layout.shapes],
            dtype,
            {**spec.record(), "feature_shapes": [list(s) for s in layout.shapes], "feature_dtype": layout.dtype},
        )
    samples = (
        {name: to_frame(store.read(i, name), spec, input_kind, bit_depth) for name, spec in specs.items()}
        for i in range(len(store))
    )
    attrs = {
        "stage": "frames",
        "task": task,
        "input_kind": input_kind,
        "bit_depth": bit_depth,
        "features": str(features),
    }
    write_store(frames, store.sample_ids, tensors, samples, attrs=attrs)


@dataclass
class TensorRecord:
    """One named tensor of a coded sample: its bitstream and what decoding needs to rebuild it."""

    name: str
    bitstream: str
    bytes: int
    sha256: str
    feature_shape: list[int]
    feature_dtype: str  # the uncompressed tensor's dtype; its reconstruction is stored in it
    feature_points: int
    frame_shape: list[int]
    packing: str
    truncation: list
    quantizer: str

    def spec(self) -> TensorSpec:
        return TensorSpec(self.packing, self.truncation, self.quantizer)


@dataclass
class Sidecar:
    """What decoding needs and where a sample's bitstreams came from (one per named tensor); one JSON file
    beside them."""

    sample_index: int
    sample_id: str
    task: str
    codec: str
    codec_version: str
    point: str
    input_kind: str
    bit_depth: int
    tensors: list[TensorRecord]
    encode_seconds: float
    version: int = SIDECAR_VERSION

    @property
    def bytes(self) -> int:
        return sum(t.bytes for t in self.tensors)

    @property
    def feature_points(self) -> int:
        return sum(t.feature_points for t in self.tensors)

    @classmethod
    def load(cls, path: Path) -> Sidecar:
        data = read_json(path)
        if data.get("version") != SIDECAR_VERSION:
            raise CodecError(
                f"sidecar {path} has version {data.get('version')}, this LaMoFC reads version {SIDECAR_VERSION}: "
                f"it was written by another LaMoFC version; delete {path.parent} to encode again"
            )
        try:
            return cls(**{**data, "tensors": [TensorRecord(**t) for t in data["tensors"]]})
        except (TypeError, KeyError) as err:
            raise CodecError(f"sidecar {path} is not a LaMoFC sidecar: {err}") from None


def bitstream_name(index: int, tensor: str) -> str:
    return f"{index:05d}.{tensor}.bin"


def sidecar_name(index: int) -> str:
    return f"{index:05d}.json"


def encode_shard(
    frames: str | Path, out_dir: str | Path, codec: Codec, point: str, indices: Iterable[int]
) -> list[Sidecar]:
    """Encode the frames `indices` of the frame store at `point` into the folder `out_dir` (written atomically).

    The folder holds one `NNNNN.<tensor>.bin` bitstream per sample and named tensor and one `NNNNN.json`
    sidecar per sample; the encoder's own output goes to this module's logger (the job log).
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
            start = time.perf_counter()
            tensors = [_encode_tensor(store, i, name, codec, point, tmp) for name in store.tensors]
            record = Sidecar(
                sample_index=i,
                sample_id=store.sample_ids[i],
                task=attrs["task"],
                codec=codec.name,
                codec_version=version,
                point=point,
                input_kind=attrs["input_kind"],
                bit_depth=attrs["bit_depth"],
                tensors=tensors,
                encode_seconds=round(time.perf_counter() - start, 4),
            )
            write_json(tmp / sidecar_name(i), asdict(record))
            records.append(record)
    return records


def _encode_tensor(store: FeatureStore, i: int, name: str, codec: Codec, point: str, folder: Path) -> TensorRecord:
    frame = store.read(i, name)
    layout = store.layout(name)
    bitstream = folder / bitstream_name(i, name)
    with tempfile.TemporaryDirectory() as work:
        codec.encode(frame, point, bitstream, Path(work))
        if not bitstream.is_file() or bitstream.stat().st_size == 0:
            raise CodecError(f"{codec.name} exited 0 but wrote no bitstream to {bitstream}")
        _log_tool_output(Path(work))
    shape = layout.attrs["feature_shapes"][i]
    return TensorRecord(
        name=name,
        bitstream=bitstream.name,
        bytes=bitstream.stat().st_size,
        sha256=file_sha256(bitstream),
        feature_shape=list(shape),
        feature_dtype=layout.attrs["feature_dtype"],
        feature_points=int(np.prod(shape)),
        frame_shape=list(frame.shape),
        packing=layout.attrs["packing"],
        truncation=layout.attrs["truncation"],
        quantizer=layout.attrs["quantizer"],
    )


def _log_tool_output(work: Path) -> None:
    for path in sorted(work.glob("*.log")):
        log.info("%s:\n%s", path.name, path.read_text())


def read_sidecars(dirs: Sequence[str | Path], samples: int | None = None) -> list[tuple[Path, Sidecar]]:
    """(shard folder, sidecar) of every coded sample in the shard folders `dirs`, in sample order.

    Raises CodecError unless they cover samples 0..samples-1 exactly once (0..n-1 when `samples` is None),
    agree on task, codec, point and tensor names, and every bitstream a sidecar names exists.
    """
    if isinstance(dirs, str | Path):
        dirs = [dirs]  # one folder, not a sequence of one-character folder names
    found = []
    for d in dirs:
        for path in sorted(Path(d).glob("*.json")):
            record = Sidecar.load(path)
            for tensor in record.tensors:
                if not (path.parent / tensor.bitstream).is_file():
                    raise CodecError(
                        f"sidecar {path} names bitstream {path.parent / tensor.bitstream}, which is missing"
                    )
            found.append((path.parent, record))
    found.sort(key=lambda item: item[1].sample_index)
    indices = [r.sample_index for _, r in found]
    count = len(indices) if samples is None else samples
    if indices != list(range(count)):
        raise CodecError(f"bitstreams in {', '.join(map(str, dirs))} do not cover samples 0..{count - 1} once each")
    kinds = {(r.task, r.codec, r.point, tuple(t.name for t in r.tensors)) for _, r in found}
    if len(kinds) > 1:
        raise CodecError(f"bitstreams in {', '.join(map(str, dirs))} mix task/codec/point/tensors {sorted(kinds)}")
    return found


def _checked_bitstream(folder: Path, tensor: TensorRecord, codec: Codec, record: Sidecar) -> Path:
    bitstream = folder / tensor.bitstream
    if record.codec != codec.name:
        raise CodecError(f"{bitstream} was coded by '{record.codec}', not '{codec.name}'")
    actual = bitstream.stat().st_size
    if actual != tensor.bytes:
        raise CodecError(
            f"bitstream {bitstream} has {actual} bytes, its sidecar says {tensor.bytes}: it was truncated or altered"
        )
    if file_sha256(bitstream) != tensor.sha256:
        raise CodecError(f"bitstream {bitstream} does not match the SHA-256 in its sidecar: it was altered")
    return bitstream


def decode_point(
    shard_dirs: Sequence[str | Path], out: str | Path, codec: Codec, samples: int | None = None
) -> list[dict[str, float]]:
    """Decode every bitstream of one operating point and post-process it into the feature store `out`, each
    named tensor in its uncompressed dtype.

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

    def reconstructions():
        for folder, record in items:
            start = time.perf_counter()
            sample = {}
            for tensor in record.tensors:
                bitstream = _checked_bitstream(folder, tensor, codec, record)
                with tempfile.TemporaryDirectory() as work:
                    frame = codec.decode(bitstream, tuple(tensor.frame_shape), Path(work))
                x = from_frame(frame, tensor.spec(), tensor.feature_shape, record.input_kind, record.bit_depth)
                sample[tensor.name] = x.astype(tensor.feature_dtype)
            timings.append({"sample_index": record.sample_index, "decode_seconds": time.perf_counter() - start})
            yield sample

    tensors = {
        t.name: TensorLayout(
            [tuple(r.tensors[k].feature_shape) for _, r in items],
            t.feature_dtype,
            {"packing": t.packing},
        )
        for k, t in enumerate(first.tensors)
    }
    attrs = {
        "stage": "reconstructed",
        "task": first.task,
        "codec": codec.name,
        "codec_version": first.codec_version,
        "point": first.point,
    }
    write_store(out, [r.sample_id for _, r in items], tensors, reconstructions(), attrs=attrs)
    return timings


def rate(shard_dirs: Sequence[str | Path]) -> list[dict]:
    """Per-sample coded size: bits from the bitstream files on disk (in all and per named tensor), points of the
    original feature, and the pooled BPFP (all the sample's bits over all its points)."""
    rows = []
    for folder, record in read_sidecars(shard_dirs):
        per_tensor = {t.name: 8 * (folder / t.bitstream).stat().st_size for t in record.tensors}
        bits = sum(per_tensor.values())
        rows.append(
            {
                "sample_index": record.sample_index,
                "bits": bits,
                "feature_points": record.feature_points,
                "bpfp": bits / record.feature_points,
                **{f"bits.{name}": value for name, value in per_tensor.items()},
            }
        )
    return rows


def store_mse(original: FeatureStore, reconstructed: FeatureStore) -> list[float]:
    """Per-sample mean squared error between the original and the reconstructed feature stores over all the
    sample's tensors (their squared errors summed, over their points summed), in float64 whatever the stores'
    dtypes (fp16 originals against float32 reconstructions included)."""
    if original.sample_ids != reconstructed.sample_ids:
        raise ValueError(f"{reconstructed.path} does not hold the samples of {original.path}")
    if original.tensors != reconstructed.tensors:
        raise ValueError(
            f"{reconstructed.path} has tensors {reconstructed.tensors}, {original.path} {original.tensors}"
        )
    for name in original.tensors:
        if original.layout(name).shapes != reconstructed.layout(name).shapes:
            # Without this check NumPy would broadcast, e.g., a 1 x 1 x 1 x W sample against 1 x 1 x H x W.
            raise ValueError(f"{reconstructed.path} has other shapes of tensor '{name}' than {original.path}")
    errors = []
    for i in range(len(original)):
        squared = 0.0
        for name in original.tensors:
            diff = original.read(i, name).astype(np.float64) - reconstructed.read(i, name).astype(np.float64)
            squared += float(np.sum(diff**2))
        errors.append(squared / original.points(i))
    return errors
