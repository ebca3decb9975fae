"""Import a task's pre-extracted features (one .npy per sample) into the feature store (rule import_features)."""

from lamofc_lib import forkserver

forkserver.hand_over()  # in a local run: continue in a fork of a process that has the libraries imported

from pathlib import Path

from lamofc_lib.feature_files import import_features
from lamofc_lib.joblog import log_to
from lamofc_lib.sources import read_manifest
from lamofc_lib.tasks import get_task

log = log_to(snakemake.log[0])
params = snakemake.params
manifest = read_manifest(snakemake.input.manifest)
out = Path(snakemake.output.features)
import_features(get_task(params.task, kind=params.kind), params.folder, manifest, params.model, params.split, out)
log.info("imported %d %s features from %s", len(manifest), params.task, params.folder)
