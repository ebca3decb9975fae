"""The test processes compute on the workflow's pinned code paths (lamofc_lib/determinism.py), so that what unit
tests train, code and compare with torch is the same on any host with AVX2, as in the workflow's jobs. Set here,
before any test module imports torch, which reads them when it loads. numpy (and its OpenBLAS) is already loaded
by pytest's plugins at this point: its pins hold in the workflow's jobs, not in these processes."""

import copy
import fcntl
import os
import shutil
from pathlib import Path

import pytest
import yaml

from lamofc_lib import determinism

try:
    determinism.apply(True)
except determinism.HostError:  # a host without AVX2: its unit tests run on the libraries' own paths
    determinism.apply(False)
determinism.configure_job()


DEMO_CONFIG = Path(__file__).resolve().parents[1] / "config" / "demo.yaml"


@pytest.fixture(scope="session")
def smollm2_converted(tmp_path_factory) -> dict:
    """The demo's SmolLM2-135M-Instruct block (csr's), its GGUF file dequantized into a folder as rule
    convert_model does, once per test run: the test processes (xdist workers) share the folder, the first to ask
    converting it under a lock (each conversion took 20 to 45 s of CI, and three test files need it)."""
    from lamofc_lib.tasks.lamofc.csr import convert_gguf

    model = copy.deepcopy(yaml.safe_load(DEMO_CONFIG.read_text())["tasks"]["csr"]["model"])
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # this run's folder, every worker's
    folder = shared / "smollm2-converted"
    with open(shared / "smollm2-converted.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not folder.is_dir():
            partial = shared / "smollm2-converting"
            shutil.rmtree(partial, ignore_errors=True)
            convert_gguf(model, partial)
            partial.rename(folder)
    return {**model, "converted": str(folder)}
