"""Dequantize a GGUF model once into a plain transformers folder (rule convert_model)."""

from lamofc_lib import forkserver

forkserver.hand_over()  # in a local run: continue in a fork of a process that has the libraries imported

from pathlib import Path

from lamofc_lib.io import atomic_path
from lamofc_lib.joblog import log_to
from lamofc_lib.tasks.lamofc.csr import convert_gguf

log = log_to(snakemake.log[0])
with atomic_path(snakemake.output.model) as tmp:
    convert_gguf(snakemake.params.model, Path(tmp))
log.info("%s converted to %s", snakemake.params.model["gguf_file"], snakemake.output.model)
