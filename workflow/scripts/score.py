"""Score every operating point of one codec on one task (rule score)."""

import pandas as pd

from lamofc_lib.coding import quantization_errors
from lamofc_lib.io import atomic_path, write_json
from lamofc_lib.joblog import log_to
from lamofc_lib.scoring import Scorer

log = log_to(snakemake.log[0])
inputs, params = snakemake.input, snakemake.params
scorer = Scorer(
    params.task,
    inputs.manifest,
    inputs.features,
    inputs.head,
    params.reference,
    reference_outputs=inputs.get("reference"),
    device=params.device,
    threads=snakemake.threads,
    metric_options=params.metric_options,
    quantization_errors=quantization_errors,
)
records, tables = [], []
for k, point in enumerate(params.points):
    shards = slice(k * len(params.shards), (k + 1) * len(params.shards))  # the input lists go point by point
    scores, table, _ = scorer.score(
        inputs.reconstructed[shards], inputs.bitstreams[shards], snakemake.wildcards.codec, point
    )
    records.append(scores)
    tables.append(table.assign(point=point))
    log.info("%s", scores)
with atomic_path(snakemake.output.predictions) as tmp:
    pd.concat(tables, ignore_index=True).to_csv(tmp, index=False)
write_json(snakemake.output.scores, records)
