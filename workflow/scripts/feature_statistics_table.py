"""All tasks' feature statistics in one table (rule feature_statistics_table)."""

from lamofc_lib import forkserver

forkserver.hand_over()  # in a local run: continue in a fork of a process that has the libraries imported

import pandas as pd

from lamofc_lib.analysis import feature_statistics_markdown, write_markdown, write_table
from lamofc_lib.joblog import log_to

log = log_to(snakemake.log[0])
table = pd.concat([pd.read_csv(path, dtype={"layer": str}) for path in snakemake.input.tables], ignore_index=True)
write_table(table, snakemake.output.csv)
write_markdown(feature_statistics_markdown(table), snakemake.output.markdown)
log.info("%d rows", len(table))
