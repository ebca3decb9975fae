"""Plot one model's training curve (rule plot_training)."""

from lamofc_lib.figures import plot_loss
from lamofc_lib.joblog import log_to

log = log_to(snakemake.log[0])
plot_loss(snakemake.input.loss, snakemake.output.png, snakemake.params.title)
