"""The folder of a coded operating point: one bitstream per sample and named tensor (`NNNNN.<tensor>.bin`) and
one JSON sidecar per sample (`NNNNN.json`) with what decoding needs, in shard folders; and the rate read from it.

Scoring reads these folders without running a codec or the pre-processing, so this module imports neither."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lamofc_lib.codecs.base import CodecError
from lamofc_lib.dtypes import dtype_bits
from lamofc_lib.io import file_sha256, read_json

SIDECAR_VERSION = 2


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
    truncation: list | None  # None for K-means codes
    quantizer: str
    decoded_sha256: str | None = None  # the frame the encoder's own decoder produced (Codec.verifies_decoding)
    centres: list[float] | None = None  # the 256 K-means centres the codes index (quantizer kmeans)

    @property
    def absent(self) -> bool:
        """A tensor the sample does not have (lamofc_lib.store.absent): no bitstream (its name is empty), 0 bytes,
        0 points; decoding gives it back empty."""
        return not self.bitstream and self.bytes == 0 and self.feature_points == 0


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
    threads: int | None = None  # the codec's threads and device at encoding (Codec.verifies_decoding)
    device: str | None = None
    decode_seconds: float | None = None  # the code job's decoding of this sample (absent in older sidecars)

    @property
    def bytes(self) -> int:
        return sum(t.bytes for t in self.tensors)

    @property
    def feature_points(self) -> int:
        return sum(t.feature_points for t in self.tensors)

    @classmethod
    def load(cls, path: Path) -> Sidecar:
        try:
            data = read_json(path)
        except ValueError as err:  # not JSON, or not UTF-8
            raise CodecError(f"sidecar {path} is not JSON ({err}); delete {path.parent} to encode again") from None
        if not isinstance(data, dict):
            raise CodecError(f"sidecar {path} is not a LaMoFC sidecar: it holds a {type(data).__name__}")
        if data.get("version") != SIDECAR_VERSION:
            found = f"version {data['version']}" if "version" in data else "no version (an older LaMoFC's)"
            raise CodecError(
                f"sidecar {path} has {found}, this LaMoFC reads version {SIDECAR_VERSION}: it was written by "
                f"another LaMoFC version; delete {path.parent} (or rerun its encode job with --forcerun encode) "
                "to encode again"
            )
        try:
            return cls(**{**data, "tensors": [TensorRecord(**t) for t in data["tensors"]]})
        except (TypeError, KeyError) as err:
            raise CodecError(f"sidecar {path} is not a LaMoFC sidecar: {err}") from None


def bitstream_problem(folder: Path, tensor: TensorRecord) -> str | None:
    """What is wrong with one tensor's bitstream against its sidecar record (missing, another size, another
    SHA-256), or None."""
    if tensor.absent:
        return None
    bitstream = Path(folder) / tensor.bitstream
    if not bitstream.is_file():
        return f"bitstream {bitstream} is missing"
    actual = bitstream.stat().st_size
    if actual != tensor.bytes:
        return f"bitstream {bitstream} has {actual} bytes, its sidecar says {tensor.bytes}: it was truncated or altered"
    if file_sha256(bitstream) != tensor.sha256:
        return f"bitstream {bitstream} does not match the SHA-256 in its sidecar: it was altered"
    return None


def bitstream_name(index: int, tensor: str) -> str:
    return f"{index:05d}.{tensor}.bin"


def sidecar_name(index: int) -> str:
    return f"{index:05d}.json"


def read_sidecars(dirs: Sequence[str | Path], samples: int | None = None, first: int = 0) -> list[tuple[Path, Sidecar]]:
    """(shard folder, sidecar) of every coded sample in the shard folders `dirs`, in sample order.

    Raises CodecError unless they cover samples first..first+samples-1 exactly once (first..first+n-1 when
    `samples` is None), agree on task, codec, point and tensor names, and every bitstream a sidecar names exists.
    """
    if isinstance(dirs, str | Path):
        dirs = [dirs]  # one folder, not a sequence of one-character folder names
    found = []
    for d in dirs:
        for path in sorted(Path(d).glob("*.json")):
            record = Sidecar.load(path)
            for tensor in record.tensors:
                if not tensor.absent and not (path.parent / tensor.bitstream).is_file():
                    raise CodecError(
                        f"sidecar {path} names bitstream {path.parent / tensor.bitstream}, which is missing"
                    )
            found.append((path.parent, record))
    found.sort(key=lambda item: item[1].sample_index)
    indices = [r.sample_index for _, r in found]
    count = len(indices) if samples is None else samples
    if indices != list(range(first, first + count)):
        raise CodecError(
            f"bitstreams in {', '.join(map(str, dirs))} do not cover samples {first}..{first + count - 1} once each"
        )
    kinds = {(r.task, r.codec, r.point, tuple(t.name for t in r.tensors)) for _, r in found}
    if len(kinds) > 1:
        raise CodecError(f"bitstreams in {', '.join(map(str, dirs))} mix task/codec/point/tensors {sorted(kinds)}")
    return found


def rate(shard_dirs: Sequence[str | Path], items: Sequence[tuple[Path, Sidecar]] | None = None) -> list[dict]:
    """Per-sample coded size: bits from the bitstream files on disk (in all and per named tensor), points of the
    original feature, and the pooled BPFP (all the sample's bits over all its points) and EBPFP (LaMoFCBench's
    equivalent BPFP: each tensor's bits scaled by 32 / the bits of its original dtype, so that a half-precision
    tensor coded at b bits per point counts as 2b, over all points), with each tensor's own BPFP. A bitstream
    that differs from its sidecar's size or SHA-256 (altered after coding, so its reconstruction is not its
    decoding) raises CodecError naming it. `items`: the folders' sidecars when the caller has read them
    already (read_sidecars)."""
    rows = []
    for folder, record in read_sidecars(shard_dirs) if items is None else items:
        for tensor in record.tensors:
            if problem := bitstream_problem(folder, tensor):
                raise CodecError(problem)
        per_tensor = {t.name: 0 if t.absent else 8 * (folder / t.bitstream).stat().st_size for t in record.tensors}
        bits = sum(per_tensor.values())
        equivalent = sum(per_tensor[t.name] * 32 / dtype_bits(t.feature_dtype) for t in record.tensors)
        rows.append(
            {
                "sample_index": record.sample_index,
                "bits": bits,
                "feature_points": record.feature_points,
                "bpfp": bits / record.feature_points,
                "ebpfp": equivalent / record.feature_points,
                **{f"bits.{name}": value for name, value in per_tensor.items()},
                **{
                    f"bpfp.{t.name}": per_tensor[t.name] / t.feature_points if t.feature_points else math.nan
                    for t in record.tensors
                },  # fmt: skip
            }
        )
    return rows
