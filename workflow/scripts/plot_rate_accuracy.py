"""Draw every task's rate-accuracy and D-A figures, the accuracy-drop figure and the tensors' shares of the bits
(rule plot_rate_accuracy)."""

from lamofc_lib import forkserver

forkserver.hand_over()  # in a local run: continue in a fork of a process that has the libraries imported

import pandas as pd

from lamofc_lib.figures import plot_bit_shares, plot_distortion_accuracy, plot_rate_accuracy, plot_rate_accuracy_drop
from lamofc_lib.joblog import log_to

log = log_to(snakemake.log[0])
out = snakemake.output
table = pd.read_csv(snakemake.input.table, dtype={"point": str})
fits = pd.read_csv(snakemake.input.fits)
labels = snakemake.params.labels  # each task's metric label (Task.metric_label)
for k, task in enumerate(snakemake.params.tasks):
    plot_rate_accuracy(table, task, out.rate_accuracy[k], labels[task])
    plot_distortion_accuracy(table, fits, task, out.distortion_accuracy[k], labels[task])
plot_rate_accuracy_drop(table, out.drop, labels)
plot_bit_shares(pd.read_csv(snakemake.input.tensors, dtype={"point": str}), out.bit_shares)
log.info("figures of %d tasks written", len(snakemake.params.tasks))
