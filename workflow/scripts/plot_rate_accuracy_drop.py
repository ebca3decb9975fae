"""The accuracy drop of every task against BPFP on one figure (rule plot_rate_accuracy_drop)."""

import pandas as pd

from lamofc_lib.figures import plot_rate_accuracy_drop
from lamofc_lib.joblog import log_to

log = log_to(snakemake.log[0])
plot_rate_accuracy_drop(pd.read_csv(snakemake.input.table, dtype={"point": str}), snakemake.output.png)
log.info("written %s", snakemake.output.png)
