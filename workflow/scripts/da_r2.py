"""Distortion-accuracy fits per task and codec (rule da_r2)."""

from lamofc_lib import forkserver

forkserver.hand_over()  # in a local run: continue in a fork of a process that has the libraries imported

import pandas as pd

from lamofc_lib.analysis import da_markdown, da_r2, write_markdown, write_table
from lamofc_lib.joblog import log_to

log = log_to(snakemake.log[0])
table = da_r2(pd.read_csv(snakemake.input.table, dtype={"point": str}))
write_table(table, snakemake.output.csv)
write_markdown(da_markdown(table), snakemake.output.markdown)
log.info("\n%s", table)
