"""Configuration, wildcard constraints and input functions shared by all rule files."""

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
    """A codec's settings without its operating points, so adding a point reruns only that point's jobs."""
    return {k: v for k, v in config["codecs"][codec].items() if k != "points"}


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
    shard=r"\d{3}",


def reference_inputs(wildcards):
    """The reference answers: the manifest's labels, or the uncompressed model's own predictions."""
    if task_settings(wildcards.task)["reference"] == "uncompressed":
        return {"reference": f"{RESULTS}/{wildcards.task}/original/predictions.csv"}
    return {}


def final_outputs():
    return [
        f"{RESULTS}/tables/rate_accuracy.csv",
        f"{RESULTS}/tables/rate_accuracy.md",
        f"{RESULTS}/tables/da_r2.csv",
        *[f"{RESULTS}/figures/{task}_rate_accuracy.png" for task in TASKS],
    ]
