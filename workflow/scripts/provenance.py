"""Provenance of the run's tables (rule provenance)."""

from lamofc_lib import forkserver

forkserver.hand_over()  # in a local run: continue in a fork of a process that has the libraries imported

from pathlib import Path

from lamofc_lib.analysis import read_scores
from lamofc_lib.io import write_json
from lamofc_lib.joblog import log_to
from lamofc_lib.provenance import provenance

log = log_to(snakemake.log[0])
heads = {Path(path).parent.name: path for path in snakemake.input.heads}
record = provenance(snakemake.params.config, read_scores(snakemake.input.scores), heads)
write_json(snakemake.output.json, record)
log.info("git %s, %d packages", record["git"], len(record["packages"]))
