"""Select the source samples of a task (rule manifest)."""

from lamofc_lib.io import atomic_path
from lamofc_lib.joblog import log_to
from lamofc_lib.sources import build_manifest

log = log_to(snakemake.log[0])
table = build_manifest(snakemake.params.source, snakemake.params.samples)
with atomic_path(snakemake.output.manifest) as tmp:
    table.to_csv(tmp, index=False)
log.info("%d samples selected", len(table))
