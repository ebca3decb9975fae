"""Score the uncompressed features with the task head (rule score_original)."""

from lamofc_lib import forkserver

forkserver.hand_over()  # in a local run: continue in a fork of a process that has the libraries imported

from lamofc_lib.io import atomic_path, write_json
from lamofc_lib.joblog import log_to
from lamofc_lib.scoring import Scorer, save_outputs

log = log_to(snakemake.log[0])
inputs, params = snakemake.input, snakemake.params
scorer = Scorer(
    params.task,
    inputs.manifest,
    inputs.features,
    inputs.head,
    params.reference,
    device=params.device,
    threads=snakemake.threads,
    metric_options=params.metric_options,
    kind=params.kind,
)
scores, table, outputs = scorer.score()
with atomic_path(snakemake.output.predictions) as tmp:
    table.to_csv(tmp, index=False)
save_outputs(snakemake.output.outputs, scorer.manifest["sample_id"], outputs)
write_json(snakemake.output.scores, scores if len(scores) > 1 else scores[0])  # a list: one per variant
log.info("%s", scores)
