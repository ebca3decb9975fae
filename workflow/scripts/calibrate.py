"""Fit a task's K-means centres, or import a user's mapping folder (rule calibrate)."""

from lamofc_lib import forkserver

forkserver.hand_over()  # in a local run: continue in a fork of a process that has the libraries imported

from lamofc_lib.joblog import log_to
from lamofc_lib.quantizers.kmeans import calibrate_store, import_mapping

log = log_to(snakemake.log[0])
params = snakemake.params
out = snakemake.output.mapping
if params.mapping:
    import_mapping(snakemake.input.features, params.mapping["file"], params.mapping["handler"], out, params.task)
    log.info(
        "K-means centres of %s imported from %s (%s)", params.task, params.mapping["file"], params.mapping["handler"]
    )
else:
    centres = calibrate_store(snakemake.input.features, out, params.task, params.samples)
    log.info("K-means centres of %s fitted on %d samples: tensors %s", params.task, params.samples, sorted(centres))
