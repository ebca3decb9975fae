"""The coding stage between the frames and the reconstructed features, one shard of samples at a time
(`code_shard`, rule code): encoding (frames -> bitstreams + sidecars) and decoding with post-processing
(bitstreams -> reconstructed features). The frames come from preprocess.preprocess_store."""

from __future__ import annotations

import hashlib
import logging
import math
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from lamofc_lib import determinism
from lamofc_lib.bitstreams import (
    Sidecar,
    TensorRecord,
    bitstream_name,
    bitstream_problem,
    read_sidecars,
    sidecar_name,
)
from lamofc_lib.codecs.base import Codec, CodecError
from lamofc_lib.distortion import pooled, squared_error
from lamofc_lib.io import atomic_path, file_sha256, write_json
from lamofc_lib.preprocess import TensorSpec, from_frame, to_frame
from lamofc_lib.quantizers import get_quantizer
from lamofc_lib.store import FeatureStore, TensorLayout, as_dtype, storage_dtype, write_store

log = logging.getLogger(__name__)


def shards(samples: int, samples_per_job: int) -> list[str]:
    """Names of the encoding jobs' sample groups: '000', '001', ..."""
    return [f"{i:03d}" for i in range(math.ceil(samples / samples_per_job))]


def shard_samples(shard: str, samples: int, samples_per_job: int) -> range:
    """Sample indices of one shard."""
    start = int(shard) * samples_per_job
    if not 0 <= start < samples:
        raise ValueError(f"shard '{shard}' is outside {samples} samples at {samples_per_job} per job")
    return range(start, min(start + samples_per_job, samples))


def code_shard(
    frames: str | Path, bitstreams: str | Path, reconstructed: str | Path, codec: Codec, point: str, indices: range
) -> list[Sidecar]:
    """Encode the frames `indices` at `point` into the folder `bitstreams` (encode_shard), then decode those
    bitstreams from the files, as a decoder elsewhere would, into the feature store `reconstructed`
    (decode_point); each output is written atomically. The sidecars record each sample's encoding and decoding
    seconds and, for a codec whose float decoding must be checked elsewhere (`Codec.verifies_decoding`), the
    SHA-256 of each frame this job's decoder gave (written after decoding). Returns the sidecars.

    One job encodes and decodes: decoding a shard costs less than a job's start-up, and a learned codec pays its
    library's import (CompressAI) once instead of twice. Each bitstream is decoded once: the frame the encoder's
    decoder gives is the reconstruction (decoding it twice, to record its digest and then to reconstruct, cost a
    learned codec's job a third of its work). A bitstream altered later is refused where its rate is read
    (bitstreams.rate) and by `python -m lamofc_lib.verify`."""
    records = encode_shard(frames, bitstreams, codec, point, indices)
    decoded = {t["sample_index"]: t for t in decode_point([bitstreams], reconstructed, codec, first=indices.start)}
    for record in records:
        done = decoded[record.sample_index]
        record.decode_seconds = round(done["decode_seconds"], 4)
        for tensor in record.tensors:
            tensor.decoded_sha256 = done["frames"].get(tensor.name)
        write_json(Path(bitstreams) / sidecar_name(record.sample_index), asdict(record))
    return records


