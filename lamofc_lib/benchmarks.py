"""Benchmarks of the workflow itself, one command each: `python -m lamofc_lib.benchmarks dag` builds the paper-size
DAG of both benchmarks (config/config.yaml at the paper's sample counts: LaMoFC's tasks with VTM and the Hyperprior,
and LaMoFCBench's scenarios, every tasks.dinov3_* block, with the universal codecs, which code every task) with a dry
run over stand-in sources, and, in the same run, the dry run of a trivial workflow with as many jobs (Snakemake's
own floor); it prints the job counts, both times and their ratio.

The stand-in sources are tiny files in the layouts the paper's data sets use (ImageNet, VOC2012 and NYU folder trees,
an ARC jsonl, COCO captions, head checkpoints, class subsets): a dry run reads the sources' listings and the config,
never the data. Without VTM binaries ($LAMOFC_VTM_DIR) the dry run gets stand-in programs that print VTM's banner,
enough for the start-up check; a dry run codes nothing.

`python -m lamofc_lib.benchmarks speed` measures, in one run, the workflow's own costs as ratios against plain
baselines: pre-processing (truncate + quantize or normalize + pack) against a numpy copy of the same array, the
Zarr store against raw .npy files (and its compression ratio), a no-op Snakemake job, VVenC against VTM at one QP
on the same frame (when VTM is configured), and, given a finished demo (`--workdir`, default the repository), the
time of an unchanged rerun and the run's job-seconds per rule and wall time from its Snakemake log."""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import yaml

from lamofc_lib.joblog import JobTime

REPO = Path(__file__).resolve().parent.parent


def paper_sources(root: Path) -> dict[str, str]:
    """Stand-ins for the paper's data locations, written under `root`: source paths by name."""
    import torch
    from PIL import Image

    from lamofc_lib.tasks.lamofc.heads import random_state_dict

    voc = root / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(voc / "JPEGImages" / "2007_000033.jpg")
    Image.new("L", (8, 8)).save(voc / "SegmentationClass" / "2007_000033.png")
    (voc / "ImageSets/Segmentation/val.txt").write_text("2007_000033\n")
    (root / "nyu").mkdir()
    Image.new("RGB", (8, 8)).save(root / "nyu" / "rgb_00045.jpg")
    (root / "nyu" / "split.txt").write_text("rgb_00045.jpg sync_depth_00045.png 518.8579\n")
    scene = root / "nyu_scenes" / "bathroom"
    scene.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(scene / "rgb_00045.jpg")
    Image.new("I;16", (8, 8)).save(scene / "sync_depth_00045.png")
    ade = root / "ade20k"
    for sub in ("images/validation", "annotations/validation"):
        (ade / sub).mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(ade / "images/validation/ADE_val_00000001.jpg")
    Image.new("L", (8, 8)).save(ade / "annotations/validation/ADE_val_00000001.png")
    captions = {"images": [{"id": 7}], "annotations": [{"image_id": 7, "caption": "A cat on a mat."}]}
    (root / "captions.json").write_text(json.dumps(captions))
    (root / "canny").mkdir()  # sd35_canny's sample list over its image folder
    Image.new("RGB", (8, 8)).save(root / "canny" / "000000000007.jpg")
    (root / "canny.json").write_text(json.dumps([{"image_name": "000000000007.jpg", "caption": "A cat on a mat."}]))
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
    # LaMoFCBench's heads (a dry run only checks that the file is there) and an ImageNet-A/-R class subset
    torch.save({}, root / "dinov3_head.pth")
    (root / "class_subset.json").write_text("[0, 1]\n")
    from lamofc_lib.tasks.lamofcbench.language.scenario import SHIPPED, LmDocs, data_file

    # LaMoFCBench's language tasks: the demo's documents, in the hub files' layouts
    shipped = {cls.kind: str(data_file(SHIPPED + cls.demo_files["eval"])) for cls in LmDocs.__subclasses__()}
    return {
        **shipped,
        "imagenet": str(root / "imagenet"),
        "arc": str(root / "arc.jsonl"),
        "head": str(root / "head.pth"),
        "voc": str(voc),
        "nyu": str(root / "nyu"),
        "nyu_split": str(root / "nyu" / "split.txt"),
        "nyu_scenes": str(root / "nyu_scenes"),
        "ade20k": str(ade),
        "seg_head": str(root / "seg_head.pth"),
        "dpt_head": str(root / "dpt_head.pth"),
        "captions": str(root / "captions.json"),
        "canny": str(root / "canny"),
        "canny_list": str(root / "canny.json"),
        "dinov3_head": str(root / "dinov3_head.pth"),
        "class_subset": str(root / "class_subset.json"),
    }


