"""The pinned code paths (lamofc_lib/determinism.py): what the workflow sets in its jobs' environment, the refusal
of a host that cannot run them, and torch's oneDNN turned off in a job process as soon as it imports torch.
tests/test_faults.py runs the workflow under a simulated other host and compares the results byte for byte."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lamofc_lib import determinism

AVX2_HOST = {"sse4_2", "avx", "avx2", "fma", "f16c"}


def test_apply_sets_every_pinned_variable_over_a_shells_own_values():
    environ = {"ATEN_CPU_CAPABILITY": "avx512", "MKL_CBWR": "AUTO", "HOME": "/home/x"}
    determinism.apply(True, environ, flags=AVX2_HOST)
    assert environ == {**determinism.PINNED, determinism.ENV: "1", "HOME": "/home/x"}
    assert environ["ATEN_CPU_CAPABILITY"] == "avx2" and determinism.pinned(environ)


def test_apply_off_leaves_the_libraries_to_choose():
    environ = {"ATEN_CPU_CAPABILITY": "avx512"}
    determinism.apply(False, environ, flags=set())
    assert environ == {"ATEN_CPU_CAPABILITY": "avx512", determinism.ENV: "0"}
    assert not determinism.pinned(environ)


@pytest.mark.parametrize("lacking", ["avx2", "fma"])
def test_a_host_without_avx2_or_fma_is_refused_naming_what_it_lacks_and_the_setting(lacking):
    environ = {}
    with pytest.raises(determinism.HostError, match=rf"lacks {lacking.upper()}.*run.reproducible: false"):
        determinism.apply(True, environ, flags=AVX2_HOST - {lacking})
    assert environ == {}  # nothing half set


def test_cpu_flags_reads_the_first_processors_flags(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 fma\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert determinism.cpu_flags(cpuinfo) == {"fpu", "sse", "avx2", "fma"}
    assert determinism.cpu_flags(tmp_path / "missing") is None


JOB = """
import json, sys
from lamofc_lib import determinism
determinism.configure_job()
import torch
print(json.dumps({"onednn": torch.backends.mkldnn.enabled, "capability": torch.backends.cpu.get_cpu_capability(),
                  "hooks": sum(type(f).__name__ == "_TorchHook" for f in sys.meta_path)}))
"""


@pytest.mark.parametrize("reproducible", [True, False])
def test_a_job_process_turns_torchs_onednn_off_when_it_imports_torch_in_a_pinned_run(reproducible):
    environ = {k: v for k, v in os.environ.items() if k not in determinism.PINNED}
    determinism.apply(reproducible, environ)
    out = subprocess.run([sys.executable, "-c", JOB], env=environ, capture_output=True, text=True, check=True)
    state = json.loads(out.stdout)
    assert state["onednn"] is (not reproducible)
    assert state["hooks"] == 0  # the hook removed itself
    if reproducible:
        assert state["capability"] == "AVX2"
