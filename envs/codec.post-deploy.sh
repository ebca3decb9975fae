#!/usr/bin/env bash
# Run by Snakemake inside the codec environment once it is created (snakemake --sdm conda). CompressAI 1.2.6
# builds from source against the environment's torch, so without build isolation (see envs/setup.sh).
set -euo pipefail
python -m pip install --quiet --disable-pip-version-check pybind11==3.1.0 setuptools==84.2.1 wheel
python -m pip install --quiet --disable-pip-version-check --no-build-isolation compressai==1.2.6
