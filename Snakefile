"""LaMoFC: feature coding benchmark for large models (see README.md)."""

from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")


if not config:

    configfile: Path(workflow.basedir) / "config" / "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/sources.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/training.smk"
include: "workflow/rules/coding.smk"
include: "workflow/rules/scoring.smk"
include: "workflow/rules/tables.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        final_outputs(),


wf.record_signatures(workflow.rules)


# Local runs: jobs run in forks of one process that has torch, CompressAI and the library imported (run.fork_server,
# lamofc_lib/forkserver.py); clusters run each job in its own process.
onstart:
    forkserver.start(
        config["run"]["fork_server"],
        workflow.local_exec,
        "logs/fork_server.log",
        [module for task in TASKS + trained_tasks(config) for module in task_class(task).preload],
    )


onsuccess:
    forkserver.stop()


onerror:
    forkserver.stop()
