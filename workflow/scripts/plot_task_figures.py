"""Draw one task's rate-accuracy and D-A figures (rule plot_task_figures)."""

from lamofc_lib import forkserver

forkserver.hand_over()  # in a local run: continue in a fork of a process that has the libraries imported

import pandas as pd

from lamofc_lib.figures import plot_distortion_accuracy, plot_rate_accuracy
from lamofc_lib.joblog import log_to

log = log_to(snakemake.log[0])
out, task, label = snakemake.output, snakemake.params.task, snakemake.params.label
table = pd.read_csv(snakemake.input.table, dtype={"point": str})
plot_rate_accuracy(table, task, out.rate_accuracy, label)
plot_distortion_accuracy(table, pd.read_csv(snakemake.input.fits), task, out.distortion_accuracy, label)
log.info("rate-accuracy and D-A figures of %s drawn", task)