# The stand-in (a name of `paper_sources`) for each path key of a source kind's block.
LANGUAGE_DOCS = ("arc_challenge_docs", "gsm8k_docs", "hellaswag_docs", "truthfulqa_mc1_docs", "winogrande_docs")
STAND_INS = {
    "imagenet": {"root": "imagenet"},
    "image_folder": {"root": "imagenet"},  # class folders of images, as ImageNet's
    "voc2012": {"root": "voc"},
    "nyu_depth_v2": {"root": "nyu", "labels": "nyu_split"},
    "nyu_scenes": {"root": "nyu_scenes"},
    "ade20k": {"root": "ade20k"},
    "arc": {"path": "arc"},
    "coco_captions": {"path": "captions"},
    "coco_canny": {"root": "canny", "labels": "canny_list"},
    **{kind: {"path": kind} for kind in LANGUAGE_DOCS},
}
# The head checkpoint each task reads (LaMoFCBench's scenarios: `dinov3_head`).
HEADS = {"cls": "head", "seg": "seg_head", "dpt": "dpt_head"}


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
    training splits the same ones, with LaMoFCBench's scenarios added: every task block that run.tasks leaves out
    (tasks.dinov3_*) runs too, coded by the universal codecs (codecs.<codec>.universal), which code every task of
    run.tasks; run.codecs' own codecs code LaMoFC's tasks alone (codecs.<codec>.tasks)."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    run, tasks, codecs = config["run"], config["tasks"], config["codecs"]
    for task, block in tasks.items():
        kind = block["source"]["kind"]
        if kind not in STAND_INS:
            sys.exit(f"tasks.{task}.source: no stand-in for source kind '{kind}' (add one to STAND_INS)")
        block["source"].update({key: sources[name] for key, name in STAND_INS[kind].items()})
        if "from" not in block["train"]:
            block["train"]["source"] = block["source"]
        if "head" in block:
            block["head"]["checkpoint"] = sources[HEADS.get(task, "dinov3_head")]
        if "class_subset" in block:
            block["class_subset"] = sources["class_subset"]
    lamofc = list(run["tasks"])
    for codec in run["codecs"]:
        codecs[codec]["tasks"] = lamofc
    run["tasks"] += [t for t in tasks if t not in lamofc]
    run["codecs"] += [c for c, block in codecs.items() if block.get("universal") and c not in run["codecs"]]
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


# The floors: trivial workflows of as many jobs as the DAG, whose `jobs - 1` jobs write one file each and whose
# target rule gathers them. Every job of the workflow runs a script, and Snakemake checks each script job's script
# while it builds the DAG: "script" jobs run a no-op script (NOOP_SNAKEFILE), "bare" jobs have no action at all.
FLOORS = {"script": "no-op script jobs", "bare": "jobs without an action"}


def floor_dry_run(workdir: Path, jobs: int, kind: str) -> subprocess.CompletedProcess:
    """`snakemake --dry-run` of a trivial workflow of `jobs` jobs (FLOORS), as `dry_run` runs the workflow's."""
    snakefile = workdir / "Snakefile"
    text = NOOP_SNAKEFILE if kind == "script" else NOOP_SNAKEFILE.replace('    script: "noop.py"\n', "")
    snakefile.write_text(text)
    (workdir / "noop.py").write_text("open(snakemake.output[0], 'w').close()\n")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(snakefile), "-d", str(workdir)]
    cmd += ["--config", f"jobs={jobs - 1}", "--cores", "2", "--dry-run"]
    return subprocess.run(cmd, capture_output=True, text=True)


