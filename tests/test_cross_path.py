"""A learned codec's bitstream decoded on another host: the same frame, or a refusal naming the bitstream.

A learned codec's decoder must recompute the encoder's entropy-model scales to the last bit, and its frame
follows every float sum of the synthesis transform; both depend on the code paths the CPU math libraries pick
for the processor (torch's ATen kernels, oneDNN, MKL, OpenBLAS; lamofc_lib.determinism). A host's code path is
fixed when a process loads them, so each side runs in its own process, in its own environment:

- encoding (both codecs, one process) on the pinned path, as a workflow job runs: `determinism.apply(True)`
  and `configure_torch` before coding; `code_shard` (rule code) records the frame its own decoder gives
  (SHA-256);
- decoding, pinned, in an environment whose variables name another host's paths before `apply` replaces them:
  it must reproduce the recorded frame;
- decoding, unpinned, on another path (torch's scalar kernels, ATEN_CPU_CAPABILITY=default; convolutions on
  oneDNN): the process also decodes each bitstream raw (`codec.decode`), and `decode_point` must then either
  succeed where that frame is the recorded one or raise CodecError naming the first bitstream whose frame is
  not. That this path does change a frame (so that the refusal is exercised) is checked too.

The Hyperprior and ELIC (as the workflow feeds them: normalized frames and K-means codes) use tiny models
trained here for a few steps. The three processes start, and import torch and CompressAI, while this process
trains the models; each then reads its job from stdin and answers with JSON on stdout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from store_helpers import write_one

from lamofc_lib import determinism
from lamofc_lib.codecs.hyperprior import training
from lamofc_lib.preprocess import preprocess_store, store_frames
from lamofc_lib.quantizers.kmeans import calibrate_store

CODECS = ("hyperprior", "elic")
SAMPLES = 2

_flags = determinism.cpu_flags()
pytestmark = pytest.mark.skipif(
    _flags is not None and not set(determinism.NEEDS) <= _flags,
    reason="the pinned AVX2 code path needs a processor with AVX2 and FMA",
)

# Another host's own choices, in the environment before `apply` replaces them.
OTHER_HOST = {
    "ATEN_CPU_CAPABILITY": "default",
    "MKL_CBWR": "COMPATIBLE",
    "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
    "ONEDNN_MAX_CPU_ISA": "AVX",
    "OPENBLAS_CORETYPE": "Sandybridge",
}

# One coding process: imports the codecs' libraries under the environment it was started with, then reads
# its job from stdin and prints its result as one JSON line.
WORKER = """
import json, sys
from lamofc_lib import determinism
determinism.configure_torch(1)  # as a workflow job does before it computes
import lamofc_lib.codecs.hyperprior.model  # torch and CompressAI, before the job arrives
from lamofc_lib.bitstreams import read_sidecars
from lamofc_lib.codecs import CodecError, get_codec
from lamofc_lib.coding import code_shard, decode_point, frame_sha256

job = json.loads(sys.stdin.read())
result = {}
for name, c in job["codecs"].items():
    codec = get_codec(name, {}, threads=1, model=c["model"])
    if job["action"] == "encode":
        code_shard(c["frames"], c["bits"], c["bits"] + ".zarr", codec, c["point"], range(c["samples"]))
        result[name] = [t.decoded_sha256 for _, r in read_sidecars([c["bits"]]) for t in r.tensors]
        continue
    raw = []
    for folder, record in read_sidecars([c["bits"]]):
        for t in record.tensors:
            bitstream = folder / t.bitstream
            try:
                frame = codec.decode(bitstream, tuple(t.frame_shape), folder)
                raw.append({"bitstream": str(bitstream), "sha256": frame_sha256(frame)})
            except CodecError as err:  # no frame at all (the strings do not parse)
                raw.append({"bitstream": str(bitstream), "sha256": None, "error": str(err)})
    try:
        decode_point([c["bits"]], c["out"], codec, samples=c["samples"])
        error = None
    except CodecError as err:
        error = str(err)
    result[name] = {"raw": raw, "error": error}
