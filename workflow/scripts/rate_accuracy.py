"""Collect all scores into the rate-accuracy, per-tensor, tensor-accuracy and selection tables (rule rate_accuracy)."""

from lamofc_lib import forkserver

forkserver.hand_over()  # in a local run: continue in a fork of a process that has the libraries imported

from lamofc_lib.analysis import (
    rate_accuracy_markdown,
    rate_accuracy_table,
    read_scores,
    selection_table,
    tensor_accuracy_table,
    tensor_table,
    write_markdown,
    write_table,
)
from lamofc_lib.io import read_json
from lamofc_lib.joblog import log_to

log = log_to(snakemake.log[0])
scores = read_scores([*snakemake.input.original, *snakemake.input.coded])
summaries = [read_json(path) for path in snakemake.input.selection]
table = rate_accuracy_table(scores, summaries)
write_table(table, snakemake.output.csv)
write_table(selection_table(summaries), snakemake.output.selection)
write_table(tensor_table(scores), snakemake.output.tensors)
groups = read_scores(snakemake.input.coded, coded_alone=True)
write_table(tensor_accuracy_table(groups, table), snakemake.output.tensor_accuracy)
references = {s["task"]: s["reference"] for s in scores}
selections = {s["task"]: s for s in summaries}
write_markdown(rate_accuracy_markdown(table, references, selections), snakemake.output.markdown)
log.info("%d rows", len(table))
