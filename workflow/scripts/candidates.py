"""List every candidate sample of a task's source (rules candidates, candidates_train)."""

from lamofc_lib import forkserver

forkserver.hand_over()  # in a local run: continue in a fork of a process that has the libraries imported

from lamofc_lib.io import atomic_path
from lamofc_lib.joblog import log_to
from lamofc_lib.sources import build_candidates

log = log_to(snakemake.log[0])
table = build_candidates(snakemake.params.source)
with atomic_path(snakemake.output.candidates) as tmp:
    table.to_csv(tmp, index=False)
log.info("%d candidates", len(table))