def encode_shard(
    frames: str | Path, out_dir: str | Path, codec: Codec, point: str, indices: Iterable[int]
) -> list[Sidecar]:
    """Encode the frames `indices` of the frame store at `point` into the folder `out_dir` (written atomically).

    The folder holds one `NNNNN.<tensor>.bin` bitstream per sample and named tensor and one `NNNNN.json`
    sidecar per sample; the encoder's own output goes to this module's logger (the job log). Nothing is decoded
    here: `code_shard` records the decoded frames' digests from its decoding.
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
                **({"threads": codec.threads, "device": codec.device} if codec.verifies_decoding else {}),
            )
            write_json(tmp / sidecar_name(i), asdict(record))
            records.append(record)
    return records


def _encode_tensor(store: FeatureStore, i: int, name: str, codec: Codec, point: str, folder: Path) -> TensorRecord:
    frame = store.read(i, name)
    layout = store.layout(name)
    if not store.has(i, name):  # a tensor the sample does not have: nothing to code
        return TensorRecord(name=name, bitstream="", bytes=0, sha256="",
                            feature_shape=list(layout.attrs["feature_shapes"][i]),
                            feature_dtype=layout.attrs["feature_dtype"], feature_points=0,
                            frame_shape=list(frame.shape), packing=layout.attrs["packing"],
                            truncation=layout.attrs["truncation"], quantizer=layout.attrs["quantizer"],
                            centres=layout.attrs.get("centres"))  # fmt: skip
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
        centres=layout.attrs.get("centres"),
    )


def frame_sha256(frame: np.ndarray) -> str:
    """SHA-256 of a frame's values (C order, its dtype)."""
    return hashlib.sha256(np.ascontiguousarray(frame).tobytes()).hexdigest()


def _decoding_threads(items: Sequence[tuple[Path, Sidecar]], codec: Codec) -> None:
    """Decode with the threads the encoder used (a learned codec's float results depend on them)."""
    recorded = {r.threads for _, r in items if r.threads is not None}
    if len(recorded) > 1:
        raise CodecError(f"the sidecars of one point record different encoder threads {sorted(recorded)}")
    if recorded and codec.threads != next(iter(recorded)):
        log.info("decoding with the %d threads the encoder used (configured: %d)", next(iter(recorded)), codec.threads)
        codec.threads = next(iter(recorded))


def _log_tool_output(work: Path) -> None:
    for path in sorted(work.glob("*.log")):
        log.info("%s:\n%s", path.name, path.read_text())


def _checked_bitstream(folder: Path, tensor: TensorRecord, codec: Codec, record: Sidecar) -> Path:
    bitstream = folder / tensor.bitstream
    if record.codec != codec.name:
        raise CodecError(f"{bitstream} was coded by '{record.codec}', not '{codec.name}'")
    problem = bitstream_problem(folder, tensor)
    if problem:
        raise CodecError(problem)
    return bitstream


def decode_point(
    shard_dirs: Sequence[str | Path], out: str | Path, codec: Codec, samples: int | None = None, first: int = 0
) -> list[dict]:
    """Decode every bitstream in `shard_dirs` (samples first..first+samples-1 of a point, or as many as there
    are) and post-process it into the feature store `out`, each named tensor in its uncompressed dtype.

    Returns per sample its decoding time (`decode_seconds`) and, for a codec that `verifies_decoding`, the
    SHA-256 of each frame it decoded (`frames`, by tensor name). A bitstream that was altered since encoding
    (size or SHA-256 differ from its sidecar), fails to decode, or decodes to another frame than the one its
    sidecar records raises CodecError and leaves no output.
    """
    if isinstance(shard_dirs, str | Path):
        shard_dirs = [shard_dirs]
    items = read_sidecars(shard_dirs, samples, first=first)
    timings: list[dict] = []
    if not items:
        raise CodecError(f"no bitstreams in {', '.join(map(str, shard_dirs))}")
    first = items[0][1]
    if codec.verifies_decoding:
        _decoding_threads(items, codec)

    def reconstructions():
        for folder, record in items:
            start = time.perf_counter()
            sample, digests = {}, {}
            for tensor in record.tensors:
                if tensor.absent:
                    sample[tensor.name] = np.zeros(tensor.feature_shape, storage_dtype(tensor.feature_dtype))
                    continue
                bitstream = _checked_bitstream(folder, tensor, codec, record)
                with tempfile.TemporaryDirectory() as work:
                    frame = codec.decode(bitstream, tuple(tensor.frame_shape), Path(work))
                digest = frame_sha256(frame) if codec.verifies_decoding or tensor.decoded_sha256 else None
                if codec.verifies_decoding:
                    digests[tensor.name] = digest
                if tensor.decoded_sha256 and digest != tensor.decoded_sha256:
                    raise CodecError(
                        f"{bitstream} decodes to another frame than its encoder's own decoder gave (SHA-256 "
                        f"differs): encoded with {record.threads} threads on {record.device}, decoded with "
                        f"{codec.threads} on {codec.device} ({determinism.summary()}); its scores would be wrong. "
                        "Decode on the encoder's code path (run.reproducible, docs/benchmark.md)"
                    )
                centres = tuple(tensor.centres) if tensor.centres is not None else None
                spec = TensorSpec(tensor.packing, tensor.truncation, tensor.quantizer, centres)
                x = from_frame(frame, spec, tensor.feature_shape, record.input_kind, record.bit_depth)
                sample[tensor.name] = as_dtype(x, tensor.feature_dtype)
            timings.append(
                {"sample_index": record.sample_index, "decode_seconds": time.perf_counter() - start, "frames": digests}
            )
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


