"""Quantize (uniform: truncate first; or K-means) and pack a task's features into frames (rule preprocess)."""

from lamofc_lib import forkserver

forkserver.hand_over()  # in a local run: continue in a fork of a process that has the libraries imported

from lamofc_lib.joblog import log_to
from lamofc_lib.preprocess import preprocess_store

log = log_to(snakemake.log[0])
params = snakemake.params
calibration = snakemake.input.get("calibration")
preprocess_store(
    snakemake.input.features,
    snakemake.output.frames,
    params.task,
    params.truncation,
    params.input_kind,
    params.bit_depth,
    calibration,
    params.calibration_task,
)
what = f"K-means centres of {calibration}" if calibration else f"truncation {params.truncation}"
log.info("frames of %s written (%s, %s)", params.task, params.input_kind, what)