state = determinism.state()
keys = ("reproducible", "environment", "torch_cpu_capability", "torch_onednn")
result["state"] = {key: state[key] for key in keys}
print(json.dumps(result))
"""


class Worker:
    """A Python process started now under `env` (its libraries' code paths fixed from then on), given its job
    later."""

    def __init__(self, env: dict[str, str], folder: Path, name: str):
        self.stdout, self.stderr = folder / f"{name}.out", folder / f"{name}.err"
        with self.stdout.open("w") as out, self.stderr.open("w") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-c", WORKER], env=env, stdin=subprocess.PIPE, stdout=out, stderr=err, text=True
            )

    def send(self, job: dict) -> None:
        try:
            self.process.stdin.write(json.dumps(job))
            self.process.stdin.close()
        except BrokenPipeError:
            pass  # it has failed already: result() shows why

    def result(self) -> dict:
        try:
            self.process.wait(timeout=300)
        finally:
            self.process.kill()  # only if it is still running (a failed test)
        assert self.process.returncode == 0, self.stderr.read_text()[-4000:]
        return json.loads(self.stdout.read_text().splitlines()[-1])


def environment(pinned: bool, before: dict[str, str]) -> dict[str, str]:
    """This process's environment without the pinned variables, plus `before`, then `determinism.apply`; the
    lamofc_lib this process tests first on the path."""
    env = {key: value for key, value in os.environ.items() if key not in determinism.PINNED}
    env.update(before)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(Path(determinism.__file__).parents[1]), env.get("PYTHONPATH")])
    )
    determinism.apply(pinned, env)
    return env


def make_inputs(folder: Path) -> dict[str, dict]:
    """A small feature store; per codec, its frame store and a model trained for a few steps on those frames."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    features = [np.cumsum(rng.normal(0, 1, (1, 1, 40, 100)), axis=-1).astype(np.float32) for _ in range(SAMPLES)]
    ids = [f"s{i}" for i in range(SAMPLES)]
    write_one(folder / "f.zarr", ids, [f.shape for f in features], features, {"task": "csr"}, packing="plane")
    settings = training.TrainSettings(batch=2, crop=(64, 64), steps=4, lr=1e-3, log_every=2, seed=1, validation=1)
    inputs = {}
    # The Hyperprior: truncated, normalized frames.
    truncation = [-12, 12]
    frames = store_frames(folder / "f.zarr", "normalized", truncation, None, "csr")
    training.train(frames, 0.05, 16, 24, settings, folder / "hyperprior.pt", folder / "hyperprior.csv")
    preprocess_store(folder / "f.zarr", folder / "hyperprior.zarr", "csr", truncation, "normalized", 10)
    inputs["hyperprior"] = {"model": folder / "hyperprior.pt", "frames": folder / "hyperprior.zarr", "point": "0.05"}
    # ELIC: K-means codes (test_elic's setup); its latent needs M > 128.
    calibrate_store(folder / "f.zarr", folder / "calibration", "csr", samples=SAMPLES)
    frames = store_frames(folder / "f.zarr", "normalized", None, folder / "calibration", "csr")
    training.train(frames, 0.01, 16, 144, settings, folder / "elic.pt", folder / "elic.csv", architecture="elic")
    preprocess_store(folder / "f.zarr", folder / "elic.zarr", "csr", None, "normalized", 10, folder / "calibration")
    inputs["elic"] = {"model": folder / "elic.pt", "frames": folder / "elic.zarr", "point": "0.01"}
    return inputs


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Both codecs encoded on the pinned path, then decoded on another host's pinned path ("pinned") and on an
    unpinned, other path ("other"), each in its own process."""
    folder = tmp_path_factory.mktemp("cross_path")
    workers = {
        "encoder": Worker(environment(True, {}), folder, "encoder"),
        "pinned": Worker(environment(True, OTHER_HOST), folder, "pinned"),
        "other": Worker(environment(False, {"ATEN_CPU_CAPABILITY": "default"}), folder, "other"),
    }
    try:
        inputs = make_inputs(folder)

        def job(action: str, out: str | None = None) -> dict:
            codecs = {
                name: {key: str(value) for key, value in c.items()}
                | {"bits": str(folder / f"{name}.bits"), "samples": SAMPLES}
                | ({"out": str(folder / f"{name}.{out}.zarr")} if out else {})
                for name, c in inputs.items()
            }
            return {"action": action, "codecs": codecs}

        workers["encoder"].send(job("encode"))
        results = {"encoder": workers["encoder"].result()}
        for path in ("pinned", "other"):  # the two decoders run side by side
            workers[path].send(job("decode", path))
        results |= {path: workers[path].result() for path in ("pinned", "other")}
    finally:
        for worker in workers.values():
            worker.process.kill()
            worker.process.wait()
    return results, folder


def test_the_encoder_runs_pinned_on_torchs_own_kernels_and_records_its_decoded_frames(runs):
    results, _ = runs
    encoder = results["encoder"]
    assert encoder["state"]["reproducible"] and encoder["state"]["torch_cpu_capability"] == "AVX2"
    assert encoder["state"]["torch_onednn"] is False
    for name in CODECS:
        assert len(encoder[name]) == SAMPLES and all(len(sha or "") == 64 for sha in encoder[name])


@pytest.mark.parametrize("codec", CODECS)
def test_a_pinned_decoder_reproduces_the_encoders_frames_whatever_its_hosts_own_settings(runs, codec):
    results, folder = runs
    decoder = results["pinned"]
    assert [r["sha256"] for r in decoder[codec]["raw"]] == results["encoder"][codec]
    assert decoder[codec]["error"] is None and (folder / f"{codec}.pinned.zarr").is_dir()
    # The other host's settings were replaced: the decoder ran on the encoder's path.
    assert decoder["state"]["environment"] == determinism.PINNED
    assert decoder["state"]["torch_cpu_capability"] == "AVX2" and decoder["state"]["torch_onednn"] is False


@pytest.mark.parametrize("codec", CODECS)
def test_an_unpinned_decoder_on_another_path_reproduces_the_frames_or_refuses_the_bitstream_by_name(runs, codec):
    results, folder = runs
    decoder = results["other"]
    assert not decoder["state"]["reproducible"] and decoder["state"]["torch_cpu_capability"] == "DEFAULT"
    assert decoder["state"]["torch_onednn"] is True  # configure_torch's choice in an unpinned run
    raw, recorded = decoder[codec]["raw"], results["encoder"][codec]
    differing = [r for r, sha in zip(raw, recorded, strict=True) if r["sha256"] != sha]
    if differing:
        # decode_point stops at the first sample whose frame is not the encoder's, names it, and writes nothing.
        first = differing[0]
        expected = first.get("error") or f"{first['bitstream']} decodes to another frame than its encoder's own"
        assert expected in (decoder[codec]["error"] or "")
        assert not (folder / f"{codec}.other.zarr").exists()
    else:
        assert decoder[codec]["error"] is None and (folder / f"{codec}.other.zarr").is_dir()


def test_the_other_path_does_change_a_decoded_frame_so_the_refusal_is_exercised(runs):
    results, _ = runs
    changed = {
        name: [r["sha256"] for r in results["other"][name]["raw"]] != results["encoder"][name] for name in CODECS
    }
    assert any(changed.values()), changed
