"""Tabulate cross-task Hyperprior runs, long and in Table 6's layout (rule generalizability)."""

from lamofc_lib import forkserver

forkserver.hand_over()  # in a local run: continue in a fork of a process that has the libraries imported

from lamofc_lib.analysis import (
    generalizability_markdown,
    generalizability_matrix,
    generalizability_table,
    read_scores,
    write_markdown,
    write_table,
)
from lamofc_lib.joblog import log_to

log = log_to(snakemake.log[0])
inp = snakemake.input
scores = read_scores([*inp.original, *inp.native, *inp.cross])
table = generalizability_table(scores, [tuple(p) for p in snakemake.params.pairs])
matrix = generalizability_matrix(table)
write_table(table, snakemake.output.csv)
write_table(matrix, snakemake.output.matrix)
write_markdown(generalizability_markdown(matrix, table), snakemake.output.markdown)
log.info("%d rows", len(table))
