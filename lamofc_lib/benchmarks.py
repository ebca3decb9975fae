"""Benchmarks of the workflow itself, one command each: `python -m lamofc_lib.benchmarks dag` builds the paper-size
DAG (config/config.yaml at the paper's sample counts, VTM and the Hyperprior) with a dry run over stand-in sources and
prints its job counts and the time the dry run takes.

The stand-in sources are tiny files in the layouts the paper's data sets use (ImageNet, VOC2012 and NYU folder trees,
an ARC jsonl, COCO captions, head checkpoints): a dry run reads the sources' listings and the config, never the data.
Without VTM binaries ($LAMOFC_VTM_DIR) the dry run gets stand-in programs that print VTM's banner, enough for the
start-up check; a dry run codes nothing."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def paper_sources(root: Path) -> dict[str, str]:
    """Stand-ins for the paper's data locations, written under `root`: source paths by name."""
    import torch
    from PIL import Image

    from lamofc_lib.tasks.heads import random_state_dict

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


def vtm_stand_ins(folder: Path) -> Path:
    """Programs that print VTM's banner (and an empty cfg), for the start-up check of a dry run without the
    user's VTM binaries; nothing can be coded with them."""
    folder.mkdir(parents=True)
    for name, role in (("EncoderAppStatic", "Encoder"), ("DecoderAppStatic", "Decoder")):
        path = folder / name
        path.write_text(f"#!/bin/sh\necho 'VTM {role} Version 23.3 [Linux]'\n")
        path.chmod(0o755)
    (folder / "encoder_intra_vtm.cfg").write_text("")
    return folder


def paper_config(sources: dict[str, str]) -> dict:
    """config/config.yaml (the paper's tasks, sample counts, codecs and points) reading the given sources, the
    training splits the same ones."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    tasks = config["tasks"]
    tasks["cls"]["source"]["root"] = sources["imagenet"]
    tasks["cls"]["head"]["checkpoint"] = sources["head"]
    tasks["csr"]["source"]["path"] = sources["arc"]
    tasks["seg"]["source"]["root"] = sources["voc"]
    tasks["seg"]["head"]["checkpoint"] = sources["seg_head"]
    tasks["dpt"]["source"].update(root=sources["nyu"], labels=sources["nyu_split"])
    tasks["dpt"]["head"]["checkpoint"] = sources["dpt_head"]
    tasks["tti"]["source"]["path"] = sources["captions"]
    for block in tasks.values():
        block["train"]["source"] = block["source"]
    return config


def job_stats(output: str) -> dict[str, int]:
    """The 'Job stats' table Snakemake prints before running (or dry-running) jobs: rule -> job count."""
    lines = output.splitlines()
    start = lines.index("Job stats:") + 3
    stats = {}
    for line in lines[start:]:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        stats[parts[0]] = int(parts[1])
    return stats


def dry_run(workdir: Path, config: dict, env: dict | None = None) -> subprocess.CompletedProcess:
    """`snakemake --dry-run` of the workflow with `config` in `workdir`."""
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir)]
    cmd += ["--configfile", str(path), "--cores", "2", "--dry-run"]
    return subprocess.run(cmd, capture_output=True, text=True, env=env)


def dag(runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env = dict(os.environ)
        if not env.get("LAMOFC_VTM_DIR"):
            env["LAMOFC_VTM_DIR"] = str(vtm_stand_ins(root / "vtm"))
            print("VTM: stand-in programs for the start-up check ($LAMOFC_VTM_DIR is not set)")
        config = paper_config(paper_sources(root / "data"))
        seconds = []
        for i in range(runs):
            workdir = root / f"run{i}"
            workdir.mkdir()
            start = time.perf_counter()
            result = dry_run(workdir, config, env)
            seconds.append(time.perf_counter() - start)
            if result.returncode != 0:
                sys.exit(f"the dry run failed:\n{result.stderr[-4000:]}")
        stats = job_stats(result.stdout + result.stderr)
    for rule, count in sorted(stats.items(), key=lambda item: -item[1]):
        print(f"{rule:>20} {count:6d}")
    print(f"{'jobs':>20} {sum(stats.values()):6d}")
    low, high = min(seconds), max(seconds)
    print(f"dry run (DAG build, with start-up): median {statistics.median(seconds):.1f} s, {low:.1f}-{high:.1f} s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lamofc_lib.benchmarks", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="benchmark", required=True)
    dag_parser = sub.add_parser("dag", help="dry run of the paper-size DAG: job counts and build time")
    dag_parser.add_argument("--runs", type=int, default=3, help="dry runs to time (default 3)")
    args = parser.parse_args(argv)
    if args.benchmark == "dag":
        dag(args.runs)


if __name__ == "__main__":
    main()
