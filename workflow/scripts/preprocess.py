"""Truncate, quantize or normalize, and pack a task's features into frames (rule preprocess)."""

from lamofc_lib.coding import preprocess_store
from lamofc_lib.joblog import log_to

log = log_to(snakemake.log[0])
p = snakemake.params
preprocess_store(snakemake.input.features, snakemake.output.frames, p.task, p.truncation, p.input_kind, p.bit_depth)
log.info("frames of %s written (%s, truncation %s)", p.task, p.input_kind, p.truncation)
