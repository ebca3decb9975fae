"""The fork server (lamofc_lib.forkserver), through real Snakemake runs of a small workflow with the Snakefile's
hooks: jobs run in forks of the server with their own output, log, exit status, threads, temporary folder and
random seeds; failures, signals and a killed job process reach Snakemake as from a job of its own; the server is
gone after the run."""

import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from lamofc_lib.joblog import JobTime

REPO = Path(__file__).resolve().parent.parent

SNAKEFILE = """
from lamofc_lib import forkserver

onstart:
    forkserver.start(config.get("fork_server", True), workflow.local_exec, "logs/fork_server.log")

onsuccess:
    forkserver.stop()

onerror:
    forkserver.stop()

rule job:
    output: "out/{name}.txt"
    log: "logs/{name}.log"
    threads: 2
    resources: tmpdir=lambda wildcards: os.path.abspath(f"tmp/{wildcards.name}")
    script: "job.py"
"""

SCRIPT = """
from lamofc_lib import forkserver

forkserver.hand_over()

import os, sys, tempfile, time
preloaded = "torch" in sys.modules  # before this script imports anything heavy
from lamofc_lib.joblog import log_to
log = log_to(snakemake.log[0])
import numpy as np
import torch
print("printed by", os.getpid())
name = snakemake.wildcards.name
os.makedirs(os.environ["TMPDIR"], exist_ok=True)
Path = __import__("pathlib").Path
Path(snakemake.output[0] + ".pid").write_text(str(os.getpid()))
if name.startswith("sleep"):
    time.sleep(120)
if name == "bad":
    raise ValueError("this job fails")
if name == "stopped":
    sys.exit("this job stops with a message")
if name == "big":  # 320 MB written by the job
    hold = np.full(40_000_000, 2.0)
draw = f"{np.random.randint(2**31)} {torch.randint(2**31, (1,)).item()}"
lines = [preloaded, torch.get_num_threads(), tempfile.gettempdir(), draw, os.environ["OMP_NUM_THREADS"]]
Path(snakemake.output[0]).write_text("\\n".join(map(str, lines)))
"""


def write_workflow(tmp_path: Path) -> None:
    (tmp_path / "Snakefile").write_text(textwrap.dedent(SNAKEFILE))
    (tmp_path / "job.py").write_text(textwrap.dedent(SCRIPT))


def command(*targets: str, server: bool = True) -> list[str]:
    snakemake = Path(sys.executable).with_name("snakemake")
    return [str(snakemake), "--cores", "2", *targets, "--config", f"fork_server={server}"]


ENV = {"PYTHONPATH": str(REPO), "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin"}


def run_snakemake(tmp_path: Path, *targets: str, server: bool = True) -> subprocess.CompletedProcess:
    write_workflow(tmp_path)
    return subprocess.run(
        command(*targets, server=server), cwd=tmp_path, capture_output=True, text=True, env=ENV, timeout=600
    )


def server_of(tmp_path: Path) -> tuple[int, Path]:
    """The server's process id and socket, from its log."""
    found = re.search(r"fork server (\d+): ready on (\S+)", (tmp_path / "logs/fork_server.log").read_text())
    assert found, (tmp_path / "logs/fork_server.log").read_text()
    return int(found.group(1)), Path(found.group(2))


def assert_peak_memory_is_the_jobs(tmp_path: Path) -> None:
    """Job big's log gives the 320 MB (305 MiB) it wrote more peak RSS than job a's, both forked from the same
    server or both in processes of their own; and job a's peak is at least the resident memory of a process
    that imported what it did (torch, numpy), measured here by psutil."""
    small, big = (JobTime.parse((tmp_path / f"logs/{name}.log").read_text()) for name in ("a", "big"))
    assert 295 < big.peak_rss_mb - small.peak_rss_mb < 340, (small, big)
    probe = [sys.executable, "-c", "import psutil, numpy, torch; print(psutil.Process().memory_info().rss)"]
    imported = int(subprocess.run(probe, capture_output=True, text=True, check=True).stdout) / 2**20
    assert small.peak_rss_mb > 0.9 * imported, (small, imported)


