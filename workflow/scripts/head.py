"""Write a task's head file: the checked head checkpoint (or seeded random head) and the parts of the model
the head applies (rule head)."""

from lamofc_lib import forkserver

forkserver.hand_over()  # in a local run: continue in a fork of a process that has the libraries imported

from pathlib import Path

from lamofc_lib.io import atomic_path
from lamofc_lib.joblog import log_to
from lamofc_lib.tasks import get_task

log = log_to(snakemake.log[0])
params = snakemake.params
task = get_task(params.task, device=params.device, threads=snakemake.threads, kind=params.kind)
with atomic_path(snakemake.output.head) as tmp:
    task.write_head(params.model, params.split, params.head, Path(tmp))
log.info("head of %s written (checkpoint %s)", params.task, params.head.get("checkpoint") or "seeded random")
