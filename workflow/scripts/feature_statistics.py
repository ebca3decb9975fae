"""Statistics, value subsample and DCT block of one task's features (rule feature_statistics)."""

from lamofc_lib import forkserver

forkserver.hand_over()  # in a local run: continue in a fork of a process that has the libraries imported

from lamofc_lib.feature_stats import write_statistics
from lamofc_lib.joblog import log_to

log = log_to(snakemake.log[0])
params = snakemake.params
write_statistics(
    snakemake.input.features, params.task, params.profiles, snakemake.output.table, snakemake.output.arrays
)
log.info("statistics of %s written", params.task)