def zero_order_entropy(symbols: np.ndarray) -> float:
    """The empirical zero-order entropy of integer symbols, in bits per symbol: the rate of a memoryless entropy
    coder that knows their histogram (scipy.stats.entropy of the symbol counts, base 2); 0 for none."""
    from scipy.stats import entropy

    counts = np.bincount(np.asarray(symbols, dtype=np.int64).ravel())
    return float(entropy(counts, base=2)) if counts.sum() else 0.0


def quantization_measures(
    original: FeatureStore, sidecars: Sequence[Sidecar], cache: dict | None = None
) -> pd.DataFrame:
    """Per sample, what the quantization alone does, no codec:
    - the quantization MSE: the original against its quantization (each value's K-means centre, or the uniform
      quantizer's dequantized codes or de-normalized truncation, cast back to the tensor's dtype), pooled over
      the sample's tensors (`quant_mse`) and per tensor (`quant_mse.<tensor>`);
    - the rate floor of a memoryless coder: the zero-order entropy of the quantizer's integer symbols (the
      K-means codes, or the B-bit codes of the truncated values; `Quantizer.symbols`) in bits per feature point,
      per tensor (`entropy.<tensor>`, the entropy of the sample's symbols of that tensor) and pooled as BPFP is
      (`entropy`: the tensors' entropies times their points, over all points).

    The quantization is the one each sidecar's tensor records give, as decoding reads it (scoring.Scorer takes
    this function for coded points). `cache`, a dict kept across calls, holds each sample and tensor's values
    by its quantization, so the points of one codec (one quantization) compute them once."""
    cache = {} if cache is None else cache
    rows = []
    for i, record in enumerate(sidecars):
        squared, bits, points = {}, {}, {}
        for tensor in record.tensors:
            centres = tuple(tensor.centres) if tensor.centres is not None else None
            spec = TensorSpec(tensor.packing, tensor.truncation, tensor.quantizer, centres)
            key = (i, tensor.name, repr(spec), record.input_kind, record.bit_depth)
            if key not in cache:
                x = original.read(i, tensor.name)
                frame = to_frame(x, spec, record.input_kind, record.bit_depth)
                quantized = from_frame(frame, spec, x.shape, record.input_kind, record.bit_depth)
                symbols = get_quantizer(spec.quantizer).symbols(x, spec, record.bit_depth)
                cache[key] = (squared_error(x, as_dtype(quantized, tensor.feature_dtype)), zero_order_entropy(symbols))
            squared[tensor.name], entropy = cache[key]
            points[tensor.name] = tensor.feature_points
            bits[tensor.name] = entropy * tensor.feature_points
        rows.append(pooled(squared, points, "quant_mse") | pooled(bits, points, "entropy"))
    return pd.DataFrame(rows)
