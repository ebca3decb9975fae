"""Rate-accuracy figure of one task (rule plot_rate_accuracy)."""

import pandas as pd

from lamofc_lib.figures import plot_rate_accuracy
from lamofc_lib.joblog import log_to

log_to(snakemake.log[0])
plot_rate_accuracy(
    pd.read_csv(snakemake.input.table, dtype={"point": str}), snakemake.params.task, snakemake.output.png
)
