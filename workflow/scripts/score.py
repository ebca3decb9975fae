"""Score uncompressed or reconstructed features with the task head (rules score_original, score)."""

from lamofc_lib.io import atomic_path, write_json
from lamofc_lib.joblog import log_to
from lamofc_lib.scoring import save_outputs, score_point

log = log_to(snakemake.log[0])
inputs, wildcards = snakemake.input, snakemake.wildcards
coded = hasattr(inputs, "reconstructed")
scores, table, outputs = score_point(
    snakemake.params.task,
    inputs.manifest,
    inputs.features,
    inputs.head,
    snakemake.params.reference,
    reconstructed_path=inputs.reconstructed if coded else None,
    bitstream_dirs=inputs.bitstreams if coded else (),
    reference_outputs=inputs.get("reference"),
    codec=wildcards.codec if coded else "original",
    point=wildcards.point if coded else "original",
    device=snakemake.params.device,
    threads=snakemake.threads,
    metric_options=snakemake.params.metric_options,
)
with atomic_path(snakemake.output.predictions) as tmp:
    table.to_csv(tmp, index=False)
if not coded:
    save_outputs(snakemake.output.outputs, table["sample_id"], outputs)
write_json(snakemake.output.scores, scores)
log.info("%s", scores)
