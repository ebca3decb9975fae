"""Train one Hyperprior model on a task's training features (rule train_hyperprior)."""

import time

import torch

from lamofc_lib.codecs.hyperprior.training import TrainSettings, train, training_frames
from lamofc_lib.joblog import log_to
from lamofc_lib.tasks.base import resolve_device

log = log_to(snakemake.log[0])
params = snakemake.params
torch.set_num_threads(snakemake.threads)
device = resolve_device(params.device)
calibration = snakemake.input.get("calibration")
frames = training_frames(snakemake.input.features, params.truncation, calibration, params.task)
log.info("training %s hyperprior N=%d M=%d at lambda %g on %s", params.task, params.N, params.M, params.lam, device)
start = time.perf_counter()
provenance = {
    "task": params.task,
    "truncation": params.truncation,
    "calibration": calibration,
    "train_features": snakemake.input.features,
    "device": device,
}
final = train(
    frames,
    params.lam,
    params.N,
    params.M,
    TrainSettings.from_config(params.training),
    snakemake.output.model,
    snakemake.output.loss,
    device=device,
    provenance=provenance,
)
log.info("trained in %.1f s; last held-out evaluation: %s", time.perf_counter() - start, final)
