"""Configuration, wildcard constraints and input functions shared by all rule files."""

import hashlib
import os
import re
import sys

REPO = Path(workflow.basedir)
# The workflow and its jobs import lamofc_lib from this checkout, whichever Python or environment runs them.
sys.path.insert(0, str(REPO))
os.environ.update(PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))

from lamofc_lib.config import ConfigError, points, shards, validate

try:
    config = validate(config)
except ConfigError as err:
    sys.exit(f"LaMoFC configuration error: {err}")

TASKS = config["run"]["tasks"]
CODECS = config["run"]["codecs"]
RESULTS = "results"


def task_settings(task):
    return config["tasks"][task]


def codec_settings(codec):
    """A codec's settings as its jobs' params: without its operating points (adding a point reruns only that
    point's jobs) and without threads and resources (they change how fast, not what is coded)."""
    return {k: v for k, v in config["codecs"][codec].items() if k not in ("points", "threads", "resources")}


def codec_resources(codec, job):
    return config["codecs"][codec]["resources"][job]


def codec_shards(task, codec):
    return shards(task_settings(task)["samples"], config["codecs"][codec]["samples_per_job"])


def coded_points():
    return [(t, c, p) for t in TASKS for c in CODECS for p in points(config, c, t)]


def _alternatives(values):
    return "|".join(re.escape(v) for v in sorted(set(values), key=len, reverse=True))


wildcard_constraints:
    task=_alternatives(TASKS),
    codec=_alternatives(CODECS),
    point=_alternatives(p for _, _, p in coded_points()),
    shard=r"\d+",


def reference_inputs(wildcards):
    """The reference answers: the manifest's labels, or the uncompressed model's own predictions."""
    if task_settings(wildcards.task)["reference"] == "uncompressed":
        return {"reference": f"{RESULTS}/{wildcards.task}/original/outputs.npz"}
    return {}


def bitstream_dirs(wildcards):
    """Every encoding job's folder of one task x codec x point."""
    return expand(
        f"{RESULTS}/{wildcards.task}/{wildcards.codec}/{wildcards.point}/bitstreams/{{shard}}",
        shard=codec_shards(wildcards.task, wildcards.codec),
    )


def head_checkpoint(wildcards):
    """The configured head checkpoint file as an input, so replacing it reruns extraction."""
    path = task_settings(wildcards.task).get("head", {}).get("checkpoint")
    return [path] if path else []


# The library modules each task's extraction runs (besides sources.py, store.py and io.py).
TASK_CODE = {
    "cls": ("tasks/base.py", "tasks/cls.py"),
    "seg": ("tasks/base.py", "tasks/cls.py", "tasks/dinov2.py", "tasks/dense.py", "heads.py"),
    "dpt": ("tasks/base.py", "tasks/cls.py", "tasks/dinov2.py", "tasks/dense.py", "heads.py"),
    "csr": ("tasks/base.py", "tasks/csr.py"),
    "tti": ("tasks/base.py", "tasks/tti.py"),
}


def code_version(*modules):
    """A hash of lamofc_lib modules (files or folders) a cached rule runs, so a library change reruns it and
    the between-workflow cache never serves results of older code."""
    digest = hashlib.sha256()
    for module in modules:
        path = REPO / "lamofc_lib" / module
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(file.relative_to(REPO).as_posix().encode() + file.read_bytes())
    return digest.hexdigest()[:16]


def final_outputs():
    return [
        f"{RESULTS}/tables/rate_accuracy.csv",
        f"{RESULTS}/tables/rate_accuracy.md",
        f"{RESULTS}/tables/da_r2.csv",
        *[f"{RESULTS}/figures/{task}_rate_accuracy.png" for task in TASKS],
    ]
