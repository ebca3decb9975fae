"""Train one model of a trained codec on a task's training features (rule train)."""

import time

import torch

from lamofc_lib.codecs import REGISTRY
from lamofc_lib.joblog import log_to
from lamofc_lib.preprocess import store_frames
from lamofc_lib.tasks.base import resolve_device

log = log_to(snakemake.log[0])
params = snakemake.params
torch.set_num_threads(snakemake.threads)
device = resolve_device(params.device)
calibration = snakemake.input.get("calibration")
codec = REGISTRY[params.codec]
frames = store_frames(snakemake.input.features, codec.input_kind, params.truncation, calibration, params.task)
log.info("training %s %s %s at lambda %s on %s", params.task, params.codec, params.sizes, params.point, device)
start = time.perf_counter()
provenance = {
    "task": params.task,
    "truncation": params.truncation,
    "calibration": calibration,
    "train_features": snakemake.input.features,
    "device": device,
}
final = codec.train_point(
    frames,
    params.point,
    params.sizes,
    params.training,
    snakemake.output.model,
    snakemake.output.loss,
    device,
    provenance,
)
log.info("trained in %.1f s; last held-out evaluation: %s", time.perf_counter() - start, final)
