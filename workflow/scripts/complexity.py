"""Encoding and decoding times per sample and per million frame samples (rule complexity)."""

from lamofc_lib import forkserver

forkserver.hand_over()  # in a local run: continue in a fork of a process that has the libraries imported

from lamofc_lib.analysis import complexity_markdown, complexity_table, write_markdown, write_table
from lamofc_lib.joblog import log_to

log = log_to(snakemake.log[0])
table = complexity_table(snakemake.input.bitstreams)
write_table(table, snakemake.output.csv)
write_markdown(complexity_markdown(table), snakemake.output.markdown)
log.info("\n%s", table)
