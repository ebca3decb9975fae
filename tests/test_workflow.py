"""End-to-end: the Snakemake workflow on the demo profile, reruns, config errors at start, and the paper-scale DAG."""

from __future__ import annotations

import copy
import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from lamofc_lib.benchmarks import job_stats, paper_config, paper_sources, vtm_stand_ins
from lamofc_lib.config import format_point
from lamofc_lib.config import points as operating_points
from lamofc_lib.workflow import codec_name, coded_points, generalizability_points, trained_on

REPO = Path(__file__).resolve().parents[1]


def snakemake(workdir: Path, config: dict, *args: str, repo: Path = REPO) -> subprocess.CompletedProcess:
    config_path = workdir / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), "-d", str(workdir)]
    cmd += ["--configfile", str(config_path), "--cores", "2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=2400)


def demo_config() -> dict:
    return yaml.safe_load((REPO / "config" / "demo.yaml").read_text())


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One run of the demo profile with QPs 32 and 42 and each task's lowest and highest demo lambda, shared by
    the tests below (every rule runs; fewer points keep CI short)."""
    workdir = tmp_path_factory.mktemp("demo")
    config = demo_config()
    # Of the demo's language runs: ARC-Challenge on SmolLM2, GSM8K (its own filter; ARC's training split) and
    # the seeded FalconMamba (a Mamba model's states); the other three tasks and the seeded Qwen3 take the same
    # paths (tests/test_lamofcbench_language.py checks their prompts, filters and caches). sd35_canny's workflow
    # path (two variants per point, K-means codes, universal codecs) is dinov3_in1k's; tests/test_sd35_canny.py
    # checks its split, re-injection, frames and FID.
    config["run"]["tasks"] = [t for t in config["run"]["tasks"] if t not in NOT_IN_E2E]
    config["codecs"]["vvenc"]["points"] = [32, 42]
    lambdas = config["codecs"]["hyperprior"]["points"]
    for task, points in lambdas.items():
        lambdas[task] = [min(points), max(points)]
    # Every trained codec's rules run; a short training suffices (no test here reads a model's quality)
    for codec in ("hyperprior", "hyperprior_u", "elic"):
        training = config["codecs"][codec]["training"]
        for task in training:
            training[task] = {**training[task], "steps": 40}
    # Requests that grow with frame size: 1000 min and 100,000 MB per million frame samples.
    config["codecs"]["vvenc"]["resources"]["encode"]["per_mpixel"] = {"runtime": 1000, "mem_mb": 100000}
    # The wall clock, like the log's stamps: a CI run timed 467 s on the monotonic clock while its log spanned
    # 478 s (a paused virtual machine or a clock step), so the two clocks are not compared.
    start = time.time()
    result = snakemake(workdir, config)
    (workdir / "elapsed.txt").write_text(f"{time.time() - start:.1f}")
    (workdir / "run.log").write_text(result.stderr)
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir, config


NOT_IN_E2E = ("lm_hellaswag", "lm_truthfulqa_mc1", "lm_winogrande", "qwen3_arc_challenge", "sd35_canny")
LANGUAGE = ("lm_arc_challenge", "lm_gsm8k", "falcon_mamba_arc_challenge")

SPEED_ROWS = ("store read vs npy", "store write vs npy", "store compression ratio", "no-op script job", "all jobs")
SPEED_ROWS += ("VVenC encode, 257 x 768 frame, QP 32", "unchanged rerun of the finished run")


@pytest.mark.e2e
def test_the_speed_benchmark_reads_the_finished_run(demo_run):
    """`python -m lamofc_lib.benchmarks speed` on the finished demo (run first, while its folder is untouched):
    every measurement printed; the stage rows count the jobs Snakemake reported per rule; the run's wall time
    lies within the time the run took; the unchanged rerun is timed."""
    workdir, _ = demo_run
    cmd = [sys.executable, "-m", "lamofc_lib.benchmarks", "speed", "--workdir", str(workdir)]
    result = subprocess.run(
        [*cmd, "--configfile", str(workdir / "config.yaml"), "--repeats", "1"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-4000:]
    rows = {}
    for line in result.stdout.splitlines():
        match = re.match(r"^\s*(.+?)\s+(-?\d+\.\d{3})  (.*)$", line)
        if match:
            rows[match.group(1)] = (float(match.group(2)), match.group(3))
    for name in SPEED_ROWS:
        assert name in rows, (name, result.stdout)
        # a difference of two timings (many no-op jobs less one), which a busy machine can make negative
        assert rows[name][0] > 0 or name == "no-op script job", (name, result.stdout)
    assert sum(1 for name in rows if name.startswith("preprocess ")) == 4
    jobs = full_run_jobs(workdir)
    assert f"{jobs['train']} jobs" in rows["stage train"][1]
    assert f"{jobs['code']} jobs" in rows["stage code"][1]
    # every job timed itself: the rules' rows split their job-s into work and the rest
    timed = sum(jobs.values()) - 1  # every job but rule all
    # every job ran in a fork of the fork server (started before the first job)
    assert f"({timed} jobs timed themselves, {timed} ran in forks)" in rows["work of all jobs"][1]
    assert 0 < rows["work of all jobs"][0] < rows["all jobs"][0]
    assert 0 < rows["share of job-s that is not work"][0] < 1
    assert "; work " in rows["stage train"][1]
    # the largest code job's peak memory, from the logs of the forks that ran them (each imported torch and
    # CompressAI), far above what Snakemake's benchmark files saw of the job processes that waited for them
    peak = float(re.search(r"; peak RSS (\d+) MB", rows["stage code"][1]).group(1))
    benchmarks = (workdir / "benchmarks").rglob("code-*.tsv")
    seen = max(float(line.split("\t")[2]) for path in benchmarks for line in path.read_text().splitlines()[1:])
    assert peak > 2 * seen > 0, (peak, seen)
    elapsed = float((workdir / "elapsed.txt").read_text())
    wall = rows["wall time of that run"][0]
    assert elapsed / 2 < wall <= elapsed + 2
    assert rows["unchanged rerun of the finished run"][0] < elapsed


@pytest.mark.e2e
def test_demo_writes_tables_and_figures(demo_run):
    workdir, config = demo_run
    table = pd.read_csv(workdir / "results/tables/rate_accuracy.csv", dtype={"point": str})
    assert list(table.columns) == [
        "task", "codec", "point", "bpfp", "ebpfp", "entropy", "bpfp_injected", "mse", "quant_mse", "metric",
        "value", "higher_is_better", "accuracy_drop", "samples", "candidates",
    ]  # fmt: skip
    # the symbols' entropy on every coded row (the uncompressed rows have none)
    assert (
        table[table.codec != "original"].entropy.notna().all() and table[table.codec == "original"].entropy.isna().all()
    )
    tasks = ("cls", "csr", "dpt", "seg", "tti")
    # LaMoFCBench's results, coded by the universal codecs: the classifier's two variants, segmentation, depth
    variants = ("dinov3_in1k:layer.1", "dinov3_in1k:layer.3", "dinov3_ade20k", "dinov3_nyu", *LANGUAGE)
    lambdas = {task: [format_point(v) for v in config["codecs"]["hyperprior"]["points"][task]] for task in tasks}
    universal = [
        (f"{c}@hybrid", format_point(v))
        for c in ("hyperprior_u", "elic")
        for v in config["codecs"][c]["points"]["hybrid"]
    ]
    assert sorted(zip(table.task, table.codec, table.point, strict=True)) == sorted(
        [
            (task, codec, point)
            for task in tasks
            for codec, point in [("original", "original"), ("vvenc", "32"), ("vvenc", "42")]
            + [("hyperprior", lam) for lam in lambdas[task]]
            + universal
        ]
        + [(task, codec, point) for task in variants for codec, point in [("original", "original"), *universal]]
    )
    original = table[table.codec == "original"].set_index("task")
    assert (original.bpfp == 32).all() and (original.mse == 0).all()
    # Every demo task but SmolLM2's language ones scores against the uncompressed model's outputs: 100 %
    # agreement, 0 m depth error, FID 0; ARC-Challenge and GSM8K against their answer keys (lm-eval's exact
    # match), a share of 2 questions and of 1.
    expected = {"cls": 100, "csr": 100, "dpt": 0, "seg": 100, "tti": 0, **dict.fromkeys(variants[:2], 100)}
    expected |= {"dinov3_ade20k": 100, "dinov3_nyu": 0, "falcon_mamba_arc_challenge": 100}
    assert original.value.drop(["lm_arc_challenge", "lm_gsm8k"]).to_dict() == pytest.approx(expected, abs=1e-6)
    questions = config["tasks"]["lm_arc_challenge"]["samples"]
    assert any(original.value["lm_arc_challenge"] == pytest.approx(100 * k / questions) for k in range(questions + 1))
    assert original.value["lm_gsm8k"] in (0, 100)
    assert dict(zip(table.task, table.metric, strict=True)) == {
        "cls": "top1",
        "csr": "accuracy",
        "dpt": "rmse",
        "seg": "miou",
        "tti": "fid",
        **dict.fromkeys(variants[:2], "top1"),
        "dinov3_ade20k": "miou",
        "dinov3_nyu": "rmse",
        **dict.fromkeys(LANGUAGE, "accuracy"),
    }
    lamofc = table[table.task.isin(tasks)]
    assert (lamofc.bpfp_injected == lamofc.bpfp).all()  # every tensor of theirs goes back into the head
    for task in tasks:
        coded = table[(table.task == task) & (table.codec == "vvenc")].set_index("point")
        assert coded.loc["42", "bpfp"] < coded.loc["32", "bpfp"]
        assert coded.loc["42", "mse"] > coded.loc["32", "mse"] > 0
        assert (coded.value >= 0).all()
        if task not in ("dpt", "tti"):  # percentages (dpt's RMSE and tti's FID are not)
            assert (coded.value <= 100).all()
        assert (workdir / f"results/figures/{task}_rate_accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r2 = pd.read_csv(workdir / "results/tables/da_r2.csv")
    assert list(r2.columns) == ["task", "codec", "points", "r2", "slope", "intercept"]
    codecs = sorted(("hyperprior", "vvenc", "hyperprior_u@hybrid", "elic@hybrid"))
    expected = [(t, c) for t in tasks for c in codecs] + [(v, c) for v in variants for c in LAMOFCBENCH_LABELS]
    assert sorted(zip(r2.task, r2.codec, strict=True)) == sorted(expected)
    markdown = (workdir / "results/tables/rate_accuracy.md").read_text()
    assert "uncompressed model's own predictions" in markdown


LAMOFCBENCH_LABELS = ("hyperprior_u@hybrid", "elic@hybrid")


@pytest.mark.e2e
def test_the_demos_kmeans_centres_are_scikit_learns_on_its_calibration_samples(demo_run):
    """Each task's calibration: 256 centres fitted by scikit-learn's KMeans (256 clusters, random_state 42, its
    defaults otherwise, one thread) on the first training samples in sample-id order, fitted again here."""
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    from lamofc_lib.store import FeatureStore

    workdir, config = demo_run
    samples = config["codecs"]["elic"]["kmeans"]["samples"]
    for task in ("cls", "seg", "dpt", "csr", "tti"):
        folder = workdir / f"results/{task}/calibration/kmeans8-train{samples}"
        store = FeatureStore(workdir / f"results/{task}/train/features.zarr")
        first = sorted(range(len(store)), key=lambda i: store.sample_ids[i])[:samples]
        about = json.loads((folder / "calibration.json").read_text())
        assert about["samples"] == [store.sample_ids[i] for i in first]
        mapping = json.loads((folder / "mapping.json").read_text())
        assert mapping == {task: {name: f"{name}.json" for name in store.tensors}}
        for name in store.tensors:
            values = np.concatenate([store.read(i, name).astype(np.float32).ravel() for i in first])
            with threadpool_limits(limits=about["threads"]):  # the fit's sums depend on its threads
                fitted = KMeans(n_clusters=256, random_state=42).fit(values.reshape(-1, 1)).cluster_centers_[:, 0]
            got = np.array(json.loads((folder / f"{name}.json").read_text()), dtype=np.float32)
            np.testing.assert_array_equal(got, np.sort(fitted).astype(np.float32))


@pytest.mark.e2e
def test_the_universal_codecs_code_every_task_with_real_strings_and_kmeans_reconstructions(demo_run):
    """LaMoFCBench's protocol in the demo: the universal Hyperprior and ELIC code every task; BPFP is the
    bitstream files' bytes over the feature points, computed here from the files; every reconstructed value is
    one of its tensor's K-means centres; ELIC's files hold its 11 strings (10 length fields)."""
    from lamofc_lib.store import FeatureStore

    workdir, config = demo_run
    table = pd.read_csv(workdir / "results/tables/rate_accuracy.csv", dtype={"point": str})
    tensors = pd.read_csv(workdir / "results/tables/tensors.csv", dtype={"point": str})
    for task in ("cls", "seg", "dpt", "csr", "tti"):
        features = FeatureStore(workdir / f"results/{task}/features.zarr")
        for label in LAMOFCBENCH_LABELS:
            points = [format_point(p) for p in config["codecs"][label.split("@")[0]]["points"]["hybrid"]]
            scores = {s["point"]: s for s in json.loads((workdir / f"results/{task}/{label}/scores.json").read_text())}
            assert sorted(scores) == sorted(points)
            for point in points:
                folder = workdir / f"results/{task}/{label}/{point}"
                bpfp, ebpfp, tensor_bits = [], [], dict.fromkeys(features.tensors, 0)
                for i in range(len(features)):
                    files = sorted((folder / "bitstreams").glob(f"*/{i:05d}.*.bin"))
                    assert len(files) == len(features.tensors)
                    sizes = [f.stat().st_size for f in files]
                    bpfp.append(8 * sum(sizes) / features.points(i))
                    # EBPFP: each tensor's bits x 32 / the bits of its dtype (the tti latent is float16)
                    width = {name: np.dtype(features.layout(name).dtype).itemsize * 8 for name in features.tensors}
                    bits = {f.name.split(".")[1]: 8 * f.stat().st_size for f in files}
                    ebpfp.append(sum(bits[n] * 32 / width[n] for n in bits) / features.points(i))
                    tensor_bits = {n: tensor_bits[n] + bits[n] for n in bits}
                    if label.startswith("elic"):
                        data, at = files[0].read_bytes(), 0
                        for _ in range(10):
                            at += 4 + int.from_bytes(data[at : at + 4], "big")
                        assert at < len(data)
                assert scores[point]["bpfp"] == pytest.approx(np.mean(bpfp), rel=1e-12)
                row = table[(table.task == task) & (table.codec == label) & (table.point == point)]
                assert len(row) == 1 and row.bpfp.iloc[0] == pytest.approx(np.mean(bpfp), rel=1e-12)
                assert row.ebpfp.iloc[0] == pytest.approx(np.mean(ebpfp), rel=1e-12)
                assert scores[point]["ebpfp"] == pytest.approx(np.mean(ebpfp), rel=1e-12)
                rows = tensors[(tensors.task == task) & (tensors.codec == label) & (tensors.point == point)]
                assert sorted(rows.tensor) == sorted(features.tensors)
                assert (rows.quant_mse > 0).all() and (rows.mse > 0).all()
                # each tensor's share of the point's bits, from the files; the entropy of its 8-bit codes
                for row in rows.itertuples():
                    share = tensor_bits[row.tensor] / sum(tensor_bits.values())
                    assert row.bit_share == pytest.approx(share, rel=1e-12) and 0 < row.entropy <= 8
                sidecar = json.loads(next((folder / "bitstreams").glob("*/00000.json")).read_text())
                network = "Elic2022Official" if label.startswith("elic") else "ScaleHyperprior"
                assert network in sidecar["codec_version"] and "trained on hybrid" in sidecar["codec_version"]
                rec = FeatureStore(next((folder / "reconstructed").glob("*.zarr")))
                for tensor in sidecar["tensors"]:
                    centres = np.array(tensor["centres"], np.float32).astype(rec.layout(tensor["name"]).dtype)
                    assert tensor["quantizer"] == "kmeans" and np.isin(rec.read(0, tensor["name"]), centres).all()


@pytest.mark.e2e
def test_which_tensor_carries_the_accuracy_each_level_coded_alone(demo_run):
    """report.tensor_accuracy (the demo's: hyperprior_u alone): at its middle point (the upper of its two lambdas)
    the segmentation and depth scenarios are scored with one level's tensors decoded and the others uncompressed,
    one row per level, the language scenario with its hidden state, keys, values or one layer's cache; a row's
    own rate is its bitstream files' bits over its points, from the files here, and the row carries the point's
    metric with every tensor decoded. LaMoFC's one-tensor tasks and the classification scenario (whose variants
    already put one block back alone) have no rows."""
    from lamofc_lib.store import FeatureStore

    workdir, config = demo_run
    table = pd.read_csv(workdir / "results/tables/tensor_accuracy.csv", dtype={"point": str})
    rates = pd.read_csv(workdir / "results/tables/rate_accuracy.csv", dtype={"point": str})
    assert set(table.task) == {"dinov3_ade20k", "dinov3_nyu", *LANGUAGE}
    assert config["report"]["tensor_accuracy"] == ["hyperprior_u"] and set(table.codec) == {"hyperprior_u@hybrid"}
    # the language scenarios: the hidden state, the keys (SSM states), the values (convolution states) and each
    # layer's cache, each coded alone
    for task in LANGUAGE:
        first, second = ("ssm_state", "conv_state") if "mamba" in task else ("key", "value")
        groups = {"output": ["output"], **{f"{k}s": [f"{k}.{i}" for i in range(5)] for k in (first, second)}}
        groups |= {f"layer.{i}": [f"{first}.{i}", f"{second}.{i}"] for i in range(5)}
        rows = table[(table.task == task) & (table.codec == "hyperprior_u@hybrid")].set_index("coded")
        assert {g: sorted(rows.coded_tensors[g].split()) for g in rows.index} == {
            g: sorted(n) for g, n in groups.items()
        }
    for task in ("dinov3_ade20k", "dinov3_nyu"):
        features = FeatureStore(workdir / f"results/{task}/features.zarr")
        for label in ("hyperprior_u@hybrid",):
            point = format_point(config["codecs"][label.split("@")[0]]["points"]["hybrid"][1])
            rows = table[(table.task == task) & (table.codec == label)]
            assert set(rows.point) == {point} and sorted(rows.coded) == [f"layer.{b}" for b in range(4)]
            everything = rates[(rates.task == task) & (rates.codec == label) & (rates.point == point)].value
            folder = workdir / f"results/{task}/{label}/{point}/bitstreams"
            for row in rows.itertuples():
                names = row.coded_tensors.split()
                assert sorted(names) == sorted(n for n in features.tensors if n.startswith(f"{row.coded}."))
                rate = []
                for i in range(len(features)):
                    bits = sum(8 * f.stat().st_size for n in names for f in folder.glob(f"*/{i:05d}.{n}.bin"))
                    rate.append(bits / sum(math.prod(features.layout(n).shapes[i]) for n in names))
                assert row.bpfp_coded == pytest.approx(np.mean(rate), rel=1e-12)
                assert row.value_all == everything.item() and not math.isnan(row.value)


@pytest.mark.e2e
def test_demo_selection_is_a_stage_with_a_report_and_a_table(demo_run):
    workdir, config = demo_run
    selection = pd.read_csv(workdir / "results/tables/selection.csv").set_index("task")
    for task, block in [(t, config["tasks"][t]) for t in config["run"]["tasks"]]:
        candidates = pd.read_csv(workdir / f"results/{task}/candidates.csv", dtype=str, keep_default_na=False)
        manifest = pd.read_csv(workdir / f"results/{task}/manifest.csv", dtype=str, keep_default_na=False)
        report = pd.read_csv(workdir / f"results/{task}/selection/report.csv", dtype={"sample_id": str})
        assert len(manifest) == block["samples"] == selection.loc[task, "kept"]
        assert selection.loc[task, "candidates"] == len(candidates) == len(report)
        assert set(manifest.sample_id) == set(report.sample_id[report.kept])
    # csr keeps the questions SmolLM2 answers correctly, the longest prompts: against the answer keys the
    # uncompressed accuracy is then 100 % by construction, and the tables say so.
    assert selection.loc["csr", "policy"] == "correct_longest"
    report = pd.read_csv(workdir / "results/csr/selection/report.csv")
    kept_lengths = [len(t) for t in pd.read_csv(workdir / "results/csr/manifest.csv").text]
    candidates = pd.read_csv(workdir / "results/csr/candidates.csv").set_index("sample_id")
    shorter = [len(candidates.loc[s, "text"]) for s in report.sample_id[report.reason == "shorter prompt"]]
    assert not shorter or max(shorter) <= min(kept_lengths)
    original = json.loads((workdir / "results/csr/original/scores.json").read_text())
    assert original["reference"] == "ground_truth" and original["value"] == 100.0
    markdown = (workdir / "results/tables/rate_accuracy.md").read_text()
    assert "csr" in markdown and "100 % by construction" in markdown


@pytest.mark.e2e
def test_a_new_head_reruns_scoring_not_extraction(demo_run):
    workdir, config = demo_run
    config = copy.deepcopy(config)
    config["tasks"]["seg"]["head"]["seed"] = 5
    result = snakemake(workdir, config, "--dry-run")
    assert result.returncode == 0, result.stderr[-4000:]
    stats = job_stats(result.stdout + result.stderr)
    assert stats["head"] == 1 and stats["score_original"] == 1
    # every seg point is rescored: the run.codecs labels (VVenC, the native Hyperprior and the universal codecs)
    # in the task's one score_task job (run.score_jobs: task), the tti models (generalizability) in their own
    labels = {c for t, c, _ in coded_points(config) + generalizability_points(config) if t == "seg"}
    assert len(labels) == 5 and stats["score_task"] == 1 and stats["score"] == 1
    assert not {"candidates", "select", "extract", "preprocess", "code"} & set(stats)


@pytest.mark.e2e
def test_a_task_profile_runs_its_task_under_its_own_name(tmp_path):
    """A task profile (`tasks.cls_copy: {task: cls, ...}`, cls's block) runs cls's code under its own name: its
    own results folder, store and table rows, with the numbers of cls itself."""
    config = demo_config()
    config["run"] = {**config["run"], "tasks": ["cls", "cls_copy"], "codecs": ["vvenc"]}
    config["tasks"]["cls_copy"] = {**config["tasks"]["cls"], "task": "cls"}
    config["codecs"]["vvenc"] = {**config["codecs"]["vvenc"], "points": [42], "tasks": ["cls", "cls_copy"]}
    result = snakemake(tmp_path, config)
    assert result.returncode == 0, result.stderr[-4000:]
    results = tmp_path / "results"
    for label in ("original", "vvenc"):
        # the uncompressed scores are one record, a codec's a list of them
        ours, theirs = (json.loads((results / f"{t}/{label}/scores.json").read_text()) for t in ("cls", "cls_copy"))
        ours, theirs = ([x] if isinstance(x, dict) else x for x in (ours, theirs))
        assert [r["task"] for r in theirs] == ["cls_copy"] * len(ours)
        assert [{**r, "task": "cls"} for r in theirs] == ours
    from lamofc_lib.store import FeatureStore

    stores = [FeatureStore(results / f"{t}/features.zarr") for t in ("cls", "cls_copy")]
    assert stores[1].attrs["task"] == "cls_copy"
    assert all(np.array_equal(a, b) for a, b in zip(*(s.sample(0).values() for s in stores), strict=True))
    table = pd.read_csv(results / "tables/rate_accuracy.csv", dtype={"point": str})
    rows = {t: table[table.task == t].drop(columns="task").reset_index(drop=True) for t in ("cls", "cls_copy")}
    pd.testing.assert_frame_equal(rows["cls"], rows["cls_copy"])


def dry_run_jobs(workdir: Path, config: dict, repo: Path = REPO) -> dict[str, int]:
    """The jobs a dry run schedules (rule -> count), {} when there is nothing to be done."""
    result = snakemake(workdir, config, "--dry-run", repo=repo)
    assert result.returncode == 0, result.stderr[-4000:]
    output = result.stdout + result.stderr
    return {} if "Nothing to be done" in output else job_stats(output)


@pytest.fixture
def repo_copy(demo_run, tmp_path):
    """A copy of the checkout's workflow and library to edit, as a developer edits theirs; the demo run's results
    are up to date for it (where the checkout lies does not count)."""
    import shutil

    for name in ("Snakefile", "workflow", "lamofc_lib", "config", "envs"):
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, tmp_path / name)
    workdir, config = demo_run
    assert dry_run_jobs(workdir, config, repo=tmp_path) == {}
    return tmp_path


def edit(path: Path) -> None:
    with open(path, "a") as f:
        f.write("\n# edited\n")


def full_run_jobs(workdir: Path) -> dict[str, int]:
    """The jobs of the demo run from scratch (its log's job stats)."""
    return job_stats((workdir / "run.log").read_text())


# The demo run codes 5 tasks of at most 20 samples (one code job per task and point): VVenC at 2 QPs, the
# Hyperprior at 2 lambdas per task (10 models) and at the trained_on task's 2 lambdas for the 2 generalizability
# pairs (seg -> tti, tti -> seg); the universal codecs one code job per task and lambda (9 tasks); one
# score_task job per task (run.score_jobs: task) and one score job per generalizability label. What follows a
# coded point: the rate-accuracy, D-A, BD-rate and complexity tables, each task's rate-accuracy and D-A figures
# (a job per task of the run: 11), the accuracy-drop figure and the provenance; a score_task job also rewrites the
# native Hyperprior's scores, which the generalizability table reads.
VVENC_POINTS = 5 * 2
HYPERPRIOR_POINTS = 5 * 2 + 2 * 2
SCORE_TASK_JOBS = 5  # run.score_jobs task: one job per task scores every run.codecs label (of LaMoFC's five,
# which VVenC and the Hyperprior code; dinov3_in1k's job scores the universal codecs' alone)
UNIVERSAL_JOBS = 2 * 2 * 11  # hyperprior_u and elic, two lambdas, each of the 11 tasks in a job of its own
TABLES = {
    "rate_accuracy": 1,
    "da_r2": 1,
    "bd_rate": 1,
    "complexity": 1,
    "plot_rate_accuracy": 1,
    "plot_task_figures": 11,
    "provenance": 1,
    "all": 1,
}


@pytest.mark.e2e
def test_demo_scores_each_dinov3_split_block_on_its_own_with_its_own_rate(demo_run):
    """dinov3_in1k's two results per point share the whole file's rate (both tensors coded, as LaMoFCBench reports
    it); each one's bpfp_injected is its own tensor's rate, as the per-tensor table gives it."""
    workdir, _ = demo_run
    table = pd.read_csv(workdir / "results/tables/rate_accuracy.csv", dtype={"point": str})
    tensors = pd.read_csv(workdir / "results/tables/tensors.csv", dtype={"point": str})
    coded = table[table.task.str.startswith("dinov3_in1k:") & (table.codec != "original")]
    assert len(coded) == 8
    for (codec, point), rows in coded.groupby(["codec", "point"]):
        assert rows.bpfp.nunique() == 1
        own = tensors[(tensors.task == "dinov3_in1k") & (tensors.codec == codec) & (tensors.point == point)]
        assert sorted(own.tensor) == ["layer.1.0", "layer.3.0"] and set(own.dtype) == {"float32"}
        for row in rows.itertuples():
            block = row.task.rsplit(".", 1)[1]
            assert row.bpfp_injected == pytest.approx(float(own[own.tensor == f"layer.{block}.0"].bpfp.iloc[0]))
    predictions = pd.read_csv(workdir / "results/dinov3_in1k/original/predictions.csv")
    assert sorted(set(predictions.variant)) == ["layer.1", "layer.3"]
    assert (workdir / "results/figures/dinov3_in1k_rate_accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # VVenC codes LaMoFC's tasks alone: the task's one score job (run.score_jobs: task) leaves its label empty
    assert json.loads((workdir / "results/dinov3_in1k/vvenc/scores.json").read_text()) == []
    assert not list((workdir / "results/dinov3_in1k/vvenc").glob("*/bitstreams"))


@pytest.mark.e2e
def test_a_config_writing_its_keys_in_another_order_reruns_nothing(demo_run):
    workdir, config = demo_run

    def reversed_keys(value):
        if isinstance(value, dict):
            return {k: reversed_keys(value[k]) for k in reversed(list(value))}
        return [reversed_keys(v) for v in value] if isinstance(value, list) else value

    path = workdir / "reordered.yaml"
    path.write_text(yaml.safe_dump(reversed_keys(config), sort_keys=False))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir)]
    result = subprocess.run(
        [*cmd, "--configfile", str(path), "--cores", "2", "--dry-run"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Nothing to be done" in result.stdout + result.stderr


@pytest.mark.e2e
def test_editing_preprocess_reruns_preprocess_and_everything_downstream(demo_run, repo_copy):
    workdir, config = demo_run
    edit(repo_copy / "lamofc_lib" / "preprocess.py")
    full = full_run_jobs(workdir)
    # every frame store, so every coded point and every model (training packs frames with preprocess.py), and
    # the feature statistics (which read the truncation ranges and pack with it); not the sources, selection,
    # heads, features and uncompressed scores
    upstream = {"candidates", "candidates_train", "select", "select_train", "head", "extract", "extract_train"}
    upstream |= {"convert_model", "calibrate"}  # K-means centres are fitted on the raw features
    assert dry_run_jobs(workdir, config, repo=repo_copy) == {
        rule: n for rule, n in full.items() if rule not in upstream | {"score_original"}
    }
    # LaMoFC's five tasks' VVC, learned and K-means frames; the six LaMoFCBench scenarios' K-means frames
    assert full["preprocess"] == 5 * 3 + 6 and full["code"] == VVENC_POINTS + HYPERPRIOR_POINTS + UNIVERSAL_JOBS
    assert full["feature_statistics"] == 11  # per task: LaMoFC's five and the six LaMoFCBench scenarios
    # one K-means calibration per training split: lm_gsm8k's centres are lm_arc_challenge's (train: from)
    assert full["calibrate"] == 11 - 1 and full["extract_train"] == 11 - 1


@pytest.mark.e2e
def test_editing_a_codec_reruns_only_its_coding_and_scoring_and_the_tables(demo_run, repo_copy):
    workdir, config = demo_run
    edit(repo_copy / "lamofc_lib" / "codecs" / "vvenc.py")
    expected = {"code": VVENC_POINTS, "score_task": SCORE_TASK_JOBS, "generalizability": 1, **TABLES}
    assert dry_run_jobs(workdir, config, repo=repo_copy) == expected


@pytest.mark.e2e
def test_editing_the_analysis_reruns_only_the_tables_and_figures(demo_run, repo_copy):
    workdir, config = demo_run
    edit(repo_copy / "lamofc_lib" / "analysis.py")
    # every table (and the figures drawn from them); not the training curves or the feature figures, drawn from
    # the jobs' own files by lamofc_lib/figures.py
    expected = {**TABLES, "generalizability": 1, "feature_statistics_table": 1}
    assert dry_run_jobs(workdir, config, repo=repo_copy) == expected


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("codec", "key", "value", "points", "labels"),
    [
        ("vvenc", "preset", "medium", VVENC_POINTS, {"score_task": SCORE_TASK_JOBS}),
        ("hyperprior", "padding", "zero", HYPERPRIOR_POINTS, {"score_task": SCORE_TASK_JOBS, "score": 2}),
    ],
)
def test_a_codec_setting_change_reruns_only_that_codecs_jobs(demo_run, codec, key, value, points, labels):
    workdir, config = demo_run
    config = copy.deepcopy(config)
    assert config["codecs"][codec][key] != value
    config["codecs"][codec][key] = value
    # the hyperprior's models are trained before coding, with no padding: not retrained; the task's score_task
    # job rescores every label, the native Hyperprior's too, which the generalizability table reads
    expected = {"code": points, **labels, "generalizability": 1, **TABLES}
    assert dry_run_jobs(workdir, config) == expected


@pytest.mark.e2e
def test_encode_resources_grow_with_frame_size(demo_run):
    workdir, config = demo_run
    blocks = (workdir / "run.log").read_text().split("\n\n")

    def encode_resources(task):
        block = next(b for b in blocks if "rule code:" in b and f"results/{task}/vvenc/32/bitstreams/000" in b)
        return dict(kv.split("=") for kv in block.split("resources: ")[1].splitlines()[0].split(", "))

    base = config["codecs"]["vvenc"]["resources"]
    # cls: 8 frames of 257 x 96 (0.0247 Mpx each) in one job; tti: 4 frames of 128 x 128 (0.0164 Mpx). A code
    # job also decodes: its runtime adds the decode request, its memory is the larger of the two.
    cls, tti = encode_resources("cls"), encode_resources("tti")
    encode, decode = base["encode"], base["decode"]
    assert int(cls["runtime"]) == encode["runtime"] + math.ceil(1000 * 8 * 257 * 96 / 1e6) + decode["runtime"]
    assert int(cls["mem_mb"]) == max(encode["mem_mb"] + math.ceil(100000 * 257 * 96 / 1e6), decode["mem_mb"])
    assert int(cls["mem_mb"]) > decode["mem_mb"]
    frames = config["tasks"]["tti"]["samples"]
    assert int(tti["runtime"]) == encode["runtime"] + math.ceil(1000 * frames * 128 * 128 / 1e6) + decode["runtime"]


@pytest.mark.e2e
def test_demo_hyperprior_trains_one_model_per_task_and_lambda_with_its_loss_log(demo_run):
    """Each task's lambdas give a model each, trained for the configured steps, whose points the table lists with
    a rate. Which lambda spends more bits is not asserted: after a few hundred CPU steps that is an outcome of
    training, and a last-bit difference of the host's arithmetic once reversed tti's (0.1429 against 0.1536
    BPFP; docs/benchmark.md, "Determinism")."""
    workdir, config = demo_run
    table = pd.read_csv(workdir / "results/tables/rate_accuracy.csv", dtype={"point": str})
    for task, lambdas in config["codecs"]["hyperprior"]["points"].items():
        rows = table[(table.task == task) & (table.codec == "hyperprior")].set_index("point")
        assert sorted(rows.index) == sorted(format_point(v) for v in lambdas)
        assert (rows.bpfp > 0).all(), (task, rows)
        for lam in lambdas:
            folder = workdir / f"results/models/hyperprior/{task}/{format_point(lam)}"
            assert (folder / "loss.png").read_bytes()[:4] == b"\x89PNG"
            log = pd.read_csv(folder / "loss.csv")
            assert log.step.iloc[-1] == config["codecs"]["hyperprior"]["training"][task]["steps"]


@pytest.mark.e2e
def test_demo_generalizability_table(demo_run):
    workdir, config = demo_run
    table = pd.read_csv(workdir / "results/tables/generalizability.csv", dtype={"point": str})
    pairs = [(p["trained_on"], p["applied_to"]) for p in config["codecs"]["hyperprior"]["generalizability"]]
    lambdas = config["codecs"]["hyperprior"]["points"]
    expected = {(src, dst, format_point(v)) for src, dst in pairs for v in lambdas[src]}
    expected |= {(dst, dst, format_point(v)) for _, dst in pairs for v in lambdas[dst]}  # native models beside
    assert set(zip(table.trained_on, table.applied_to, table.point, strict=True)) == expected
    assert len(table) == len(expected)
    assert (table.bpfp > 0).all() and (table.mse > 0).all()
    # AD is a percentage of the uncompressed metric: undefined for tti, whose uncompressed FID is 0 to float
    # precision (-1.4e-14 with the demo's 4 images, 0 exactly with 6)
    defined = table.original_value > 0
    assert table.accuracy_drop[defined].notna().all() and table.accuracy_drop[~defined].isna().all()
    assert set(table.applied_to[~defined]) <= {"tti"}
    # A cross-task run codes the applied_to task's own features: its bitstreams sit under that task and their
    # sidecars name the model's training task.
    src, dst = pairs[0]
    sidecar = json.loads(
        next((workdir / f"results/{dst}/hyperprior@{src}").glob("*/bitstreams/*/00000.json")).read_text()
    )
    assert sidecar["task"] == dst and f"trained on {src}" in sidecar["codec_version"]


@pytest.mark.e2e
def test_demo_bpfp_is_bitstream_bytes_over_feature_points(demo_run):
    workdir, config = demo_run
    point_dir = workdir / "results/csr/vvenc/32"
    predictions = pd.read_csv(point_dir.parent / "predictions.csv", dtype={"point": str})
    predictions = predictions[predictions.point == "32"]
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
def test_demo_hyperprior_bpfp_counts_string_bytes_not_padding(demo_run):
    workdir, config = demo_run
    lam = format_point(config["codecs"]["hyperprior"]["points"]["cls"][0])
    point_dir = workdir / f"results/cls/hyperprior/{lam}"
    predictions = pd.read_csv(point_dir.parent / "predictions.csv", dtype={"point": str})
    predictions = predictions[predictions.point == lam]
    bitstreams = sorted((point_dir / "bitstreams").glob("*/*.bin"))
    from lamofc_lib.store import FeatureStore

    store = FeatureStore(workdir / "results/cls/features.zarr")
    # 257 x 96 frames are coded padded to 320 x 128; BPFP divides by the 257 x 96 feature points only.
    assert store.points(0) == 257 * 96
    expected = [8 * path.stat().st_size / store.points(i) for i, path in enumerate(bitstreams)]
    assert predictions["bpfp"].tolist() == pytest.approx(expected, rel=1e-12)


@pytest.mark.e2e
def test_features_from_reference_files_skip_selection_and_extraction(demo_run, tmp_path):
    """The demo's cls features written as the reference does (one <image stem>.npy per sample) and coded by a
    second workflow that imports them: same scores as the run that extracted them."""
    import numpy as np

    from lamofc_lib.store import FeatureStore

    workdir, config = demo_run
    store = FeatureStore(workdir / "results/cls/features.zarr")
    folder = tmp_path / "feature_test"
    folder.mkdir()
    for i, sample_id in enumerate(store.sample_ids):
        np.save(folder / f"{sample_id}.npy", store.read(i))
    config = copy.deepcopy(config)
    config["run"].update(tasks=["cls"], codecs=["vvenc"])
    config["codecs"]["vvenc"]["points"] = [42]
    config["tasks"]["cls"]["features_from"] = str(folder)
    second = tmp_path / "second"
    second.mkdir()
    result = snakemake(second, config)
    assert result.returncode == 0, result.stderr[-4000:]
    stats = job_stats(result.stderr)
    assert stats["import_features"] == 1 and "extract" not in stats
    summary = json.loads((second / "results/cls/selection/summary.json").read_text())
    assert summary["policy"] == "files" and summary["kept"] == len(store.sample_ids)
    first = json.loads((workdir / "results/cls/original/scores.json").read_text())
    again = json.loads((second / "results/cls/original/scores.json").read_text())
    assert {k: again[k] for k in ("bpfp", "mse", "value")} == {k: first[k] for k in ("bpfp", "mse", "value")}
    first = next(r for r in json.loads((workdir / "results/cls/vvenc/scores.json").read_text()) if r["point"] == "42")
    [again] = json.loads((second / "results/cls/vvenc/scores.json").read_text())
    assert {k: again[k] for k in ("bpfp", "mse", "value")} == {k: first[k] for k in ("bpfp", "mse", "value")}


@pytest.mark.e2e
def test_adding_a_qp_runs_only_its_jobs_and_unchanged_rerun_does_nothing(demo_run):
    workdir, config = demo_run
    kept = workdir / "results/cls/vvenc/32/bitstreams/000/00000.json"
    kept_mtime = kept.stat().st_mtime_ns
    config = copy.deepcopy(config)
    config["codecs"]["vvenc"]["points"] = [22, 32, 42]
    result = snakemake(workdir, config)
    assert result.returncode == 0, result.stderr[-4000:]
    # the new QP's code job per task; each task's points rescored in one job; the old points not coded again
    assert job_stats(result.stderr) == {"code": 5, "score_task": 5, "generalizability": 1, **TABLES}
    assert kept.stat().st_mtime_ns == kept_mtime
    table = pd.read_csv(workdir / "results/tables/rate_accuracy.csv", dtype={"point": str})
    assert set(table[table.codec == "vvenc"].point) == {"22", "32", "42"}

    again = snakemake(workdir, config, "--dry-run")
    assert again.returncode == 0, again.stderr[-4000:]
    assert "Nothing to be done" in again.stdout + again.stderr


@pytest.mark.e2e
def test_rerunning_a_hyperprior_point_gives_the_same_bitstreams(demo_run):
    """Determinism across jobs: encoding one point again, in a new job, reproduces its bytes."""
    workdir, config = demo_run
    lam = format_point(config["codecs"]["hyperprior"]["points"]["tti"][0])
    point_dir = workdir / f"results/tti/hyperprior/{lam}"
    before = {p.name: p.read_bytes() for p in (point_dir / "bitstreams").glob("*/*.bin")}
    shard = f"results/tti/hyperprior/{lam}/bitstreams/000"
    result = snakemake(workdir, config, "--forcerun", shard, "--until", shard)
    assert result.returncode == 0, result.stderr[-4000:]
    after = {p.name: p.read_bytes() for p in (point_dir / "bitstreams").glob("*/*.bin")}
    assert before and after == before


@pytest.mark.e2e
def test_a_truncated_bitstream_fails_its_score_job_and_nothing_downstream(demo_run):
    """A bitstream truncated after coding: its reconstruction is no longer its decoding, so scoring refuses it,
    naming the file, and leaves no scores; the tables are not rewritten. One codec's (the check reads the
    sidecar's byte count whatever the codec: tests/test_coding.py and test_hyperprior.py refuse both kinds'
    altered bitstreams; each case here cost a minute to three of CI, its rescoring and tables rerun)."""
    workdir, config = demo_run
    codec, point = "hyperprior", format_point(config["codecs"]["hyperprior"]["points"]["cls"][0])
    bitstream = workdir / f"results/cls/{codec}/{point}/bitstreams/000/00001.feature.bin"
    scores = workdir / f"results/cls/{codec}/scores.json"
    table = workdir / "results/tables/rate_accuracy.csv"
    original, table_before = bitstream.read_bytes(), table.read_bytes()
    try:
        bitstream.write_bytes(original[: len(original) // 2])
        result = snakemake(workdir, config, "--forcerun", f"results/cls/{codec}/scores.json")
        assert result.returncode != 0
        log = (workdir / "logs/cls/score.log").read_text()  # the task's score_task job
        assert "00001.feature.bin" in log and "truncated or altered" in log
        assert not scores.exists()
        assert table.read_bytes() == table_before
    finally:
        bitstream.write_bytes(original)
        assert snakemake(workdir, config).returncode == 0


@pytest.mark.parametrize(
    "change, key",
    [
        (lambda c: c["run"]["tasks"].append("pose"), "run.tasks"),
        (lambda c: c["codecs"]["vvenc"]["points"].append(64), "codecs.vvenc.points"),
        (
            lambda c: c["tasks"]["cls"].update(source={"kind": "imagenet", "root": "no/such/folder"}),
            "tasks.cls.source.root",
        ),
        # the demo's seg training split has 4 samples; the reference calibrates on 10
        (lambda c: c["codecs"]["hyperprior"].update(quantizer="kmeans"), "codecs.hyperprior.kmeans.samples"),
        (
            lambda c: c["codecs"]["hyperprior"].update(
                quantizer="kmeans", kmeans={"samples": 4, "mapping": {"csr": {"path": "no/such/mapping"}}}
            ),
            "codecs.hyperprior.kmeans.mapping.csr.path",
        ),
    ],
    ids=["unknown-task", "qp-out-of-range", "missing-data-path", "kmeans-samples", "kmeans-mapping"],
)
def test_bad_config_stops_at_start_naming_the_key(tmp_path, change, key):
    config = demo_config()
    change(config)
    result = snakemake(tmp_path, config, "--dry-run")
    assert result.returncode != 0
    assert f"LaMoFC configuration error: config key {key}" in result.stderr
    assert not (tmp_path / "results").exists()


def test_kmeans_schedules_one_calibration_per_task_before_its_frames_and_models(tmp_path):
    """The Hyperprior on K-means codes: one calibrate job per task, on its training features; the Hyperprior's
    frames and training read that calibration, VVenC's frames stay uniform; a user's mapping is imported."""
    config = demo_config()
    config["run"]["codecs"] = ["vvenc", "hyperprior"]  # the demo's universal K-means codecs aside
    mapping = tmp_path / "dinov3"
    mapping.mkdir()
    (mapping / "mapping.json").write_text("{}")
    config["codecs"]["hyperprior"].update(
        quantizer="kmeans", kmeans={"samples": 4, "mapping": {"cls": {"path": str(mapping)}}}
    )
    result = snakemake(tmp_path, config, "--dry-run", "--printshellcmds")
    assert result.returncode == 0, result.stderr[-4000:]
    output = result.stdout + result.stderr
    stats = job_stats(output)
    assert stats["calibrate"] == 5 and stats["preprocess"] == 10
    for task in ("seg", "dpt", "csr", "tti"):
        assert f"results/{task}/calibration/kmeans8-train4" in output
        assert f"results/{task}/frames/kmeans8-train4-normalized.zarr" in output
        assert f"results/{task}/frames/vvc-quantized10.zarr" in output
    assert "results/cls/calibration/kmeans8-mapping" in output and "dinov3/mapping.json" in output
    assert "results/cls/calibration/kmeans8-train4" not in output


def test_a_universal_codec_trains_one_model_per_lambda_on_its_tasks_mixed(tmp_path):
    """ELIC universal on seg, csr and tti (DT-UFC's hybrid) on K-means codes: two train jobs (one per lambda), each
    reading the three tasks' training features and calibrations; every task is coded by label elic@hybrid."""
    config = demo_config()
    config["run"]["codecs"] = ["vvenc", "elic"]
    config["run"]["tasks"] = ["cls", "seg", "dpt", "csr", "tti"]  # training splits of 4 samples or more
    config["codecs"]["elic"] = {
        "universal": ["seg", "csr", "tti"],
        "quantizer": "kmeans",
        "kmeans": {"samples": 4},
        "points": {"hybrid": [0.001, 0.02]},
        "training": {"hybrid": {"steps": 10, "batch": 2, "crop": [64, 64]}},
    }
    result = snakemake(tmp_path, config, "--dry-run", "--printshellcmds")
    assert result.returncode == 0, result.stderr[-4000:]
    output = result.stdout + result.stderr
    stats = job_stats(output)
    assert stats["train"] == 2 and stats["calibrate"] == 5
    for point in ("0.001", "0.02"):
        job = output[output.index(f"results/models/elic/hybrid/{point}/model.pt") - 2000 :]
        job = job[job.rindex("rule train:") :]
        job = job[: job.index("rule ", 5)] if "rule " in job[5:] else job
        for task in ("seg", "csr", "tti"):
            assert f"results/{task}/train/features.zarr" in job and f"results/{task}/calibration/kmeans8-train4" in job
        assert "results/cls/train/features.zarr" not in job
    # one code job per task and lambda, each with the lambda's one model, into the task's folder of that point
    assert stats["code"] == 5 * len(config["codecs"]["vvenc"]["points"]) + 5 * 2
    jobs = [job for job in output.split("\nrule ") if job.startswith("code:") and "elic@hybrid" in job]
    for point in ("0.001", "0.02"):
        for task in ("cls", "seg", "dpt", "csr", "tti"):
            [job] = [job for job in jobs if f"results/{task}/elic@hybrid/{point}/bitstreams/000" in job]
            assert f"results/models/elic/hybrid/{point}/model.pt" in job
            assert f"results/{task}/frames/kmeans8-train4-normalized.zarr" in job
    assert "results/models/elic/cls" not in output


def test_a_universal_codec_trains_on_its_tasks_when_they_do_not_run(tmp_path):
    """Running cls alone, the demo's universal models still train on seg, csr and tti's training features: the
    same models whichever tasks run."""
    config = demo_config()
    config["run"].update(tasks=["cls"], codecs=["vvenc", "elic"])
    result = snakemake(tmp_path, config, "--dry-run", "--printshellcmds")
    assert result.returncode == 0, result.stderr[-4000:]
    output = result.stdout + result.stderr
    stats = job_stats(output)
    # training features of the three tasks, and cls's own for its K-means calibration
    assert stats["train"] == len(config["codecs"]["elic"]["points"]["hybrid"]) and stats["extract_train"] == 4
    for task in ("seg", "csr", "tti"):
        assert f"results/{task}/train/features.zarr" in output and f"results/{task}/features.zarr" not in output
    assert "results/cls/elic@hybrid/" in output and "results/seg/elic@hybrid/" not in output


@pytest.mark.parametrize(
    "change, message",
    [
        ({"universal": ["seg", "pose"]}, "codecs.elic.universal"),  # schema: not a task
        ({"run": {"tasks": ["cls", "seg"]}, "drop": "csr"}, "codecs.elic.universal: ['csr'] have no block under tasks"),
        ({"generalizability": [{"trained_on": "seg", "applied_to": "cls"}]}, "a universal codec's models code"),
    ],
    ids=["unknown-task", "task-without-block", "generalizability"],
)
def test_a_universal_codec_is_checked_at_start(tmp_path, change, message):
    config = demo_config()
    config["run"]["codecs"] = ["vvenc", "elic"]
    config["codecs"]["elic"] = {
        "universal": ["seg", "csr"],
        "truncation": "learned",
        "points": {"hybrid": [0.01]},
        "training": {"hybrid": {"steps": 10}},
    }
    config["codecs"]["elic"].update({k: v for k, v in change.items() if k not in ("run", "report", "drop")})
    if "drop" in change:
        del config["tasks"][change["drop"]]
    config["run"].update(change.get("run", {}))
    config.setdefault("report", {}).update(change.get("report", {}))
    result = snakemake(tmp_path, config, "--dry-run")
    assert result.returncode != 0 and message in result.stderr, result.stderr[-2000:]


def test_paper_config_without_vtm_stops_naming_the_variable_and_the_fallback(tmp_path, monkeypatch):
    monkeypatch.delenv("LAMOFC_VTM_DIR", raising=False)
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    assert config["run"]["codecs"][0] == "vtm"  # the paper's VVC baseline
    config["run"]["tasks"] = ["tti"]
    config["tasks"]["tti"]["source"]["path"] = paper_sources(tmp_path / "data")["captions"]
    config["tasks"]["tti"]["train"]["source"] = config["tasks"]["tti"]["source"]
    result = snakemake(tmp_path, config, "--dry-run")
    assert result.returncode != 0
    assert "config key codecs.vtm.encoder: not set and $LAMOFC_VTM_DIR" in result.stderr
    assert "replace vtm by vvenc in run.codecs" in result.stderr


def test_paper_config_builds_the_full_dag(tmp_path, monkeypatch):
    """The DAG `python -m lamofc_lib.benchmarks dag` builds: config/config.yaml's LaMoFC tasks with VTM and the
    Hyperprior, and its LaMoFCBench scenarios (every task block run.tasks leaves out) with the universal codecs,
    which code every task."""
    monkeypatch.setenv("LAMOFC_VTM_DIR", str(vtm_stand_ins(tmp_path / "vtm")))
    config = paper_config(paper_sources(tmp_path / "data"))
    lamofc = ["cls", "seg", "dpt", "csr", "tti"]
    scenarios = [t for t in yaml.safe_load((REPO / "config" / "config.yaml").read_text())["tasks"] if t not in lamofc]
    assert scenarios[:3] == ["dinov3_in1k", "dinov3_in_a", "dinov3_in_r"]
    assert config["run"]["tasks"] == lamofc + scenarios
    assert config["run"]["codecs"] == ["vtm", "hyperprior", "hyperprior_u", "elic"]
    result = snakemake(tmp_path, config, "--dry-run")
    assert result.returncode == 0, result.stderr[-4000:]
    tasks, universal_points = len(lamofc + scenarios), 2 * 5  # hyperprior_u and elic at 5 hybrid lambdas each
    # VTM: one job per sample and QP: (500 + 100 + 80 + 500 + 500) x 5 encodings, one decoding per task and QP.
    # Hyperprior: 100 samples per encoding job: cls, csr, tti (500 samples) 5 shards, seg (100) and dpt (80) 1;
    # x 5 lambdas (85). Generalizability (paper Table 6) at the trained_on task's 5 lambdas: seg->csr, seg->tti,
    # csr->tti, tti->csr 25 encoding jobs each, csr->seg and tti->seg 5. The universal codecs: a job per task,
    # lambda and group of their samples_per_job (100): 60 groups of the 21 tasks' samples. The language
    # scenarios: 4 of each model's 5 take its ARC-Challenge run's training split (train: from), 8 splits fewer.
    per_task = ("candidates", "extract", "head", "select")
    assert job_stats(result.stdout + result.stderr) == {
        "all": 1,
        **dict.fromkeys(per_task, tasks),
        **dict.fromkeys(("candidates_train", "extract_train", "select_train"), tasks - 8),
        "calibrate": tasks - 8,  # K-means centres per training split, shared by the two universal codecs
        "da_r2": 1,
        "code": 1680 * 5 + 85 + 4 * 25 + 2 * 5 + universal_points * (5 + 1 + 1 + 5 + 5 + 10 + 10 + 10 + 1 + 1 + 10 + 1),
        "generalizability": 1,
        "plot_rate_accuracy": 1,
        "plot_task_figures": tasks,
        "plot_training": 1,
        # LaMoFC's two frame stores per LaMoFC task (VTM's, the Hyperprior's); the K-means frames of every task
        "preprocess": 2 * len(lamofc) + tasks,
        "rate_accuracy": 1,
        # per task and codec: VTM and the Hyperprior on LaMoFC's tasks, the 6 generalizability pairs, the
        # universal codecs on every task
        "score": 2 * len(lamofc) + 6 + 2 * tasks,
        "score_original": tasks,
        "train": 25 + universal_points,
        # the report: feature statistics, table and figures per task; the tables and figures over all points
        "feature_statistics": tasks,
        "feature_statistics_table": 1,
        "plot_features": tasks,
        "bd_rate": 1,
        "complexity": 1,
        "provenance": 1,
    }


@pytest.mark.e2e
def test_demo_writes_the_reports_tables_figures_and_provenance(demo_run):
    import hashlib
    import subprocess as sp

    import torch

    from lamofc_lib.store import FeatureStore

    workdir, config = demo_run
    tasks, results = ("cls", "csr", "dpt", "seg", "tti"), workdir / "results"
    bd = pd.read_csv(results / "tables/bd_rate.csv", keep_default_na=False)
    # the anchor is the first of run.codecs (vvenc); each number is there or its reason is (dinov3_in1k's: VVenC
    # does not code it)
    learned = ("elic@hybrid", "hyperprior", "hyperprior_u@hybrid")
    variants = [
        (t, c, "vvenc")
        for t in ("dinov3_in1k:layer.1", "dinov3_in1k:layer.3", "dinov3_ade20k", "dinov3_nyu", *LANGUAGE)
        for c in sorted(LAMOFCBENCH_LABELS)
    ]
    assert sorted(zip(bd.task, bd.codec, bd.anchor, strict=True)) == sorted(
        [(t, c, "vvenc") for t in tasks for c in learned] + variants
    )
    for r in bd.itertuples():
        for name, value in (("BD-rate", r.bd_rate), ("BD-metric", r.bd_metric)):
            assert value != "" or f"{name}: " in r.note, (r.task, name)
    assert set(bd.method) == {"pchip"}
    complexity = pd.read_csv(results / "tables/complexity.csv")
    generalized = [("seg", "hyperprior@tti"), ("tti", "hyperprior@seg")]
    pairs = [(t, c) for t in tasks for c in ("hyperprior", "vvenc", *LAMOFCBENCH_LABELS)] + generalized
    lamofcbench = ("dinov3_in1k", "dinov3_ade20k", "dinov3_nyu", *LANGUAGE)
    pairs += [(t, c) for t in lamofcbench for c in LAMOFCBENCH_LABELS]
    assert sorted(zip(complexity.task, complexity.codec, strict=True)) == sorted(pairs)
    for row in complexity.itertuples():
        # a model applied to another task counts the points of the task it was trained on
        points = len(operating_points(config, codec_name(row.codec), trained_on(row.task, row.codec)))
        assert row.points == points and row.samples == points * config["tasks"][row.task]["samples"]
        assert row.encode_s_per_sample > 0 and row.decode_s_per_sample > 0
    stats = pd.read_csv(results / "tables/feature_statistics.csv", dtype={"layer": str})
    assert list(stats[stats.task == "dpt"].layer) == ["0", "1", "2", "3"]  # per-layer truncation
    for task in tasks:
        store = FeatureStore(results / f"{task}/features.zarr")
        rows = stats[stats.task == task]
        assert rows["values"].sum() == sum(store.points(i) for i in range(len(store)))
        assert ((rows["min"] <= rows["p50"]) & (rows["p50"] <= rows["max"])).all()
    matrix = pd.read_csv(results / "tables/generalizability_matrix.csv").set_index(["codec", "trained_on"])
    assert sorted(matrix.index) == [("hyperprior", "seg"), ("hyperprior", "tti")]
    assert sorted(matrix.columns) == ["seg", "tti"]
    record = json.loads((results / "provenance.json").read_text())
    head = sp.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert record["git"]["revision"] == (head or None)
    assert record["packages"]["torch"] == torch.__version__.split("+")[0]
    assert any("libvvenc" in v or "VVenC" in v for v in record["codecs"]["vvenc"])
    for task in tasks:
        digest = hashlib.sha256((results / f"{task}/head.pt").read_bytes()).hexdigest()
        assert record["models"][task]["head_sha256"] == digest
    assert record["config"]["report"] == {
        "anchor": "vvenc",
        "bd_method": "pchip",
        "bd_points": "pareto",
        "tensor_accuracy": ["hyperprior_u"],
    }
    # the job that wrote it ran on the pinned code path: torch's AVX2 kernels, no oneDNN, MKL's AVX2 branch
    paths = record["cpu_paths"]
    assert paths["reproducible"] is True and paths["torch_cpu_capability"] == "AVX2"
    assert paths["torch_onednn"] is False and paths["environment"]["MKL_CBWR"] == "AVX2,STRICT"
    figures = [
        f"{t}_{kind}.png" for t in tasks for kind in ("distortion_accuracy", "feature_distribution", "feature_dct")
    ]
    for name in [*figures, "rate_accuracy_drop.png", "tensor_bit_shares.png"]:
        assert (results / "figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.e2e
def test_the_html_report_lists_every_table_and_figure_and_opens_without_errors(demo_run, tmp_path):
    import os
    import re
    import time

    import browser

    workdir, config = demo_run
    start = time.perf_counter()
    result = snakemake(workdir, config, "--report", "results/report.html")
    seconds = time.perf_counter() - start
    assert result.returncode == 0, result.stderr[-4000:]
    html = (workdir / "results/report.html").read_text()
    listed = set(re.findall(r'"(results/[^"]+)": \{"name": ', html))
    results = workdir / "results"
    expected = {
        p.relative_to(workdir).as_posix()
        for p in [*results.glob("tables/*.csv"), *results.glob("figures/*.png"), *results.glob("models/*/*/*/loss.png")]
    } | {"results/provenance.json"}
    assert listed == expected
    print(f"report: {seconds:.1f} s, {len(listed)} results")  # the report's time, for the notes (pytest -s)
    if browser.chromium() is None:
        if os.environ.get("LAMOFC_REQUIRE_CHROMIUM"):
            pytest.fail("LAMOFC_REQUIRE_CHROMIUM is set but chromium is not installed (envs/setup.sh --tests)")
        pytest.skip("chromium is not installed (envs/setup.sh --tests installs it)")
    page = browser.open_page((workdir / "results/report.html").as_uri(), tmp_path / "report.png")
    assert page.exceptions == []
    assert [m for m in page.messages if m[0] == "error"] == []
    for category in ("Tables", "Rate-accuracy", "Distortion-accuracy", "Features", "Training", "Provenance"):
        assert category in page.text
    assert "LaMoFC: feature coding benchmark" in page.text
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.e2e
def test_csr_features_from_the_converted_model_equal_the_gguf_models(demo_run):
    """The demo's csr jobs run SmolLM2 from the folder rule convert_model made of its GGUF file: a sample's
    feature equals the one the GGUF model itself gives (loaded directly, as before the conversion)."""
    import numpy as np

    from lamofc_lib.sources import read_manifest
    from lamofc_lib.store import FeatureStore
    from lamofc_lib.tasks.lamofc.csr import decoder_output, encode_prompt, load_llm

    workdir, config = demo_run
    model = config["tasks"]["csr"]["model"]
    # one folder per package and GGUF file, which the language scenario on SmolLM2 shares
    converted = f"results/models/gguf/{model['package']}/{Path(model['gguf_file']).stem}"
    assert model["gguf_file"] and (workdir / converted / "config.json").is_file()
    store = FeatureStore(workdir / "results/csr/features.zarr")
    assert store.attrs["model"]["converted"] == converted
    assert FeatureStore(workdir / "results/lm_arc_challenge/features.zarr").attrs["model"]["converted"] == converted
    net, tokenizer = load_llm(model, "cpu")
    text = read_manifest(workdir / "results/csr/manifest.csv")["text"].iloc[0]
    direct = decoder_output(net, config["tasks"]["csr"]["split"], encode_prompt(tokenizer, text))
    np.testing.assert_array_equal(direct.float().numpy().reshape(store.read(0).shape), store.read(0))
