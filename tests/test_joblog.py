"""Job logging (lamofc_lib.joblog): a Snakemake script job's output, log and exit status when it ends by the
fast exit, when it fails, and outside Snakemake."""

import subprocess
import sys
import textwrap
from pathlib import Path

from lamofc_lib.joblog import JobTime

REPO = Path(__file__).resolve().parent.parent

SCRIPT = """
import atexit
from pathlib import Path
atexit.register(lambda: Path(snakemake.output[0] + ".early").write_text("ran"))  # before the log: skipped
from lamofc_lib.joblog import log_to
log = log_to(snakemake.log[0])
atexit.register(lambda: Path(snakemake.output[0] + ".late").write_text("ran"))  # after: runs first, as usual
print("printed, still in the buffer")
log.info("logged")
Path(snakemake.output[0]).write_text("done")
if snakemake.wildcards.name == "bad":
    raise ValueError("this job fails")
if snakemake.wildcards.name == "stopped":
    import sys
    sys.exit("this job stops with a message")
"""

SNAKEFILE = """
rule job:
    output: "out/{name}.txt"
    log: "logs/{name}.log"
    script: "job.py"
"""


def run_snakemake(tmp_path: Path, target: str) -> subprocess.CompletedProcess:
    (tmp_path / "job.py").write_text(textwrap.dedent(SCRIPT))
    (tmp_path / "Snakefile").write_text(textwrap.dedent(SNAKEFILE))
    snakemake = Path(sys.executable).with_name("snakemake")
    env = {"PYTHONPATH": str(REPO), "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin"}
    return subprocess.run(
        [str(snakemake), "--cores", "1", target], cwd=tmp_path, capture_output=True, text=True, env=env
    )


def test_a_finished_job_skips_teardown_with_its_log_complete(tmp_path):
    result = run_snakemake(tmp_path, "out/good.txt")
    assert result.returncode == 0, result.stderr
    log = (tmp_path / "logs/good.log").read_text()
    assert "printed, still in the buffer" in log and "logged" in log
    assert log.rstrip().splitlines()[-1].split(" lamofc: ")[-1].startswith("lamofc job time: start-up")
    assert (tmp_path / "out/good.txt").read_text() == "done"
    assert (tmp_path / "out/good.txt.late").exists()  # registered after the log opened: ran
    assert not (tmp_path / "out/good.txt.early").exists()  # the interpreter's own exit: skipped


def test_a_failed_job_exits_as_usual(tmp_path):
    result = run_snakemake(tmp_path, "out/bad.txt")
    assert result.returncode != 0
    log = (tmp_path / "logs/bad.log").read_text()
    assert "ValueError: this job fails" in log and "lamofc job time" in log
    assert (tmp_path / "out/bad.txt.early").exists()  # every exit handler ran
    assert not (tmp_path / "out/bad.txt").exists()  # Snakemake removed the failed job's output


def test_a_job_calling_sys_exit_with_a_failure_fails(tmp_path):
    result = run_snakemake(tmp_path, "out/stopped.txt")
    assert result.returncode != 0
    assert "this job stops with a message" in (tmp_path / "logs/stopped.log").read_text()
    assert (tmp_path / "out/stopped.txt.early").exists()  # exited as usual


def test_outside_snakemake_exit_handlers_run(tmp_path):
    code = f"""
import atexit, sys
atexit.register(lambda: print("handler ran"))
from lamofc_lib.joblog import log_to
log_to({str(tmp_path / "x.log")!r})
sys.exit(3)
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 3
    assert "handler ran" in (tmp_path / "x.log").read_text()


def test_the_time_line_reads_back_and_a_line_without_memory_still_parses():
    timing = JobTime(1.5, 0.25, 3.0, True, 812.0)
    assert JobTime.parse(f"a job's output\n{timing.line()}\n") == timing
    older = "lamofc job time: start-up 1.000 s, imports 0.000 s, work 2.000 s, forked"  # logs of earlier runs
    assert JobTime.parse(older) == JobTime(1.0, 0.0, 2.0, True, 0.0)
