"""Draw the accuracy-drop figure of every task and the tensors' shares of the bits (rule plot_rate_accuracy)."""

from lamofc_lib import forkserver

forkserver.hand_over()  # in a local run: continue in a fork of a process that has the libraries imported

import pandas as pd

from lamofc_lib.figures import plot_bit_shares, plot_rate_accuracy_drop
from lamofc_lib.joblog import log_to

log = log_to(snakemake.log[0])
out = snakemake.output
table = pd.read_csv(snakemake.input.table, dtype={"point": str})
plot_rate_accuracy_drop(table, out.drop, snakemake.params.labels)  # each task's metric label (Task.metric_label)
plot_bit_shares(pd.read_csv(snakemake.input.tensors, dtype={"point": str}), out.bit_shares)
log.info("accuracy drop of %d results and the tensors' bit shares drawn", table["task"].nunique())
