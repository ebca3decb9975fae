"""The workflow on a real one-node SLURM cluster (Debian slurm-wlm and munge, started here and stopped after):
a demo subset run through `sbatch` with the project's SLURM profile gives the tables of a local run.

The daemons need root and the packages, which `bash envs/setup.sh --tests` installs; elsewhere the test is
skipped, unless LAMOFC_REQUIRE_SLURM is set (CI sets it), where it fails instead."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CONF = Path("/etc/slurm/slurm.conf")  # where srun inside a job looks: the job step plugin drops SLURM_CONF
MARK = "# one-node test cluster written by LaMoFC's tests/test_slurm.py"
TOOLS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol")
SUBSET = {"run": {"tasks": ["cls"], "codecs": ["vvenc"]}, "codecs": {"vvenc": {"points": [32, 42]}}}


def unavailable(reason: str):
    if os.environ.get("LAMOFC_REQUIRE_SLURM"):
        pytest.fail(f"SLURM test required (LAMOFC_REQUIRE_SLURM) but {reason}")
    pytest.skip(reason)


def wait_for(check, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise TimeoutError(f"{what} within {timeout:.0f} s")


def run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, **kwargs)


def slurm_conf(host: str, state: Path) -> str:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20 - 1024
    return f"""{MARK}
ClusterName=lamofc-test
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MinJobAge=600
ReturnToService=2
StateSaveLocation={state}/ctld
SlurmdSpoolDir={state}/spool
SlurmctldPidFile={state}/slurmctld.pid
SlurmdPidFile={state}/slurmd.pid
SlurmctldLogFile={state}/slurmctld.log
SlurmdLogFile={state}/slurmd.log
NodeName={host} CPUs={os.cpu_count()} RealMemory={memory} TmpDisk=100000 State=UNKNOWN
PartitionName=main Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A running one-node cluster whose partition is `main`, the profile's default."""
    missing = [tool for tool in TOOLS if not shutil.which(tool)]
    if missing:
        unavailable(f"the SLURM tools {missing} are not installed (bash envs/setup.sh --tests installs them)")
    if os.geteuid() != 0:
        unavailable("starting SLURM daemons needs root")
    if CONF.exists() and not CONF.read_text().startswith(MARK):
        unavailable(f"{CONF} belongs to a real cluster; this test does not touch it")
    state = tmp_path_factory.mktemp("slurm")
    for sub in ("ctld", "spool"):
        (state / sub).mkdir()
    host = socket.gethostname().split(".")[0]
    CONF.parent.mkdir(parents=True, exist_ok=True)
    CONF.write_text(slurm_conf(host, state))
    started = []
    try:
        if run("munge", "-n").returncode != 0:
            Path("/run/munge").mkdir(parents=True, exist_ok=True)
            shutil.chown("/run/munge", "munge", "munge")
            subprocess.run(["munged", "--force"], check=True, capture_output=True)
            started.append("munged")
        for daemon in ("slurmctld", "slurmd"):
            subprocess.run([daemon], check=True, capture_output=True)
            started.append(daemon)
        wait_for(lambda: run("sinfo", "-h", "-o", "%t").stdout.strip() == "idle", "the node did not become idle")
        yield {"state": state}
    finally:
        for daemon in reversed(started):
            run("pkill", "-x", daemon)
        CONF.unlink(missing_ok=True)


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    overlay = workdir / "subset.yaml"
    overlay.write_text(yaml.safe_dump(SUBSET))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir)]
    cmd += ["--configfile", str(REPO / "config" / "demo.yaml"), str(overlay), *args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, cwd=workdir)
    (workdir / "run.log").write_text(result.stdout + result.stderr)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result


TABLES = ("rate_accuracy.csv", "selection.csv", "da_r2.csv", "bd_rate.csv", "feature_statistics.csv")


def bitstream_digests(workdir: Path) -> dict[str, str]:
    import hashlib

    results = workdir / "results"
    return {
        p.relative_to(results).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in results.rglob("*.bin")
    }


@pytest.mark.e2e
def test_a_demo_subset_through_sbatch_gives_the_tables_of_a_local_run(cluster, tmp_path):
    local, remote = tmp_path / "local", tmp_path / "slurm"
    local.mkdir(), remote.mkdir()
    snakemake(local, "--cores", "2")
    result = snakemake(
        remote,
        "--workflow-profile",
        str(REPO / "workflow" / "profiles" / "slurm"),
        "--slurm-status-command",
        "squeue",  # no accounting database here
        "--slurm-no-account",
        "--slurm-init-seconds-before-status-checks",
        "1",
        "--cores",
        str(os.cpu_count()),  # the site setting: the CPUs of one node bound a group job
    )
    output = result.stdout + result.stderr
    # Two runs from scratch (extraction included) on other executors give the same bitstreams, byte for byte.
    digests = bitstream_digests(local)
    assert len(digests) == 2 * 8 and bitstream_digests(remote) == digests
    for name in TABLES:
        pd.testing.assert_frame_equal(
            pd.read_csv(remote / "results" / "tables" / name), pd.read_csv(local / "results" / "tables" / name)
        )
    # Every job went through sbatch: the SLURM job ids Snakemake reports are jobs slurmctld ran to completion.
    ids = re.findall(r"has been submitted with SLURM jobid (\d+)", output)
    assert len(ids) >= 8, output[-3000:]
    for job in ids:
        state = run("scontrol", "show", "job", job).stdout
        assert "JobState=COMPLETED" in state, state
    # Every job but the local target `all` went through sbatch, the two scoring jobs (the uncompressed features,
    # VVenC's points) as one group job.
    finished = int(re.search(r"(\d+) of (\d+) steps \(100%\) done", output).group(2))
    groups = re.findall(r"has been submitted with SLURM jobid \d+ \(log: \S+/group_scoring_", output)
    assert len(groups) == 1 and len(ids) == finished - 1 - 1, (len(ids), finished)
    print(f"SLURM: {len(ids)} sbatch jobs for {finished} Snakemake jobs")
