"""A task's metric against feature MSE with the fitted lines (rule plot_distortion_accuracy)."""

import pandas as pd

from lamofc_lib.figures import plot_distortion_accuracy
from lamofc_lib.joblog import log_to

log = log_to(snakemake.log[0])
table = pd.read_csv(snakemake.input.table, dtype={"point": str})
plot_distortion_accuracy(table, pd.read_csv(snakemake.input.fits), snakemake.params.task, snakemake.output.png)
log.info("written %s", snakemake.output.png)
