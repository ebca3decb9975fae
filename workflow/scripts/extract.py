"""Extract a task's split-point features and its head (rules extract, extract_train)."""

import tempfile
import time
from pathlib import Path

from lamofc_lib.io import atomic_path
from lamofc_lib.joblog import log_to
from lamofc_lib.sources import read_manifest
from lamofc_lib.tasks import get_task

log = log_to(snakemake.log[0])
p = snakemake.params
task = get_task(p.task, device=p.device, threads=snakemake.threads)
manifest = read_manifest(snakemake.input.manifest)
log.info("extracting %s features of %d samples on %s", p.task, len(manifest), task.device)
start = time.perf_counter()
with tempfile.TemporaryDirectory() as scratch:
    # extract_train keeps only the features; its head goes to a scratch file.
    head_out = snakemake.output.get("head") or Path(scratch) / "head.pt"
    with atomic_path(head_out) as head:
        task.extract(manifest, p.model, p.split, p.head, Path(snakemake.output.features), head)
log.info("extracted in %.1f s", time.perf_counter() - start)
