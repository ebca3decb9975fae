"""Collect all scores into the rate-accuracy table (rule rate_accuracy)."""

from lamofc_lib.analysis import rate_accuracy_markdown, rate_accuracy_table, write_table
from lamofc_lib.io import atomic_path, read_json
from lamofc_lib.joblog import log_to

log = log_to(snakemake.log[0])
scores = [read_json(path) for path in [*snakemake.input.original, *snakemake.input.coded]]
table = rate_accuracy_table(scores)
write_table(table, snakemake.output.csv)
references = {s["task"]: s["reference"] for s in scores}
with atomic_path(snakemake.output.markdown) as tmp:
    tmp.write_text(rate_accuracy_markdown(table, references))
log.info("%d rows", len(table))
