"""Truncate, quantize or normalize, and pack a task's features into frames (rule preprocess)."""

from lamofc_lib.joblog import log_to
from lamofc_lib.preprocess import preprocess_store

log = log_to(snakemake.log[0])
params = snakemake.params
preprocess_store(
    snakemake.input.features,
    snakemake.output.frames,
    params.task,
    params.truncation,
    params.input_kind,
    params.bit_depth,
)
log.info("frames of %s written (%s, truncation %s)", params.task, params.input_kind, params.truncation)