def _timed(run: Callable[[], subprocess.CompletedProcess], what: str) -> tuple[float, float, str]:
    """Wall and CPU seconds (the child's user + system time) of `run`, and its output; exits if it failed."""
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    result = run()
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        sys.exit(f"the dry run of {what} failed:\n{result.stderr[-4000:]}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return wall, cpu, result.stdout + result.stderr


def dag(runs: int) -> None:
    """Time `runs` dry runs of the paper-size DAG and as many of each trivial workflow (FLOORS) with its job count,
    each in a fresh folder, in turns; print the job counts, the medians (wall and CPU seconds: the CPU time is
    steadier on a busy machine) and the DAG's ratios to the floors."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env = dict(os.environ)
        if not env.get("LAMOFC_VTM_DIR"):
            env["LAMOFC_VTM_DIR"] = str(vtm_stand_ins(root / "vtm"))
            print("VTM: stand-in programs for the start-up check ($LAMOFC_VTM_DIR is not set)")
        config = paper_config(paper_sources(root / "data"))
        print(f"tasks: {', '.join(config['run']['tasks'])}; codecs: {', '.join(config['run']['codecs'])}")
        times: dict[str, list[tuple[float, float]]] = {"dag": [], **{kind: [] for kind in FLOORS}}
        for i in range(runs):
            workdir = root / f"dag{i}"
            workdir.mkdir()
            wall, cpu, output = _timed(lambda workdir=workdir: dry_run(workdir, config, env), "the DAG")
            times["dag"].append((wall, cpu))
            stats = job_stats(output)
            jobs = sum(stats.values())
            for kind in FLOORS:
                workdir = root / f"{kind}{i}"
                workdir.mkdir()
                wall, cpu, output = _timed(lambda w=workdir, k=kind, n=jobs: floor_dry_run(w, n, k), FLOORS[kind])
                times[kind].append((wall, cpu))
                if sum(job_stats(output).values()) != jobs:
                    sys.exit(f"the trivial workflow ({FLOORS[kind]}) has {sum(job_stats(output).values())} jobs")
    for rule, count in sorted(stats.items(), key=lambda item: -item[1]):
        print(f"{rule:>24} {count:6d}")
    print(f"{'jobs':>24} {jobs:6d}")
    medians = {k: [statistics.median(t[j] for t in v) for j in (0, 1)] for k, v in times.items()}
    print(f"dry runs with start-up, {runs} of each: median wall s (range), median CPU s")
    for kind, name in {"dag": "the DAG", **{k: f"floor: {v}" for k, v in FLOORS.items()}}.items():
        walls = [t[0] for t in times[kind]]
        spread = f"({min(walls):.1f}-{max(walls):.1f})"
        print(f"{name:>36}  {medians[kind][0]:5.1f} s {spread:>12}  CPU {medians[kind][1]:5.1f} s")
    for kind, name in FLOORS.items():
        wall, cpu = (medians["dag"][j] / medians[kind][j] for j in (0, 1))
        print(f"{'ratio to ' + name:>36}  {wall:5.2f} (wall)  {cpu:5.2f} (CPU)")


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# The paper's feature sizes: DINOv2-giant tokens of one layer (1370 tokens x 1536 channels, float32) and an SD3
# latent (16 x 128 x 128, float16).
PREPROCESS_CASES = {
    "tokens float32 1x1x1370x1536": ((1, 1, 1370, 1536), np.float32, "tokens"),
    "tiles float16 1x16x128x128": ((1, 16, 128, 128), np.float16, "tiles"),
}


def preprocess_speed(repeats: int) -> list[tuple[str, float, str]]:
    """Pre-processing throughput over a numpy copy of the same array (ratio = copy time / pre-processing time)."""
    from lamofc_lib.preprocess import TensorSpec, to_frame

    rows = []
    rng = np.random.default_rng(0)
    for label, (shape, dtype, packing) in PREPROCESS_CASES.items():
        x = (rng.standard_normal(shape) * 3).astype(dtype)
        spec = TensorSpec(packing, [-10, 10])
        copy = _median_seconds(lambda x=x: np.copy(x), repeats)
        for kind in ("quantized", "normalized"):
            took = _median_seconds(lambda x=x, kind=kind, spec=spec: to_frame(x, spec, kind, 10), repeats)
            mb_s = x.nbytes / took / 1e6
            rows.append(
                (f"preprocess {kind} {label}", copy / took, f"{mb_s:.0f} MB/s (copy {x.nbytes / copy / 1e6:.0f})")
            )
    return rows


def store_speed(samples: int, repeats: int) -> list[tuple[str, float, str]]:
    """Feature store write and read throughput over one .npy file per sample (ratio = npy time / store time),
    and the store's compression ratio (raw bytes / bytes on disk)."""
    from lamofc_lib.store import FeatureStore, TensorLayout, write_store

    shape = (1, 1, 1370, 1536)
    rng = np.random.default_rng(0)
    arrays = [(rng.standard_normal(shape) * 3).astype(np.float32) for _ in range(samples)]
    ids = [f"{i:05d}" for i in range(samples)]
    raw = sum(a.nbytes for a in arrays)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)

        def write_npy():
            for i, a in enumerate(arrays):
                np.save(root / f"{i}.npy", a)

        def write_zarr():
            target = root / "features.zarr"
            if target.exists():
                import shutil

                shutil.rmtree(target)
            layout = {"features": TensorLayout([shape] * samples, "float32", {"packing": "tokens"})}
            write_store(target, ids, layout, ({"features": a} for a in arrays))

        def read_npy():
            for i in range(samples):
                np.load(root / f"{i}.npy")

        def read_zarr():
            store = FeatureStore(root / "features.zarr")
            for i in range(samples):
                store.read(i)

        write = (_median_seconds(write_npy, repeats), _median_seconds(write_zarr, repeats))
        read = (_median_seconds(read_npy, repeats), _median_seconds(read_zarr, repeats))
        on_disk = sum(f.stat().st_size for f in (root / "features.zarr").rglob("*") if f.is_file())
    detail = f"{samples} samples of {shape} float32, {raw / 1e6:.0f} MB"
    return [
        ("store write vs npy", write[0] / write[1], f"{raw / write[1] / 1e6:.0f} MB/s ({detail})"),
        ("store read vs npy", read[0] / read[1], f"{raw / read[1] / 1e6:.0f} MB/s"),
        (
            "store compression ratio",
            raw / on_disk,
            f"{on_disk / 1e6:.1f} MB on disk (Blosc LZ4; random normal values)",
        ),
    ]


