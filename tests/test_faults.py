"""Runs that survive faults, and determinism: the workflow killed with SIGKILL in the middle of a demo subset (cls
with VVenC at two QPs and the Hyperprior at one lambda, trained by the workflow), unlocked and rerun, gives the
feature store, models, bitstreams and tables of an uninterrupted run in another folder, both from scratch; the
uninterrupted run without the fork server (each job in a process of its own), the other with it.

The uninterrupted run also stands for another host: its environment sets every math library's code-path
variable to another value than this host's own choice (SIMULATED_HOST), as another processor would make them
choose, and it runs on one core. With `run.reproducible` on, both runs give the same bytes; both also equal the
digests recorded in tests/data/subset.digests.json, so a host whose processor gives other numbers fails here.
With it off, the simulated host's features differ (the simulation changes the numbers, and the pins are what
undo it)."""

from __future__ import annotations

import base64
import json
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

from lamofc_lib import determinism
from lamofc_lib import digests as run_digests
from lamofc_lib.store import FeatureStore

REPO = Path(__file__).resolve().parents[1]
# A short training (40 steps) keeps the test quick; determinism does not depend on the length. Every training
# setting is the test's own, so that the recorded digests do not move when the demo's training changes.
TRAINING = {"steps": 40, "batch": 8, "crop": [64, 64], "lr": 0.002, "log_every": 10, "lr_patience": 50}
SUBSET = {
    "run": {"tasks": ["cls"], "codecs": ["vvenc", "hyperprior"]},
    "codecs": {
        "vvenc": {"points": [32, 42]},
        "hyperprior": {"points": {"cls": [0.003]}, "training": {"cls": TRAINING}},
    },
}
TABLES = ("rate_accuracy.csv", "selection.csv", "da_r2.csv", "bd_rate.csv", "feature_statistics.csv")
RECORDED = REPO / "tests/data/subset.digests.json"
# Another host's choices, each unlike this AVX2 host's own: torch's scalar kernels, MKL's compatible branch and
# AVX, oneDNN on SSE4.1 (not pinned: a pinned job runs nothing on oneDNN), OpenBLAS's Sandy Bridge kernels, numpy
# without its AVX2 loops.
SIMULATED_HOST = {
    "ATEN_CPU_CAPABILITY": "default",
    "MKL_CBWR": "COMPATIBLE",
    "MKL_ENABLE_INSTRUCTIONS": "AVX",
    "ONEDNN_MAX_CPU_ISA": "SSE41",
    "OPENBLAS_CORETYPE": "Sandybridge",
    "NPY_DISABLE_CPU_FEATURES": "X86_V3",
}


def command(
    workdir: Path, *args: str, fork_server: bool = True, reproducible: bool = True, cores: int = 2
) -> list[str]:
    overlay = workdir / "subset.yaml"
    subset = {**SUBSET, "run": {**SUBSET["run"], "fork_server": fork_server, "reproducible": reproducible}}
    overlay.write_text(yaml.safe_dump(subset))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--cores", str(cores)]
    return [*cmd, *args, "--configfile", str(REPO / "config" / "demo.yaml"), str(overlay)]


def run(workdir: Path, *args: str, env: dict | None = None, **settings) -> subprocess.CompletedProcess:
    result = subprocess.run(command(workdir, *args, **settings), capture_output=True, text=True, timeout=1200, env=env)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result


def simulated_host() -> dict[str, str]:
    return {**os.environ, **SIMULATED_HOST}


def ending(found: dict[str, str], suffix: str) -> dict[str, str]:
    """The digests of the files whose names end in `suffix`."""
    return {name: digest for name, digest in found.items() if name.endswith(suffix)}


def features(workdir: Path) -> list[np.ndarray]:
    store = FeatureStore(workdir / "results/cls/features.zarr")
    return [store.read(i) for i in range(len(store))]


@pytest.mark.e2e
def test_a_run_killed_in_the_middle_and_rerun_gives_the_results_of_an_uninterrupted_one(tmp_path):
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    reference.mkdir(), killed.mkdir()
    # The reference runs every job in a process of its own (no fork server), on one core, on the simulated other
    # host; the killed run in forks where the server is ready, on this host: the same results either way.
    run(reference, fork_server=False, cores=1, env=simulated_host())
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
    # Every store's values, bitstream, model and table of both runs (lamofc_lib.digests)
    resumed, whole = run_digests.digests(killed / "results"), run_digests.digests(reference / "results")
    # 8 cls samples at 2 QPs and 1 lambda; one trained model
    assert ending(resumed, ".bin") == ending(whole, ".bin") and len(ending(whole, ".bin")) == 8 * 3
    assert ending(resumed, "model.pt") == ending(whole, "model.pt") and len(ending(whole, "model.pt")) == 1
    for ours, theirs in zip(features(killed), features(reference), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    for name in TABLES:
        pd.testing.assert_frame_equal(
            pd.read_csv(killed / "results/tables" / name), pd.read_csv(reference / "results/tables" / name)
        )
    # Byte for byte: all of them, and the recorded ones.
    assert resumed == whole
    differences = run_digests.differences(json.loads(RECORDED.read_text()), resumed)
    assert not differences, (
        f"this host computes other numbers than {RECORDED.name} records: {differences}. If a change is meant to "
        f"change them, record the new ones: python -m lamofc_lib.digests <run>/results --write {RECORDED}"
    )
    assert determinism.PINNED.keys() <= SIMULATED_HOST.keys() - {"ONEDNN_MAX_CPU_ISA"}


@pytest.mark.e2e
def test_without_pins_the_simulated_host_extracts_other_features(tmp_path):
    """The control of the test above: the simulated host's settings do change the numbers when nothing pins them
    (its run's pins undo them); so its identical results are the pins' doing."""
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir(), there.mkdir()
    target = "results/cls/features.zarr"
    run(here, target, reproducible=False)
    run(there, target, reproducible=False, env=simulated_host())
    pairs = list(zip(features(here), features(there), strict=True))
    assert pairs and any(not np.array_equal(a, b) for a, b in pairs)
