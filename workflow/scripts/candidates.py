"""List every candidate sample of a task's source (rules candidates, candidates_train)."""

from lamofc_lib.io import atomic_path
from lamofc_lib.joblog import log_to
from lamofc_lib.sources import build_candidates

log = log_to(snakemake.log[0])
table = build_candidates(snakemake.params.source)
with atomic_path(snakemake.output.candidates) as tmp:
    table.to_csv(tmp, index=False)
log.info("%d candidates", len(table))
