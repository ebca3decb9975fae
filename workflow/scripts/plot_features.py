"""A task's feature distribution and DCT figures (rule plot_features)."""

import numpy as np
import pandas as pd

from lamofc_lib.figures import plot_dct_block, plot_feature_distribution
from lamofc_lib.joblog import log_to

log = log_to(snakemake.log[0])
task = snakemake.params.task
stats = pd.read_csv(snakemake.input.table, dtype={"layer": str})
with np.load(snakemake.input.arrays) as arrays:
    values = {k.removeprefix("values/"): arrays[k] for k in arrays.files if k.startswith("values/")}
    dct = {k.removeprefix("dct/"): arrays[k] for k in arrays.files if k.startswith("dct/")}
plot_feature_distribution(stats, values, task, snakemake.output.distribution)
plot_dct_block(dct, task, snakemake.output.dct)
log.info("figures of %s written", task)
