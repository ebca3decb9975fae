"""Select a task's samples from its candidates; write the manifest and the selection report (rules select,
select_train)."""

from lamofc_lib import forkserver

forkserver.hand_over()  # in a local run: continue in a fork of a process that has the libraries imported

from lamofc_lib.io import atomic_path, write_json
from lamofc_lib.joblog import log_to
from lamofc_lib.selection import run_selection
from lamofc_lib.sources import read_manifest

log = log_to(snakemake.log[0])
params = snakemake.params
candidates = read_manifest(snakemake.input.candidates)
selection = run_selection(
    params.task,
    candidates,
    params.settings,
    model=params.model,
    split=params.split,
    head=snakemake.input.get("head"),
    device=params.device,
    threads=snakemake.threads,
    kind=params.kind,
)
with atomic_path(snakemake.output.report) as tmp:
    selection.report.to_csv(tmp, index=False)
summary = selection.summary(params.task, params.policy, params.kind)
write_json(snakemake.output.summary, summary)
with atomic_path(snakemake.output.manifest) as tmp:
    selection.manifest.to_csv(tmp, index=False)
log.info("%s", summary)
