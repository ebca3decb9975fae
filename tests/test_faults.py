"""Runs that survive faults, and determinism: the workflow killed with SIGKILL in the middle of a demo subset (cls
with VVenC at two QPs and the Hyperprior at one lambda, trained by the workflow), unlocked and rerun, gives the
feature store, models, bitstreams and tables of an uninterrupted run in another folder, both from scratch; the
uninterrupted run without the fork server (each job in a process of its own), the other with it."""

from __future__ import annotations

import base64
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from lamofc_lib.store import FeatureStore

REPO = Path(__file__).resolve().parents[1]
# A short training (40 steps) keeps the test quick; determinism does not depend on the length.
SUBSET = {
    "run": {"tasks": ["cls"], "codecs": ["vvenc", "hyperprior"]},
    "codecs": {
        "vvenc": {"points": [32, 42]},
        "hyperprior": {"points": {"cls": [0.003]}, "training": {"cls": {"steps": 40, "log_every": 10}}},
    },
}
TABLES = ("rate_accuracy.csv", "selection.csv", "da_r2.csv", "bd_rate.csv", "feature_statistics.csv")


def command(workdir: Path, *args: str, fork_server: bool = True) -> list[str]:
    overlay = workdir / "subset.yaml"
    subset = {**SUBSET, "run": {**SUBSET["run"], "fork_server": fork_server}}
    overlay.write_text(yaml.safe_dump(subset))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--cores", "2"]
    return [*cmd, "--configfile", str(REPO / "config" / "demo.yaml"), str(overlay), *args]


def run(workdir: Path, *args: str, fork_server: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        command(workdir, *args, fork_server=fork_server), capture_output=True, text=True, timeout=1200
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result


def digests(workdir: Path, pattern: str) -> dict[str, str]:
    results = workdir / "results"
    return {
        p.relative_to(results).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in results.rglob(pattern)
    }


def features(workdir: Path) -> list[np.ndarray]:
    store = FeatureStore(workdir / "results/cls/features.zarr")
    return [store.read(i) for i in range(len(store))]


@pytest.mark.e2e
def test_a_run_killed_in_the_middle_and_rerun_gives_the_results_of_an_uninterrupted_one(tmp_path):
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    reference.mkdir(), killed.mkdir()
    # The reference runs every job in a process of its own (no fork server), the killed run in forks where the
    # server is ready: the same results either way.
    run(reference, fork_server=False)
    # Kill the whole workflow (Snakemake and its running jobs) once Snakemake has recorded the first code job as
    # done (its metadata record of the bitstream folder): that job is then finished, and other jobs half done.
    workflow = subprocess.Popen(
        command(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    first = killed / "results/cls/vvenc/32/bitstreams/000"
    recorded = (
        killed / ".snakemake/metadata" / base64.urlsafe_b64encode(b"results/cls/vvenc/32/bitstreams/000").decode()
    )
    deadline = time.monotonic() + 900
    while not recorded.exists() and workflow.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert workflow.poll() is None, "the workflow finished before it could be killed"
    os.killpg(workflow.pid, signal.SIGKILL)
    workflow.wait()
    assert not (killed / "results/tables/rate_accuracy.csv").exists()
    # What the README says to do after a kill: unlock the folder, rerun what was incomplete.
    kept = first.stat().st_mtime_ns
    run(killed, "--unlock")
    run(killed, "--rerun-incomplete")
    assert first.stat().st_mtime_ns == kept  # the finished code job is kept, not redone
    # 8 cls samples at 2 QPs and 1 lambda; one trained model
    assert digests(killed, "*.bin") == digests(reference, "*.bin") and len(digests(reference, "*.bin")) == 8 * 3
    assert digests(killed, "model.pt") == digests(reference, "model.pt") and len(digests(reference, "model.pt")) == 1
    for ours, theirs in zip(features(killed), features(reference), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    for name in TABLES:
        pd.testing.assert_frame_equal(
            pd.read_csv(killed / "results/tables" / name), pd.read_csv(reference / "results/tables" / name)
        )