def _snakemake(args: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=cwd, capture_output=True, text=True)
    took = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"snakemake {' '.join(args)} failed in {cwd}:\n{result.stderr[-3000:]}")
    return took, result


NOOP_SNAKEFILE = """
rule all:
    input: expand("out/{i}.txt", i=range(int(config["jobs"])))

rule noop:
    output: "out/{i}.txt"
    script: "noop.py"
"""


def job_overhead(jobs: int) -> list[tuple[str, float, str]]:
    """The cost of one Snakemake `script:` job that does nothing: (time of `jobs` jobs - time of one) / (jobs - 1),
    on one core, and Snakemake's start-up with one such job."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "Snakefile").write_text(NOOP_SNAKEFILE)
        (root / "noop.py").write_text("open(snakemake.output[0], 'w').close()\n")
        times = {}
        for n in (1, jobs):
            for f in (root / "out").glob("*"):
                f.unlink()
            times[n], _ = _snakemake(["--cores", "1", "--config", f"jobs={n}"], root)
    per_job = (times[jobs] - times[1]) / (jobs - 1)
    return [
        ("no-op script job", per_job, f"s per job ({jobs} jobs in {times[jobs]:.1f} s on one core)"),
        ("snakemake start-up + one no-op job", times[1], "s"),
    ]


def codec_speed(repeats: int) -> list[tuple[str, float, str]]:
    """VVenC's encode time of one 10-bit frame at QP 32 and, when VTM is configured ($LAMOFC_VTM_DIR), VTM's on
    the same frame (ratio = VTM time / VVenC time)."""
    from lamofc_lib.codecs import get_codec
    from lamofc_lib.codecs.vtm import ENV
    from lamofc_lib.preprocess import TensorSpec, to_frame

    rng = np.random.default_rng(0)
    x = (rng.standard_normal((1, 1, 257, 768)) * 3).astype(np.float32)  # DINOv2-base tokens: a cls frame
    frame = to_frame(x, TensorSpec("tokens", [-10, 10]), "quantized", 10)
    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        codecs = {"vvenc": ({"preset": "faster"}, None)}
        try:
            codecs["vtm"] = ({}, get_codec("vtm", {}))
        except (ValueError, FileNotFoundError, OSError) as err:
            print(f"VTM not configured (set ${ENV} or codecs.vtm.encoder/decoder/cfg): {err}")
        for name, (settings, codec) in codecs.items():
            codec = codec or get_codec(name, settings)
            times[name] = _median_seconds(lambda c=codec: c.encode(frame, "32", root / "b.bin", root), repeats)
    rows = [("VVenC encode, 257 x 768 frame, QP 32", times["vvenc"], "s (preset faster)")]
    if "vtm" in times:
        rows.append(("VTM / VVenC encode time", times["vtm"] / times["vvenc"], f"VTM {times['vtm']:.2f} s"))
    return rows


TIMESTAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
JOB = re.compile(r"^(?:local)?rule (\w+):$")
LOG = re.compile(r"^    log: (\S+)")
JOBID = re.compile(r"^    jobid: (\d+)$")
FINISHED = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)$")


@dataclass
class RuleTime:
    """One rule's jobs in a run: their seconds from the Snakemake log and, from the jobs' own logs
    (joblog.JobTime), the seconds before their work began (start-up and imports) and the work itself."""

    seconds: list[float] = field(default_factory=list)
    overhead: float = 0.0
    work: float = 0.0
    timed: int = 0
    forked: int = 0
    peak_rss_mb: float = 0.0  # the largest of its jobs' (joblog.JobTime.peak_rss_mb)


def rule_times(workdir: Path) -> tuple[dict[str, RuleTime], float, str] | None:
    """Per rule, the seconds its jobs ran (from each job's start to its finish as the newest Snakemake log that ran
    jobs records them, to the second) and their own split of it; that run's wall time (its first to its last
    timestamp) and the log's name. None if no log ran jobs."""
    for log in sorted((workdir / ".snakemake" / "log").glob("*.snakemake.log"), reverse=True):
        now, rule, job_log = None, None, None
        stamps, started, logs, ran = [], {}, {}, {}
        for line in log.read_text().splitlines():
            if match := TIMESTAMP.match(line):
                now = datetime.strptime(match.group(1), "%a %b %d %H:%M:%S %Y")
                stamps.append(now)
            elif match := JOB.match(line):
                rule, job_log = match.group(1), None
            elif (match := LOG.match(line)) and rule:
                job_log = match.group(1).split(",")[0]
            elif (match := JOBID.match(line)) and rule:
                started[match.group(1)] = now
                logs[match.group(1)] = job_log
                rule = None
            elif (match := FINISHED.match(line)) and match.group(1) in started:
                times = ran.setdefault(match.group(2), RuleTime())
                times.seconds.append((now - started.pop(match.group(1))).total_seconds())
                path = logs.pop(match.group(1))
                own = JobTime.parse((workdir / path).read_text(errors="replace")) if path else None
                if own and (workdir / path).is_file():
                    times.overhead += own.startup + own.imports
                    times.work += own.work
                    times.timed += 1
                    times.forked += own.forked
                    times.peak_rss_mb = max(times.peak_rss_mb, own.peak_rss_mb)
        if ran:
            return ran, (stamps[-1] - stamps[0]).total_seconds(), log.name
    return None


