"""Truncate, quantize and pack a task's features for one codec (rule preprocess)."""

from lamofc_lib.codecs import REGISTRY
from lamofc_lib.coding import preprocess_store
from lamofc_lib.joblog import log_to

log = log_to(snakemake.log[0])
p = snakemake.params
kind = REGISTRY[p.codec].input_kind
preprocess_store(snakemake.input.features, snakemake.output.frames, p.task, p.truncation, kind, p.bit_depth)
log.info("frames of %s for %s written (%s, truncation %s)", p.task, p.codec, kind, p.truncation)
