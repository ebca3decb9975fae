"""Score every operating point of one codec label on one task (rule score), or of every run.codecs label
(rule score_task): one scores file and one predictions file per label. With report.tensor_accuracy, the scores
file also holds, at the label's middle point, the metric with each of the task's tensor groups coded alone
(records with `coded`; Scorer.score_groups)."""

from lamofc_lib import forkserver

forkserver.hand_over()  # in a local run: continue in a fork of a process that has the libraries imported

import pandas as pd

from lamofc_lib.coding import quantization_measures
from lamofc_lib.io import atomic_path, write_json
from lamofc_lib.joblog import log_to
from lamofc_lib.scoring import Scorer

log = log_to(snakemake.log[0])
inputs, params, output = snakemake.input, snakemake.params, snakemake.output
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
    kind=params.kind,
    quantization_measures=quantization_measures,
)
reconstructed, bitstreams = inputs.reconstructed, inputs.bitstreams
expected = sum(len(entry["points"]) * entry["shards"] for entry in params.labels)
if len(reconstructed) != expected:
    raise ValueError(f"{len(reconstructed)} reconstructions for the {expected} shards of the labels' points")
start = 0  # the input lists go label by label, point by point, shard by shard
for entry, scores_file, predictions_file in zip(params.labels, output.scores, output.predictions, strict=True):
    records, tables = [], []
    for k, point in enumerate(entry["points"]):
        shards = slice(start, start + entry["shards"])
        start += entry["shards"]
        scores, table, _ = scorer.score(reconstructed[shards], bitstreams[shards], entry["label"], point)
        records.extend(scores)  # one per variant of the task (Task.variants)
        tables.append(table.assign(point=point))
        log.info("%s", scores)
        analysed = params.tensor_accuracy
        analysed = analysed is True or (isinstance(analysed, list) and entry["label"].split("@")[0] in analysed)
        if analysed and k == len(entry["points"]) // 2:  # the middle point (the upper of two)
            groups = scorer.score_groups(reconstructed[shards], bitstreams[shards], entry["label"], point)
            records.extend(groups)
            log.info("each tensor group coded alone: %s", [(g["coded"], g["value"]) for g in groups])
    # a run.codecs label that does not code the task (codecs.<codec>.tasks) has no points: empty files
    predictions = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=["sample_id", "point"])
    with atomic_path(predictions_file) as tmp:
        predictions.to_csv(tmp, index=False)
    write_json(scores_file, records)