def run_stages(workdir: Path) -> list[tuple[str, float, str]]:
    """Per rule, its jobs' seconds (the Snakemake log's) split into the jobs' own work, as their clocks measured
    it (joblog.JobTime), and the rest: start-up and imports as the jobs measured them, plus Snakemake's own
    handling of each job (the job-s less the job process's lifetime); the run's totals and its wall time."""
    found = rule_times(workdir)
    if found is None:
        return []
    ran, wall, name = found
    total = sum(sum(t.seconds) for t in ran.values())
    rows = []
    for rule, t in sorted(ran.items(), key=lambda item: -sum(item[1].seconds)):
        seconds = sum(t.seconds)
        detail = f"job-s, {len(t.seconds)} jobs, mean {np.mean(t.seconds):.1f} s, {seconds / total:.0%} of all"
        if t.timed:
            other = seconds - t.work - t.overhead
            detail += f"; work {t.work:.1f} s, start-up+imports {t.overhead:.1f} s, other {other:.1f} s"
        if t.peak_rss_mb:
            detail += f"; peak RSS {t.peak_rss_mb:.0f} MB"
        rows.append((f"stage {rule}", seconds, detail))
    overhead = sum(t.overhead for t in ran.values())
    work = sum(t.work for t in ran.values())
    jobs = sum(len(t.seconds) for t in ran.values())
    rows.append(("all jobs", total, f"job-s in {name}, {jobs} jobs"))
    timed = sum(t.timed for t in ran.values())
    if timed:
        forked = sum(t.forked for t in ran.values())
        rows.append(("work of all jobs", work, f"s ({timed} jobs timed themselves, {forked} ran in forks)"))
        rows.append(("start-up and imports of all jobs", overhead, "s (as the jobs measured them)"))
        share = 1 - work / total if total else 0.0
        rows.append(("share of job-s that is not work", share, "(start-up, imports, Snakemake's handling)"))
    rows.append(("wall time of that run", wall, "s"))
    return rows


