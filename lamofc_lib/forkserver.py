"""Warm job processes for local runs: one server process imports torch, CompressAI and the library once, and each
workflow script job runs in a fresh fork of it instead of importing them itself.

Why: a demo job's own work is often shorter than its imports (`import compressai` 5.3 s, of which torch 1.5 s and
torch_geometric 2.6 s; the library's task and scoring modules about 0.7 s), and a run of 141 jobs paid them 141
times (`python -m lamofc_lib.benchmarks speed`: 315 of 832 job-seconds were start-up and imports).

How a job runs (Snakemake's local executor; rule `all`'s `onstart` hook calls `start`):
1. Snakemake starts the job's script as usual (`python .snakemake/scripts/tmp*.py`); its first statement,
   `forkserver.hand_over()`, connects to the server's Unix socket and sends its standard input, output and
   error (the file descriptors themselves), working directory, environment and `sys.path`.
2. The server forks a *monitor*, which forks the *worker*: the worker takes the job's descriptors, directory and
   environment, sets its threads to the job's (`OMP_NUM_THREADS`, which Snakemake sets to the job's `threads`)
   and torch's code paths (lamofc_lib.determinism), and runs the same script file as `__main__`; its
   `hand_over()` call then does nothing.
3. The monitor passes on the signals the job process receives (SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1,
   SIGUSR2), kills the worker if the job process dies, and reports the worker's exit status, with which the job
   process exits (a worker killed by a signal: the job process kills itself with the same signal). So Snakemake
   sees the job's exit code, output and log as if it had run the script itself.

The run's first job starts once the server is ready (about 6 s of imports). A job runs in its own process as
before whenever the server is off (`run.fork_server: false`), failed to start (its log says why), is gone, or
runs another Python environment (a rule's conda environment), copy of lamofc_lib or setting of the math
libraries' code paths (`run.reproducible`) than the job's; and on
clusters (the hook starts no server for non-local executors, and cluster jobs run Snakemake with `--no-hooks`).
The server stops with the workflow (`stop`, or when its parent process is gone).

What differs from a process of one's own: the job's Python modules were imported by the server, under the
server's environment (the workflow's, in a session of its own, with one thread for the numerical libraries), so
the warning filters, loggers and exit handlers those imports set up, and the string hash seed, are the server's;
a job's resource use (Snakemake's `benchmark:` files) covers the job process only, not the worker's memory and
CPU (the worker's peak memory is in the job log's last line, joblog.JobTime); numpy's and torch's global random
generators are reseeded from the OS in each worker, as in a fresh process (the library's own randomness is
seeded)."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from lamofc_lib import determinism, joblog

ENV = "LAMOFC_FORK_SERVER"  # the server's socket, in the environment of a local run's jobs
# What the workflow's jobs import: torch and CompressAI (torch_geometric with it), the store, coding and scoring
# modules, the table libraries; then what the run's tasks declare in `Task.preload` (their model classes:
# "module:attribute" for the lazily imported classes of transformers and diffusers), which `start` is given.
# About 6 s in all, once.
PRELOAD = (
    "torch",
    "torchvision.transforms",
    "compressai",
    "numpy",
    "pandas",
    "zarr",
    "threadpoolctl",
    "sklearn.cluster",
    "lamofc_lib.coding",
    "lamofc_lib.scoring",
    "lamofc_lib.codecs.hyperprior.codec",
    "matplotlib.pyplot",  # the figure jobs' (under MPLBACKEND Agg, which `serve` sets), 1 s each
    "seaborn",
)


# The server imports with one thread per numerical library (no thread pools exist when it forks); each worker
# then sets the job's threads.
THREAD_VARS = (
    "OMP_NUM_THREADS",
    "GOTO_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
_HEADER = struct.Struct("!I")
STARTUP_TIMEOUT = 120  # seconds for the server's imports (about 6 s here)
_BROKEN = (OSError, EOFError, ValueError)  # a connection closed, reset or garbled (json's errors are ValueErrors)

_worker = False  # this process is a worker: its script's hand_over() returns at once
_server: tuple[subprocess.Popen, Path] | None = None  # started by this (Snakemake) process


# --- The workflow's side: start and stop the server --------------------------------------------------------------


def start(enabled: bool, local: bool, log: str | Path, preload: Sequence[str] = ()) -> None:
    """Start the server for this run's jobs (the Snakefile's `onstart` hook) where the run executes jobs on this
    machine and `run.fork_server` is on; its output goes to `log`. Jobs find it through the environment. The
    server imports PRELOAD and then `preload` (the run's tasks' `Task.preload`)."""
    global _server
    if not enabled or not local or _server is not None:
        return
    folder = Path(tempfile.mkdtemp(prefix="lamofc-fork-"))  # short: a socket's path is limited to 107 bytes
    path = folder / "socket"
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    # torch.cuda.is_available() (which libraries may call on import) asks NVML, not the CUDA driver: a process
    # that has initialized CUDA cannot fork workers that use it.
    env = {**os.environ, **dict.fromkeys(THREAD_VARS, "1"), "PYTORCH_NVML_BASED_CUDA_CHECK": "1"}
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "lamofc_lib.forkserver", str(path), str(os.getpid()), *dict.fromkeys(preload)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C reaches a worker once, through its job process
        )
    _server = process, folder
    # Wait until it listens, so that no job imports what the server is importing (two on two cores, both slower).
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not _answers(path):
        if process.poll() is not None or time.monotonic() > deadline:
            print(
                f"lamofc: the fork server did not start (see {log}); jobs run in their own processes", file=sys.stderr
            )
            stop()
            return
        time.sleep(0.05)
    os.environ[ENV] = str(path)


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def stop() -> None:
    """Stop the server (the Snakefile's `onsuccess` and `onerror` hooks); its jobs have all ended by then."""
    global _server
    if _server is None:
        return
    process, folder = _server
    _server = None
    os.environ.pop(ENV, None)
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    _remove(folder)


def _remove(folder: Path) -> None:
    """Remove the server's folder and its socket."""
    for leftover in folder.iterdir():
        leftover.unlink()
    folder.rmdir()


def _identity() -> dict[str, str]:
    """What a job and the server must share for the server to run the job: the copy of lamofc_lib, the Python
    environment (a rule's conda environment is another) and the math libraries' code-path settings."""
    return {
        "library": str(Path(joblog.__file__).resolve().parent),
        "prefix": sys.prefix,
        # the libraries' code paths, which the server's libraries read when they loaded
        "paths": repr([os.environ.get(name) for name in (determinism.ENV, *determinism.PINNED)]),
    }


# --- The job's side ----------------------------------------------------------------------------------------------


def hand_over() -> None:
    """Run this Snakemake script job in a fork of the run's server, and exit as the fork exits. Returns, and the
    script runs here as usual, where there is no server or it does not take the job; inside a worker and outside
    Snakemake script jobs it returns at once."""
    path = os.environ.get(ENV)
    if _worker or not joblog.snakemake_job():
        return
    determinism.configure_job()  # in case it runs here
    if not path:
        return
    started = joblog.process_start()
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
    except OSError:
        return  # gone: run here
    request = {
        "script": sys.argv[0],  # the script Python runs: Snakemake's preamble, then the workflow script
        "argv": sys.argv,
        "cwd": os.getcwd(),
        "env": dict(os.environ),
        "path": sys.path,
        "started": started,
        **_identity(),
    }
    # Signals from here on go to the monitor, which passes them to the worker once it runs; if no worker runs
    # the job, they are raised here again.
    received = []

    def forward(number, frame):
        received.append(number)
        with contextlib.suppress(OSError):  # the monitor is gone: the job's exit follows
            sock.sendall(bytes([number]))

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    try:
        _send(sock, request, fds=[0, 1, 2])
        reply = _receive(sock)
    except _BROKEN:
        reply = {"refused": "no answer"}  # no worker runs the job (the monitor starts it after its answer)
    if "refused" in reply:
        sock.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for number in received:
            signal.raise_signal(number)
        return  # run here
    try:
        reply = _receive(sock)
    except _BROKEN as err:
        os.write(2, f"lamofc fork server: lost the worker running this job ({err})\n".encode())
        os._exit(1)
    status = reply["exit"]
    if status < 0:  # the worker was killed by a signal: so is this process
        if -status not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(-status, signal.SIG_DFL)
        os.kill(os.getpid(), -status)
        status = 128 - status
    os._exit(status)


# --- The server's side -------------------------------------------------------------------------------------------


def serve(path: str, parent: str, *preload: str) -> None:
    """The server process: import PRELOAD and `preload`, listen on `path` and fork a monitor per connection, until
    the workflow process `parent` is gone or this process is terminated. In a worker, it runs the job's script and
    exits."""
    os.environ.setdefault("MPLBACKEND", "Agg")  # figures are files: pyplot never looks for a display
    for name in (*PRELOAD, *preload):
        module, _, attribute = name.partition(":")
        loaded = importlib.import_module(module)
        if attribute:
            getattr(loaded, attribute)
    if sys.modules["torch"].cuda.is_initialized():
        sys.exit("lamofc fork server: CUDA was initialized while importing; jobs run in their own processes")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    print(f"lamofc fork server {os.getpid()}: ready on {path}", flush=True)
    request = None
    while request is None:
        _reap()
        if os.getppid() != int(parent):
            break
        if not select.select([listener], [], [], 1.0)[0]:
            continue
        conn, _ = listener.accept()
        sys.stdout.flush()
        sys.stderr.flush()
        if os.fork() == 0:  # the monitor
            listener.close()
            request = _monitor(conn)  # returns in the worker only
        else:
            conn.close()
    if request is None:  # the workflow is gone without stopping the server
        listener.close()
        with contextlib.suppress(OSError):
            _remove(Path(path).parent)
        return
    _run_script(request["script"])


def _reap() -> None:
    """Collect the monitors that have ended."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


def _monitor(conn: socket.socket) -> dict:
    """Fork the worker for the job on `conn`, pass signals on to it and report its exit status. Returns the job's
    request in the worker; the monitor itself ends here."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # signals come through the job process
    try:
        request, fds = _receive(conn, fds=3)
    except _BROKEN:  # a probe (`_answers`) or a job process that ended at once
        os._exit(0)
    if any(request.get(key) != value for key, value in _identity().items()):
        with contextlib.suppress(OSError):
            _send(conn, {"refused": "another environment or copy of lamofc_lib"})
        os._exit(0)
    # The worker waits for the go from this process, sent once the job process knows the worker's id: if this
    # process fails before (the job process gone, no pidfd), the worker ends unstarted and the job runs there.
    wait, go = os.pipe()
    pid = os.fork()
    if pid == 0:
        conn.close()
        os.close(go)
        if not os.read(wait, 1):
            os._exit(1)
        os.close(wait)
        _become_worker(request, fds)
        return request
    os.close(wait)
    for fd in fds:
        os.close(fd)
    try:
        pidfd = os.pidfd_open(pid)
        _send(conn, {"pid": pid})
        os.write(go, b"1")
    except BaseException as err:  # noqa: BLE001 - the monitor must never return into the server's loop
        _fail(err)
    os.close(go)
    try:
        watching = [conn, pidfd]
        while pidfd not in select.select(watching, [], [])[0]:
            try:
                received = conn.recv(64)
            except OSError:
                received = b""
            for number in received:
                signal.pidfd_send_signal(pidfd, number)
            if not received:  # the job process is gone: so is its worker
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                watching = [pidfd]
        status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        with contextlib.suppress(OSError):  # the job process may be gone
            _send(conn, {"exit": status})
    except BaseException as err:  # noqa: BLE001
        with contextlib.suppress(OSError):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        _fail(err)
    os._exit(0)


def _fail(err: BaseException) -> None:
    """End a monitor that failed, saying why in the server's log."""
    try:
        os.write(2, f"lamofc fork server monitor: {err!r}\n".encode())
    finally:
        os._exit(1)


def _become_worker(request: dict, fds: list[int]) -> None:
    """Turn this fork into the job's process: its descriptors, directory, environment, threads and start time."""
    global _worker
    _worker = True
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv[:] = request["argv"]
    sys.path[:] = request["path"]
    tempfile.tempdir = None  # TMPDIR is the job's
    joblog.set_process_start(request["started"])
    # The libraries the server imported (PRELOAD), looked up rather than imported: this runs in the server's
    # environment, whatever a script's own environment lists.
    threads = request["env"].get("OMP_NUM_THREADS")
    determinism.configure_torch(threads and int(threads))
    if threads:
        sys.modules["threadpoolctl"].threadpool_limits(int(threads))
    # A fresh process seeds numpy's and torch's global generators from the OS; the forks would share the server's.
    sys.modules["numpy"].random.seed()
    sys.modules["torch"].seed()


def _run_script(path: str) -> None:
    """Run the job's script as this process's `__main__`, as `python <path>` would; its uncaught exception or
    `sys.exit` ends the process as they would there."""
    import builtins
    import types

    main = types.ModuleType("__main__")
    main.__file__ = path
    main.__builtins__ = builtins
    sys.modules["__main__"] = main
    code = compile(Path(path).read_bytes(), path, "exec")
    exec(code, main.__dict__)


# --- Messages: a length, then JSON; the first message of a job carries its file descriptors ----------------------


def _send(sock: socket.socket, message: dict, fds: list[int] | None = None) -> None:
    data = json.dumps(message).encode()
    data = _HEADER.pack(len(data)) + data
    if fds:
        sent = socket.send_fds(sock, [data], fds)
        data = data[sent:]
    sock.sendall(data)


def _receive(sock: socket.socket, fds: int = 0):
    """One message (and, with `fds`, that many file descriptors sent with it), read to its end and no further."""
    received = []
    data = b""
    if fds:
        data, received, _, _ = socket.recv_fds(sock, _HEADER.size, fds)
        if len(received) != fds:
            raise ValueError(f"expected {fds} file descriptors, got {len(received)}")
    data += _exactly(sock, _HEADER.size - len(data))
    message = json.loads(_exactly(sock, _HEADER.unpack(data)[0]))
    return (message, received) if fds else message


def _exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError("connection closed")
        data += chunk
    return bytes(data)


if __name__ == "__main__":  # `start` runs `python -m lamofc_lib.forkserver SOCKET PARENT_PID [MODULE ...]`
    from lamofc_lib import forkserver  # this file as the module the scripts import, whose `_worker` they read

    forkserver.serve(*sys.argv[1:])
