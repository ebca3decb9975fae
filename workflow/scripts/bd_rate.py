"""BD-rate and BD-metric against the anchor codec (rule bd_rate)."""

from lamofc_lib import forkserver

forkserver.hand_over()  # in a local run: continue in a fork of a process that has the libraries imported

import pandas as pd

from lamofc_lib.analysis import bd_markdown, bd_table, write_markdown, write_table
from lamofc_lib.joblog import log_to

log = log_to(snakemake.log[0])
params = snakemake.params
table = bd_table(pd.read_csv(snakemake.input.table, dtype={"point": str}), params.anchor, params.method, params.points)
write_table(table, snakemake.output.csv)
write_markdown(bd_markdown(table, params.method), snakemake.output.markdown)
log.info("\n%s", table)
