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
    tasks = ("cls", "csr", "dpt", "seg", "tti")
    assert sorted(zip(table.task, table.codec, table.point, strict=True)) == [
        (task, codec, point)
        for task in tasks
        for codec, point in [("original", "original"), ("vvenc", "32"), ("vvenc", "42")]
    ]
    original = table[table.codec == "original"].set_index("task")
    assert (original.bpfp == 32).all() and (original.mse == 0).all()
    # Every demo task scores against the uncompressed model's outputs: 100 % agreement, 0 m depth error, FID 0.
    assert original.value.to_dict() == pytest.approx({"cls": 100, "csr": 100, "dpt": 0, "seg": 100, "tti": 0}, abs=1e-6)
    assert dict(zip(table.task, table.metric, strict=True)) == {
        "cls": "top1",
        "csr": "accuracy",
        "dpt": "rmse",
        "seg": "miou",
        "tti": "fid",
    }
    for task in tasks:
        coded = table[(table.task == task) & (table.codec == "vvenc")].set_index("point")
        assert coded.loc["42", "bpfp"] < coded.loc["32", "bpfp"]
        assert coded.loc["42", "mse"] > coded.loc["32", "mse"] > 0
        assert (coded.value >= 0).all()
        if task in ("dpt", "tti"):  # depth error and FID grow as the rate falls
            assert coded.loc["42", "value"] > coded.loc["32", "value"] > 0
        else:
            assert (coded.value <= 100).all()
        assert (workdir / f"results/figures/{task}_rate_accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r2 = pd.read_csv(workdir / "results/tables/da_r2.csv")
    assert list(r2.columns) == ["task", "codec", "r2"]
    assert sorted(zip(r2.task, r2.codec, strict=True)) == [(t, "vvenc") for t in tasks]
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
        "decode": 5,
        "encode": 5,
        "plot_rate_accuracy": 5,
        "rate_accuracy": 1,
        "score": 5,
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
    """Stand-ins for the paper's data locations: ImageNet, VOC2012 and NYU folder trees, an ARC jsonl, head
    checkpoints."""
    from PIL import Image

    from lamofc_lib.heads import random_state_dict

    voc = root / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(voc / "JPEGImages" / "2007_000033.jpg")
    Image.new("L", (8, 8)).save(voc / "SegmentationClass" / "2007_000033.png")
    (voc / "ImageSets/Segmentation/val.txt").write_text("2007_000033\n")
    (root / "nyu").mkdir()
    Image.new("RGB", (8, 8)).save(root / "nyu" / "rgb_00045.jpg")
    (root / "nyu" / "split.txt").write_text("rgb_00045.jpg sync_depth_00045.png 518.8579\n")
    captions = {"images": [{"id": 7}], "annotations": [{"image_id": 7, "caption": "A cat on a mat."}]}
    (root / "captions.json").write_text(json.dumps(captions))
    torch.save({"state_dict": random_state_dict("seg", 1536)}, root / "seg_head.pth")
    torch.save({"state_dict": random_state_dict("dpt", 1536, layers=4)}, root / "dpt_head.pth")

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
    return {
        "imagenet": str(root / "imagenet"),
        "arc": str(root / "arc.jsonl"),
        "head": str(root / "head.pth"),
        "voc": str(voc),
        "nyu": str(root / "nyu"),
        "nyu_split": str(root / "nyu" / "split.txt"),
        "seg_head": str(root / "seg_head.pth"),
        "dpt_head": str(root / "dpt_head.pth"),
        "captions": str(root / "captions.json"),
    }


def test_paper_config_builds_the_full_dag(tmp_path):
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    paths = synthetic_sources(tmp_path / "data")
    config["tasks"]["cls"]["source"]["root"] = paths["imagenet"]
    config["tasks"]["cls"]["head"]["checkpoint"] = paths["head"]
    config["tasks"]["csr"]["source"]["path"] = paths["arc"]
    config["tasks"]["seg"]["source"]["root"] = paths["voc"]
    config["tasks"]["seg"]["head"]["checkpoint"] = paths["seg_head"]
    config["tasks"]["dpt"]["source"].update(root=paths["nyu"], labels=paths["nyu_split"])
    config["tasks"]["dpt"]["head"]["checkpoint"] = paths["dpt_head"]
    config["tasks"]["tti"]["source"]["path"] = paths["captions"]
    result = snakemake(tmp_path, config, "--dry-run")
    assert result.returncode == 0, result.stderr[-4000:]
    # 100 samples per encoding job: cls, csr, tti (500 samples) 5 shards, seg (100) and dpt (80) 1; x 5 QPs.
    assert job_stats(result.stdout + result.stderr) == {
        "all": 1,
        "da_r2": 1,
        "decode": 25,
        "encode": 85,
        "extract": 5,
        "manifest": 5,
        "plot_rate_accuracy": 5,
        "preprocess": 5,
        "rate_accuracy": 1,
        "score": 25,
        "score_original": 5,
    }