def unchanged_rerun(workdir: Path, configfiles: list[str]) -> list[tuple[str, float, str]]:
    """The time of `snakemake --cores 2` in a finished run's folder (nothing to do); skipped if jobs are pending."""
    args = ["-s", str(REPO / "Snakefile"), "-d", str(workdir), "--configfile", *configfiles, "--cores", "2"]
    _, dry = _snakemake([*args, "--dry-run"], workdir)
    if "Nothing to be done" not in dry.stdout + dry.stderr:
        print(f"unchanged rerun: skipped, the run in {workdir} has jobs left (run it first)")
        return []
    took, _ = _snakemake(args, workdir)
    return [("unchanged rerun of the finished run", took, "s (target < 15 s)")]


def speed(workdir: Path, configfiles: list[str], repeats: int) -> None:
    rows = preprocess_speed(repeats) + store_speed(8, repeats) + job_overhead(6) + codec_speed(repeats)
    if (workdir / "benchmarks").is_dir():
        rows += unchanged_rerun(workdir, configfiles) + run_stages(workdir)
    else:
        print(f"no finished run in {workdir} (no benchmarks/ folder): rerun and stage times skipped")
    for name, value, detail in rows:
        print(f"{name:>48}  {value:9.3f}  {detail}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lamofc_lib.benchmarks", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="benchmark", required=True)
    dag_parser = sub.add_parser(
        "dag", help="dry run of the paper-size DAG: job counts, build time and its ratio to a trivial workflow's"
    )
    dag_parser.add_argument("--runs", type=int, default=3, help="dry runs of each to time (default 3)")
    speed_parser = sub.add_parser("speed", help="the workflow's own costs as ratios against plain baselines")
    speed_parser.add_argument("--workdir", type=Path, default=REPO, help="a finished run's folder (default: repo)")
    speed_parser.add_argument(
        "--configfile",
        nargs="+",
        default=["config/demo.yaml"],
        help="its config files, as given to snakemake (default: the demo's)",
    )
    speed_parser.add_argument("--repeats", type=int, default=5, help="timings per measurement (median; default 5)")
    args = parser.parse_args(argv)
    if args.benchmark == "dag":
        dag(args.runs)
    else:
        speed(args.workdir.resolve(), args.configfile, args.repeats)


if __name__ == "__main__":
    main()
