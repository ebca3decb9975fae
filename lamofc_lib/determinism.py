"""One code path per CPU math library, so that a run's numbers do not depend on the host's processor.

Unpinned, each library picks its kernels from the processor it runs on: torch's vectorized ATen kernels from
the widest ISA the CPU has (AVX-512 on many Intel hosts, AVX2 on this project's AMD hosts), MKL a branch per
vendor and ISA, oneDNN JIT kernels whose blocking follows the ISA and the caches' sizes, OpenBLAS (numpy's and
scipy's) a kernel per core type, numpy its own loops per ISA. Each choice orders float sums differently, so the
features differ in their last bits between hosts, a floor-quantized code flips where a value crosses a bin edge,
and bitstreams, trained models and tables follow (docs/benchmark.md, "Determinism").

`run.reproducible` (default on) fixes every one of these choices to one AVX2 path, which any x86-64 host with
AVX2 and FMA runs:
- the environment below, which the libraries read when they load: the workflow sets it for the Snakemake
  process, so every job inherits it (local, in the fork server, or on a cluster node, where the job's own
  Snakemake reads the Snakefile again);
- torch's convolutions (and its other oneDNN paths) on its own kernels over MKL rather than oneDNN, whose
  blocking follows the caches' sizes and which has no reproducible mode (`configure_torch`, in each job process
  before it computes). oneDNN's own ISA variable is left alone: nothing in a pinned job runs on oneDNN, and
  tests/test_faults.py sets it to another ISA to show that;
- a fixed number of threads per job (the rule's), since torch's reductions split their sums by thread count.
`state()` says what a process runs on; results/provenance.json records it.
"""

from __future__ import annotations

import importlib
import importlib.abc
import os
import sys
from collections.abc import Mapping, MutableMapping
from pathlib import Path

# Read by each library when it loads (torch and numpy at import, MKL and oneDNN at their first call): a job
# must have them in its environment before it imports them.
PINNED = {
    # torch's vectorized CPU kernels (ATen's dispatch); unpinned: the widest ISA the CPU has
    "ATEN_CPU_CAPABILITY": "avx2",
    # MKL's conditional numerical reproducibility: its AVX2 branch on every processor (Intel's or another
    # vendor's), and (STRICT) BLAS results independent of the thread count
    "MKL_CBWR": "AVX2,STRICT",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    # the OpenBLAS of numpy and scipy (scikit-learn's K-means, scipy's linear algebra): the Haswell kernels
    "OPENBLAS_CORETYPE": "Haswell",
    # numpy's own loops: no AVX-512 groups (numpy's names since 2.4; unknown groups on a host are ignored)
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
}
# What an AVX2 path needs of the processor (/proc/cpuinfo's names).
NEEDS = ("avx2", "fma")
ENV = "LAMOFC_REPRODUCIBLE"  # "1" in the environment of a pinned run's jobs


class HostError(RuntimeError):
    """The host cannot run the pinned code path."""


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str] | None:
    """The first processor's flags (None where /proc/cpuinfo is not there to read)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def apply(enabled: bool, environ: MutableMapping[str, str] = os.environ, flags: set[str] | None = None) -> None:
    """Set (or, `enabled` false, leave as they are) the libraries' code paths in `environ`, for the processes
    started from it. A value already there for one of these variables is replaced: the run's numbers must not
    depend on a shell's settings. Raises HostError on a host that lacks what the pinned path needs."""
    if not enabled:
        environ[ENV] = "0"
        return
    flags = cpu_flags() if flags is None else flags
    missing = [need for need in NEEDS if flags is not None and need not in flags]
    if missing:
        raise HostError(
            f"run.reproducible: this processor lacks {', '.join(missing).upper()}, which the pinned AVX2 code path "
            "needs; run on a host with AVX2 and FMA, or set run.reproducible: false (its numbers then depend on "
            "the host)"
        )
    environ.update(PINNED)
    environ[ENV] = "1"


def pinned(environ: Mapping[str, str] = os.environ) -> bool:
    return environ.get(ENV) == "1"


def _optional(name: str):
    """A library this module reports on or configures where the job has it: the analysis environment (tables,
    provenance) has no torch, and every script imports this module through the fork server."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def configure_torch(threads: int | None) -> None:
    """In a job process, before it computes with torch: its threads and, in a pinned run, convolutions on
    torch's own kernels (im2col and MKL's gemm, reproducible under MKL_CBWR) rather than oneDNN's."""
    torch = _optional("torch")
    if torch is None:
        return
    if threads:
        torch.set_num_threads(int(threads))
    torch.backends.mkldnn.enabled = not pinned()


def configure_job() -> None:
    """In a job running in its own process: `configure_torch` as soon as the job imports torch (now, if it has),
    so that no script or library module needs to remember it. Its threads are already the job's: torch reads
    OMP_NUM_THREADS, which Snakemake sets to the rule's threads."""
    if "torch" in sys.modules:
        configure_torch(None)
    elif not any(isinstance(finder, _TorchHook) for finder in sys.meta_path):
        sys.meta_path.insert(0, _TorchHook())


class _TorchHook(importlib.abc.MetaPathFinder):
    """Finds nothing itself: when `import torch` is found by the finders after it, its module runs
    configure_torch once it has loaded, and the hook removes itself."""

    def find_spec(self, name, path=None, target=None):
        if name != "torch":
            return None
        sys.meta_path.remove(self)
        from importlib.machinery import PathFinder

        spec = PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_configure(module):
            exec_module(module)
            configure_torch(None)

        spec.loader.exec_module = exec_and_configure
        return spec


def summary() -> str:
    """One line on this process's code path, e.g. 'pinned: torch AVX2 kernels, no oneDNN, MKL_CBWR AVX2,STRICT'."""
    torch = _optional("torch")
    if torch is None:
        kernels = "no torch"
    else:
        onednn = "oneDNN" if torch.backends.mkldnn.enabled else "no oneDNN"
        kernels = f"torch {torch.backends.cpu.get_cpu_capability()} kernels, {onednn}"
    if not pinned():
        return f"not pinned: {kernels}"
    return f"pinned: {kernels}, MKL_CBWR {os.environ.get('MKL_CBWR')}, OpenBLAS {os.environ.get('OPENBLAS_CORETYPE')}"


def state() -> dict:
    """What this process computes on: whether the run is pinned, the variables above as set, torch's kernel
    ISA and whether it uses oneDNN (None where the job's environment has no torch), and the BLAS libraries
    loaded (threadpoolctl's view, where it is installed)."""
    torch, threadpoolctl = _optional("torch"), _optional("threadpoolctl")
    blas = None
    if threadpoolctl is not None:
        blas = sorted(
            f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture') or i.get('threading_layer')})"
            for i in threadpoolctl.threadpool_info()
            if i.get("user_api") == "blas"
        )
    return {
        "reproducible": pinned(),
        "environment": {name: os.environ.get(name) for name in PINNED},
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability() if torch else None,
        "torch_onednn": bool(torch.backends.mkldnn.enabled) if torch else None,
        "torch_threads": torch.get_num_threads() if torch else None,
        "blas": blas,
    }
