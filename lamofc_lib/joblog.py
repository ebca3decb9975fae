"""Logging for workflow jobs: everything a job prints, its libraries and subprocesses included, goes to its log,
and the log's last line says where the job's time went (`JobClock`).

A Snakemake script job that ends without an uncaught exception leaves by `os._exit(0)` once its log is written
and flushed, skipping the interpreter's teardown of its modules: after `import compressai` that teardown takes
1.0 to 1.2 s (measured here: `python -c "import compressai"` 5.3 s, 4.2 s when it ends by `os._exit`; after
torch alone about 0.5 s), more than many demo jobs' own work. A job's outputs are complete before then (files
are written through `atomic_path` or closed by their writers); only the exit handlers registered before the
job's log was opened (the imports of the script's first lines) are skipped, and `logging` is shut down by hand.
A job that fails (an uncaught exception, or `sys.exit` with a failing status), and any process that is not a
Snakemake script job (tests, `python -m` tools), exits as usual."""

from __future__ import annotations

import atexit
import builtins
import logging
import os
import re
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

TIMING = re.compile(
    r"lamofc job time: start-up ([\d.]+) s, imports ([\d.]+) s, work ([\d.]+) s"
    r"(?:, peak RSS (\d+) MB)?(, forked)?"
)


@dataclass
class JobTime:
    """Where one job process's time went: `startup` from the process's start (the job process's, for a job a
    fork server's worker ran) to the script's first library call (the interpreter, Snakemake's preamble and the
    script's own imports), `imports` the modules imported after that (deferred imports inside the library),
    `work` the rest; and `peak_rss_mb`, the peak resident memory of the job's Python process (0 where not
    recorded).

    A job run in a fork shares the pages the fork server had loaded (its preloaded modules), and its peak RSS
    counts them, so it is about an upper bound of what the job needs in a process of its own; Snakemake's
    `benchmark:` files measure the process Snakemake started, which for such a job only waits for the fork.
    The programs a job runs (a codec's encoder and decoder) are not counted: Linux's peak for a finished child
    counts its parent's memory at the fork, so it says nothing of the program's own."""

    startup: float
    imports: float
    work: float
    forked: bool = False  # run by a fork server's worker (lamofc_lib.forkserver)
    peak_rss_mb: float = 0.0

    def line(self) -> str:
        times = f"start-up {self.startup:.3f} s, imports {self.imports:.3f} s, work {self.work:.3f} s"
        return f"lamofc job time: {times}, peak RSS {self.peak_rss_mb:.0f} MB{', forked' if self.forked else ''}"

    @classmethod
    def parse(cls, text: str) -> JobTime | None:
        """The last timing line of a job log, or None if it has none (a job that failed or predates it)."""
        found = TIMING.findall(text)
        if not found:
            return None
        startup, imports, work, peak, forked = found[-1]
        return cls(float(startup), float(imports), float(work), bool(forked), float(peak or 0))


class JobClock:
    """Times a job from inside: installed once the script's own imports are done, it counts the seconds spent
    importing modules from then on (a wrapper of `builtins.__import__`; nested imports counted once) and, at
    exit, logs a `JobTime` line that `python -m lamofc_lib.benchmarks speed` reads."""

    def __init__(self, logger: logging.Logger):
        self.logger = logger
        self.started = process_start()
        self.ready = time.time()
        self.imports = 0.0
        self._depth = 0
        self._import = builtins.__import__
        builtins.__import__ = self._timed_import
        self.failed = False
        self._excepthook, self._exit = sys.excepthook, sys.exit
        sys.excepthook, sys.exit = self._record_failure, self._record_exit
        atexit.register(self.report)

    def _record_failure(self, *exc_info) -> None:
        self.failed = True
        self._excepthook(*exc_info)

    def _record_exit(self, status=None) -> None:
        """`sys.exit` that remembers a failing status, so the fast exit does not turn it into 0."""
        if status not in (None, 0):
            self.failed = True
        self._exit(status)

    def _timed_import(self, *args, **kwargs):
        if self._depth:
            return self._import(*args, **kwargs)
        self._depth += 1
        start = time.perf_counter()
        try:
            return self._import(*args, **kwargs)
        finally:
            self.imports += time.perf_counter() - start
            self._depth -= 1

    def measure(self) -> JobTime:
        after = time.time() - self.ready
        startup = self.ready - self.started if self.started else 0.0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        work = max(after - self.imports, 0.0)
        return JobTime(startup, self.imports, work, _started is not None, peak)

    def report(self) -> None:
        self.logger.info("%s", self.measure().line())
        if not self.failed and snakemake_job():
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)


def snakemake_job() -> bool:
    """Whether this process runs a Snakemake `script:` (its `__main__` holds the `snakemake` object)."""
    iocontainers = sys.modules.get("snakemake.iocontainers")  # imported by the script's preamble
    main = sys.modules.get("__main__")
    return iocontainers is not None and isinstance(getattr(main, "snakemake", None), iocontainers.Snakemake)


_started: float | None = None  # set by lamofc_lib.forkserver in a worker: the start of the job's own process


def set_process_start(started: float | None) -> None:
    """Count this job's start-up from `started` (seconds since the epoch), not from this process's start: a
    fork server's worker runs a job that another process started."""
    global _started
    _started = started


def process_start() -> float | None:
    """When this job's process started (seconds since the epoch, to 10 ms): Linux's /proc (psutil's start time is
    off by up to a second, the boot time it adds being whole seconds); None elsewhere."""
    if _started is not None:
        return _started
    try:
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        return time.time() - (uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


def log_to(path: str | Path) -> logging.Logger:
    """Send this process's stdout, stderr (file descriptors 1 and 2) and logging to `path`, and time the job
    from here on (`JobClock`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    logger = logging.getLogger("lamofc")
    JobClock(logger)
    return logger
