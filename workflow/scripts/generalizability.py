"""Tabulate cross-task Hyperprior runs (rule generalizability)."""

from lamofc_lib.analysis import generalizability_table, write_table
from lamofc_lib.io import read_json
from lamofc_lib.joblog import log_to

log = log_to(snakemake.log[0])
inp = snakemake.input
scores = [read_json(path) for path in [*inp.original, *inp.native, *inp.cross]]
table = generalizability_table(scores, [tuple(p) for p in snakemake.params.pairs])
write_table(table, snakemake.output.csv)
log.info("%d rows", len(table))
