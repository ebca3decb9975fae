"""Draw every model's training curve (rule plot_training)."""

from lamofc_lib import forkserver

forkserver.hand_over()  # in a local run: continue in a fork of a process that has the libraries imported

from lamofc_lib.figures import plot_loss
from lamofc_lib.joblog import log_to

log = log_to(snakemake.log[0])
for loss, png, title in zip(snakemake.input.loss, snakemake.output.png, snakemake.params.titles, strict=True):
    plot_loss(loss, png, title)
log.info("%d training curves drawn", len(snakemake.output.png))
