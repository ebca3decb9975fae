"""Extract a task's split-point features (rules extract, extract_train)."""

from lamofc_lib import forkserver

forkserver.hand_over()  # in a local run: continue in a fork of a process that has the libraries imported

import time
from pathlib import Path

from lamofc_lib.joblog import log_to
from lamofc_lib.sources import read_manifest
from lamofc_lib.tasks import get_task

log = log_to(snakemake.log[0])
params = snakemake.params
task = get_task(params.task, device=params.device, threads=snakemake.threads, kind=params.kind)
manifest = read_manifest(snakemake.input.manifest)
log.info("extracting %s features of %d samples on %s", params.task, len(manifest), task.device)
start = time.perf_counter()
task.extract(manifest, params.model, params.split, Path(snakemake.output.features))
log.info("extracted in %.1f s", time.perf_counter() - start)
