"""End-to-end: the Snakemake workflow on the demo profile, reruns, config errors at start, and the paper-scale DAG."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]


def snakemake(workdir: Path, config: dict, *args: str) -> subprocess.CompletedProcess:
    config_path = workdir / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir)]
    cmd += ["--configfile", str(config_path), "--cores", "2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=1800)


def job_stats(output: str) -> dict[str, int]:
    """The 'Job stats' table Snakemake prints before running (or dry-running) jobs."""
    lines = output.splitlines()
    start = lines.index("Job stats:") + 3
    stats = {}
    for line in lines[start:]:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        stats[parts[0]] = int(parts[1])
    return stats


def demo_config() -> dict:
    return yaml.safe_load((REPO / "config" / "demo.yaml").read_text())


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One run of the demo profile with QPs 32 and 42, shared by the tests below."""
    workdir = tmp_path_factory.mktemp("demo")
    config = demo_config()
    config["codecs"]["vvenc"]["points"] = [32, 42]
    result = snakemake(workdir, config)
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir, config


@pytest.mark.e2e
def test_demo_writes_tables_and_figures(demo_run):
    workdir, config = demo_run
    table = pd.read_csv(workdir / "results/tables/rate_accuracy.csv", dtype={"point": str})
    assert list(table.columns) == ["task", "codec", "point", "bpfp", "mse", "metric", "value"]
    assert sorted(zip(table.task, table.codec, table.point, strict=True)) == [
        ("cls", "original", "original"),
        ("cls", "vvenc", "32"),
        ("cls", "vvenc", "42"),
        ("csr", "original", "original"),
        ("csr", "vvenc", "32"),
        ("csr", "vvenc", "42"),
    ]
    original = table[table.codec == "original"]
    assert (original.bpfp == 32).all() and (original.mse == 0).all()
    # Both demo tasks score against the uncompressed model's predictions, so the original scores 100 %.
    assert (original.value == 100).all()
    assert set(table.metric) == {"top1", "accuracy"}
    for task in ("cls", "csr"):
        coded = table[(table.task == task) & (table.codec == "vvenc")].set_index("point")
        assert coded.loc["42", "bpfp"] < coded.loc["32", "bpfp"]
        assert coded.loc["42", "mse"] > coded.loc["32", "mse"] > 0
        assert ((coded.value >= 0) & (coded.value <= 100)).all()
        assert (workdir / f"results/figures/{task}_rate_accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r2 = pd.read_csv(workdir / "results/tables/da_r2.csv")
    assert list(r2.columns) == ["task", "codec", "r2"]
    assert sorted(zip(r2.task, r2.codec, strict=True)) == [("cls", "vvenc"), ("csr", "vvenc")]
    markdown = (workdir / "results/tables/rate_accuracy.md").read_text()
    assert "uncompressed model's own predictions" in markdown


@pytest.mark.e2e
def test_demo_bpfp_is_bitstream_bytes_over_feature_points(demo_run):
    workdir, config = demo_run
    point_dir = workdir / "results/csr/vvenc/32"
    predictions = pd.read_csv(point_dir / "predictions.csv")
    bitstreams = sorted((point_dir / "bitstreams").glob("*/*.bin"))
    assert len(bitstreams) == config["tasks"]["csr"]["samples"] == len(predictions)
    from lamofc_lib.store import FeatureStore

    store = FeatureStore(workdir / "results/csr/features.zarr")
    expected = [8 * path.stat().st_size / store.points(i) for i, path in enumerate(bitstreams)]
    assert predictions["bpfp"].tolist() == pytest.approx(expected, rel=1e-12)
    table = pd.read_csv(workdir / "results/tables/rate_accuracy.csv", dtype={"point": str})
    row = table[(table.task == "csr") & (table.point == "32")]
    assert float(row.bpfp.iloc[0]) == pytest.approx(sum(expected) / len(expected), rel=1e-12)


@pytest.mark.e2e
def test_adding_a_qp_runs_only_its_jobs_and_unchanged_rerun_does_nothing(demo_run):
    workdir, config = demo_run
    kept = workdir / "results/cls/vvenc/32/scores.json"
    kept_mtime = kept.stat().st_mtime_ns
    config = {**config, "codecs": {"vvenc": {**config["codecs"]["vvenc"], "points": [22, 32, 42]}}}
    result = snakemake(workdir, config)
    assert result.returncode == 0, result.stderr[-4000:]
    assert job_stats(result.stderr) == {
        "all": 1,
        "da_r2": 1,
        "decode": 2,
        "encode": 2,
        "plot_rate_accuracy": 2,
        "rate_accuracy": 1,
        "score": 2,
    }
    assert kept.stat().st_mtime_ns == kept_mtime
    table = pd.read_csv(workdir / "results/tables/rate_accuracy.csv", dtype={"point": str})
    assert set(table[table.codec == "vvenc"].point) == {"22", "32", "42"}

    again = snakemake(workdir, config, "--dry-run")
    assert again.returncode == 0, again.stderr[-4000:]
    assert "Nothing to be done" in again.stdout + again.stderr


@pytest.mark.parametrize(
    "change, key",
    [
        (lambda c: c["run"]["tasks"].append("pose"), "run.tasks"),
        (lambda c: c["codecs"]["vvenc"]["points"].append(64), "codecs.vvenc.points"),
        (
            lambda c: c["tasks"]["cls"].update(source={"kind": "imagenet", "root": "no/such/folder"}),
            "tasks.cls.source.root",
        ),
    ],
    ids=["unknown-task", "qp-out-of-range", "missing-data-path"],
)
def test_bad_config_stops_at_start_naming_the_key(tmp_path, change, key):
    config = demo_config()
    change(config)
    result = snakemake(tmp_path, config, "--dry-run")
    assert result.returncode != 0
    assert f"LaMoFC configuration error: config key {key}" in result.stderr
    assert not (tmp_path / "results").exists()


def synthetic_sources(root: Path) -> dict[str, str]:
    """Stand-ins for the paper's data locations: an ImageNet folder tree, an ARC jsonl, a head checkpoint."""
    from PIL import Image

    for synset in ("n01440764", "n01443537"):
        (root / "imagenet" / synset).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(root / "imagenet" / synset / f"{synset}_0001.JPEG")
    question = {
        "id": "q1",
        "question": "Q?",
        "choices": {"text": list("abcd"), "label": list("ABCD")},
        "answerKey": "A",
    }
    (root / "arc.jsonl").write_text(json.dumps(question) + "\n")
    torch.save({"weight": torch.zeros(1000, 3072), "bias": torch.zeros(1000)}, root / "head.pth")
    return {"imagenet": str(root / "imagenet"), "arc": str(root / "arc.jsonl"), "head": str(root / "head.pth")}


def test_paper_config_builds_the_full_dag(tmp_path):
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    paths = synthetic_sources(tmp_path / "data")
    config["tasks"]["cls"]["source"]["root"] = paths["imagenet"]
    config["tasks"]["cls"]["head"]["checkpoint"] = paths["head"]
    config["tasks"]["csr"]["source"]["path"] = paths["arc"]
    result = snakemake(tmp_path, config, "--dry-run")
    assert result.returncode == 0, result.stderr[-4000:]
    # 500 samples at 100 per encoding job = 5 shards, x 5 QPs, for cls and csr.
    assert job_stats(result.stdout + result.stderr) == {
        "all": 1,
        "da_r2": 1,
        "decode": 10,
        "encode": 50,
        "extract": 2,
        "manifest": 2,
        "plot_rate_accuracy": 2,
        "preprocess": 2,
        "rate_accuracy": 1,
        "score": 10,
        "score_original": 2,
    }
