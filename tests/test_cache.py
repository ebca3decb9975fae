"""Snakemake's between-workflow cache: two working directories sharing one SNAKEMAKE_OUTPUT_CACHE extract the
features (and select the samples) once; the second takes them from the cache and gets the same tables."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SUBSET = {"run": {"tasks": ["cls"], "codecs": ["vvenc"]}, "codecs": {"vvenc": {"points": [42]}}}


def run_cached(workdir: Path, cache: Path) -> str:
    workdir.mkdir()
    overlay = workdir / "subset.yaml"
    overlay.write_text(yaml.safe_dump(SUBSET))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--cores", "2"]
    cmd += ["--configfile", str(REPO / "config" / "demo.yaml"), str(overlay), "--cache"]
    env = {**os.environ, "SNAKEMAKE_OUTPUT_CACHE": str(cache)}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stderr


@pytest.mark.e2e
def test_a_second_working_directory_takes_extraction_and_selection_from_the_cache(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    first, second = tmp_path / "first", tmp_path / "second"
    run_cached(first, cache)
    log = run_cached(second, cache)
    # The first directory ran the extraction script; the second did not (its log stays empty) and links
    # the cached store's files instead.
    assert "extracting cls features of 8 samples" in (first / "logs/cls/extract.log").read_text()
    assert (second / "logs/cls/extract.log").read_text() == ""
    assert "Symlinking output file results/cls/features.zarr/zarr.json from cache" in log
    assert "Symlinking output file results/cls/manifest.csv from cache" in log
    linked = sorted((second / "results/cls/features.zarr").iterdir())
    assert [p.name for p in linked if p.is_symlink()] == ["feature", "zarr.json"]
    assert all(Path(os.readlink(p)).is_relative_to(cache) for p in linked if p.is_symlink())
    for name in ("rate_accuracy.csv", "selection.csv"):
        pd.testing.assert_frame_equal(
            pd.read_csv(second / "results/tables" / name), pd.read_csv(first / "results/tables" / name)
        )
