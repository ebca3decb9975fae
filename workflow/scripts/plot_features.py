"""Draw a task's feature distribution and DCT figures (rule plot_features)."""

from lamofc_lib import forkserver

forkserver.hand_over()  # in a local run: continue in a fork of a process that has the libraries imported

import numpy as np
import pandas as pd

from lamofc_lib.figures import plot_dct_block, plot_feature_distribution
from lamofc_lib.joblog import log_to

log = log_to(snakemake.log[0])
inp, out, task = snakemake.input, snakemake.output, snakemake.params.task
stats = pd.read_csv(inp.table, dtype={"layer": str})
with np.load(inp.arrays) as arrays:
    values = {k.removeprefix("values/"): arrays[k] for k in arrays.files if k.startswith("values/")}
    dct = {k.removeprefix("dct/"): arrays[k] for k in arrays.files if k.startswith("dct/")}
plot_feature_distribution(stats, values, task, out.distribution)
plot_dct_block(dct, task, out.dct)
log.info("figures of %s written", task)
