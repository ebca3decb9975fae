"""The test processes compute on the workflow's pinned code paths (lamofc_lib/determinism.py), so that what unit
tests train, code and compare with torch is the same on any host with AVX2, as in the workflow's jobs. Set here,
before any test module imports torch, which reads them when it loads. numpy (and its OpenBLAS) is already loaded
by pytest's plugins at this point: its pins hold in the workflow's jobs, not in these processes."""

from lamofc_lib import determinism

try:
    determinism.apply(True)
except determinism.HostError:  # a host without AVX2: its unit tests run on the libraries' own paths
    determinism.apply(False)
determinism.configure_job()