def test_jobs_run_in_forks_with_their_own_threads_tmpdir_and_seeds(tmp_path):
    result = run_snakemake(tmp_path, "out/a.txt", "out/b.txt", "out/big.txt")
    assert result.returncode == 0, result.stderr[-3000:]
    assert_peak_memory_is_the_jobs(tmp_path)
    results = {}
    for name in "ab":
        preloaded, threads, tmp, draw, omp = (tmp_path / f"out/{name}.txt").read_text().split("\n")
        assert preloaded == "True"  # torch came with the fork
        assert (threads, omp) == ("2", "2")  # the rule's threads, as Snakemake sets them for its own processes
        assert tmp == str(tmp_path / "tmp" / name)  # the job's tmpdir resource
        results[name] = draw
        log = (tmp_path / f"logs/{name}.log").read_text()
        worker = (tmp_path / f"out/{name}.txt.pid").read_text()
        assert f"printed by {worker}" in log
        timing = JobTime.parse(log)
        assert timing.forked
    numpy_a, torch_a = results["a"].split()
    numpy_b, torch_b = results["b"].split()
    assert numpy_a != numpy_b and torch_a != torch_b  # numpy's and torch's generators reseeded in each fork
    # the server is gone, with its socket's folder
    pid, socket = server_of(tmp_path)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not socket.parent.exists()


def test_without_the_server_jobs_run_in_their_own_processes(tmp_path):
    result = run_snakemake(tmp_path, "out/a.txt", "out/big.txt", server=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_peak_memory_is_the_jobs(tmp_path)
    assert (tmp_path / "out/a.txt").read_text().split("\n")[0] == "False"
    assert not JobTime.parse((tmp_path / "logs/a.log").read_text()).forked
    assert not (tmp_path / "logs/fork_server.log").exists()


@pytest.mark.parametrize(
    "name, message", [("bad", "ValueError: this job fails"), ("stopped", "this job stops with a message")]
)
def test_a_failing_job_fails_with_its_message_in_its_log(tmp_path, name, message):
    result = run_snakemake(tmp_path, f"out/{name}.txt")
    assert result.returncode != 0
    log = (tmp_path / f"logs/{name}.log").read_text()
    assert message in log and JobTime.parse(log).forked
    assert not (tmp_path / f"out/{name}.txt").exists()
    assert (tmp_path / f"out/{name}.txt.pid").exists()  # it did run


def job_process(workflow: psutil.Process, pid_file: Path) -> tuple[psutil.Process, psutil.Process]:
    """The job process Snakemake started (the Python running the job's script) and the worker running the job."""
    deadline = time.monotonic() + 300
    while not pid_file.exists():
        assert time.monotonic() < deadline, "the job did not start"
        time.sleep(0.2)
    time.sleep(0.2)
    worker = psutil.Process(int(pid_file.read_text()))
    jobs = [p for p in workflow.children(recursive=True) if any(".snakemake/scripts/" in a for a in p.cmdline())]
    jobs = [p for p in jobs if p.pid != worker.pid and p.name().startswith("python")]
    assert len(jobs) == 1, jobs
    return jobs[0], worker


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_signal_to_the_job_process_ends_its_worker(tmp_path, sig):
    write_workflow(tmp_path)
    workflow = subprocess.Popen(
        command("out/sleep.txt"), cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        job, worker = job_process(psutil.Process(workflow.pid), tmp_path / "out/sleep.txt.pid")
        assert worker.ppid() != job.pid  # a fork of the server, not a child of the job process
        job.send_signal(sig)
        # the worker ends (SIGTERM passed on; SIGKILL: its monitor sees the job process gone), not after 120 s
        gone, _ = psutil.wait_procs([worker], timeout=30)
        assert gone
        assert workflow.wait(timeout=60) != 0  # Snakemake saw the job fail
    finally:
        workflow.kill()
        workflow.wait()
    assert not (tmp_path / "out/sleep.txt").exists()


def test_a_worker_killed_by_a_signal_kills_its_job_process_with_it(tmp_path):
    write_workflow(tmp_path)
    output = tmp_path / "snakemake.txt"
    with open(output, "w") as out:
        workflow = subprocess.Popen(command("out/sleep.txt"), cwd=tmp_path, env=ENV, stdout=out, stderr=out)
        try:
            job, worker = job_process(psutil.Process(workflow.pid), tmp_path / "out/sleep.txt.pid")
            worker.send_signal(signal.SIGKILL)  # as the kernel's out-of-memory killer would
            assert workflow.wait(timeout=60) != 0
        finally:
            workflow.kill()
            workflow.wait()
    # Snakemake reports the job process's death by the same signal
    assert "died with <Signals.SIGKILL: 9>" in output.read_text(), output.read_text()[-3000:]
