"""Train one model of a trained codec on training features (rule train): a task's, or the mix of a universal
codec's tasks."""

from lamofc_lib import forkserver

forkserver.hand_over()  # in a local run: continue in a fork of a process that has the libraries imported

import time

from lamofc_lib import determinism
from lamofc_lib.codecs import REGISTRY
from lamofc_lib.joblog import log_to
from lamofc_lib.preprocess import store_frames
from lamofc_lib.tasks.base import resolve_device

log = log_to(snakemake.log[0])
params = snakemake.params
determinism.configure_torch(snakemake.threads)
device = resolve_device(params.device)
codec = REGISTRY[params.codec]
frames, provenance = [], {"task": params.task, "device": device, "sources": []}
for source in params.sources:
    task = source["task"]
    features = snakemake.input[f"features_{task}"]
    calibration = snakemake.input.get(f"calibration_{task}")
    frames += store_frames(features, codec.input_kind, source["truncation"], calibration,
                           source.get("calibration_task", task))  # fmt: skip
    provenance["sources"].append({**source, "train_features": features, "calibration": calibration})
log.info("training %s %s %s at lambda %s on %d frames (%s) on %s", params.task, params.codec, params.sizes,
         params.point, len(frames), ", ".join(s["task"] for s in params.sources), device)  # fmt: skip
start = time.perf_counter()
output = snakemake.output
final = codec.train_point(
    frames, params.point, params.sizes, params.training, output.model, output.loss, device, provenance
)
log.info("trained in %.1f s; last held-out evaluation: %s", time.perf_counter() - start, final)
