"""lamofc_lib.workflow and lamofc_lib.code_hash: the coded points, labels, paths, params and code hashes the rules
are made of, on a small config whose expected values are written out by hand."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import yaml

from lamofc_lib import code_hash
from lamofc_lib import workflow as wf
from lamofc_lib.config import validate

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def config():
    raw = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    raw["run"].update(tasks=["cls", "seg"], codecs=["vvenc", "hyperprior"])
    raw["codecs"]["vvenc"]["points"] = [42, 32]
    raw["codecs"]["hyperprior"]["points"] = {"cls": [0.001, 0.003], "seg": [0.01]}
    raw["codecs"]["hyperprior"]["generalizability"] = [
        {"trained_on": "cls", "applied_to": "seg"},
        {"trained_on": "seg", "applied_to": "tti"},  # tti does not run: left out
    ]
    return validate(raw, check_paths=False)


def test_coded_points_are_every_task_codec_and_point_in_config_order(config):
    assert wf.coded_points(config) == [
        ("cls", "vvenc", "42"),
        ("cls", "vvenc", "32"),
        ("cls", "hyperprior", "0.001"),
        ("cls", "hyperprior", "0.003"),
        ("seg", "vvenc", "42"),
        ("seg", "vvenc", "32"),
        ("seg", "hyperprior", "0.01"),
    ]


def test_generalizability_runs_the_trained_on_tasks_lambdas_on_running_pairs_only(config):
    assert wf.generalizability_pairs(config) == [("cls", "seg")]
    assert wf.generalizability_points(config) == [
        ("seg", "hyperprior@cls", "0.001"),
        ("seg", "hyperprior@cls", "0.003"),
    ]
    without = {**config, "run": {**config["run"], "codecs": ["vvenc"]}}
    assert wf.generalizability_points(without) == []


def test_each_model_is_trained_once_even_when_applied_to_another_task(config):
    assert wf.trained_models(config) == [
        ("hyperprior", "cls", "0.001"),
        ("hyperprior", "cls", "0.003"),
        ("hyperprior", "seg", "0.01"),
    ]


def test_labels_paths_and_params(config):
    assert (wf.codec_name("hyperprior@cls"), wf.trained_on("seg", "hyperprior@cls")) == ("hyperprior", "cls")
    assert wf.trained_on("seg", "hyperprior") == "seg" and wf.is_trained(config, "hyperprior@cls")
    assert not wf.is_trained(config, "vvenc")
    assert wf.frames_path(config, "cls", "vvenc") == "results/cls/frames/vvc-quantized10.zarr"
    assert wf.frames_path(config, "seg", "hyperprior@cls") == "results/seg/frames/learned-normalized.zarr"
    assert wf.model_path(config, "seg", "hyperprior@cls", "0.001") == "results/models/hyperprior/cls/0.001/model.pt"
    # the schema's default bit depth included; points, threads and resources left out
    expected = {"preset": "faster", "truncation": "vvc", "samples_per_job": 20, "bit_depth": 10}
    assert wf.codec_settings(config, "vvenc") == expected


def test_retries_ask_for_more_memory_and_time_only():
    assert wf.retried("mem_mb", 1000, 3) == 3000 and wf.retried("runtime", 10, 2) == 20
    assert wf.retried("gpu", 1, 3) == 1


def test_coding_requests_grow_with_the_frames_they_code(config, tmp_path, monkeypatch):
    """A code job encodes and decodes: its request is the encode base (1000 MB / 10 min) plus 1000 MB per million
    values of its largest frame and 1000 min per million values it codes, and the decode base beside it (the
    larger memory, the runtimes added). Shard 0 (2 samples per job) codes frames of 0.5 and 0.25 million values."""
    from store_helpers import write_one

    monkeypatch.chdir(tmp_path)
    config = copy.deepcopy(config)
    config["codecs"]["vvenc"]["samples_per_job"] = 2
    spec = config["codecs"]["vvenc"]["resources"]
    spec["encode"] = {"mem_mb": 1000, "runtime": 10, "per_mpixel": {"mem_mb": 1000, "runtime": 1000}}
    spec["decode"] = {"mem_mb": 1200, "runtime": 5, "per_mpixel": {}}
    # dry run: no frames yet, the bases
    assert wf.coding_resource(config, "mem_mb", "cls", "vvenc", "0", 1) == 1200
    assert wf.coding_resource(config, "runtime", "cls", "vvenc", "0", 1) == 15
    shapes = [(1000, 500), (500, 500), (100, 10)]
    write_one(wf.frames_path(config, "cls", "vvenc"), ["a", "b", "c"], shapes, [np.ones(s) for s in shapes])
    assert wf.coding_resource(config, "mem_mb", "cls", "vvenc", "0", 1) == 1000 + 500
    assert wf.coding_resource(config, "runtime", "cls", "vvenc", "0", 1) == 10 + 750 + 5
    assert wf.coding_resource(config, "runtime", "cls", "vvenc", "1", 1) == 10 + 1 + 5  # ceil(0.001 * 1000)
    assert wf.coding_resource(config, "mem_mb", "cls", "vvenc", "1", 1) == 1200  # decoding asks for more
    assert wf.coding_resource(config, "mem_mb", "cls", "vvenc", "0", 2) == 2 * 1500  # second attempt


def test_every_codec_codes_a_task_in_groups_of_its_samples_per_job(config):
    """cls has 8 demo samples: VVenC at 3 per job takes 3 groups (3, 3 and 2 samples), as a universal codec's
    label at 3 (per task, as any other codec) and at 20 one group of all 8."""
    config = copy.deepcopy(config)
    config["codecs"]["vvenc"]["samples_per_job"] = 3
    config["codecs"]["elic"]["samples_per_job"] = 3
    assert wf.codec_shards(config, "cls", "vvenc") == ["000", "001", "002"]
    assert [list(wf.shard_range(config, "cls", "vvenc", s)) for s in ("000", "002")] == [[0, 1, 2], [6, 7]]
    config["run"]["codecs"] = ["vvenc", "hyperprior", "elic"]
    assert wf.codec_shards(config, "cls", "elic@hybrid") == ["000", "001", "002"]
    assert list(wf.shard_range(config, "cls", "elic@hybrid", "002")) == [6, 7]
    config["codecs"]["elic"]["samples_per_job"] = 20
    assert wf.codec_shards(config, "cls", "elic@hybrid") == ["000"]
    assert list(wf.shard_range(config, "cls", "elic@hybrid", "000")) == list(range(8))


def test_a_scripts_code_is_the_closure_of_its_imports_for_the_task_it_runs():
    package, scripts = REPO / "lamofc_lib", REPO / "workflow" / "scripts"
    cls = code_hash.script_modules(package, scripts / "extract.py", "cls")
    # extract.py imports joblog, sources and the task registry; cls runs tasks/cls.py (DINOv2 in tasks/dinov2.py)
    assert {
        "lamofc_lib.joblog",
        "lamofc_lib.sources",
        "lamofc_lib.tasks.lamofc.cls",
        "lamofc_lib.tasks.lamofc.dinov2",
    } <= set(cls)
    assert {"lamofc_lib.store", "lamofc_lib.tasks.base", "lamofc_lib.io"} <= set(cls)  # through the task module
    assert not {
        "lamofc_lib.tasks.lamofc.tti",
        "lamofc_lib.tasks.lamofc.csr",
        "lamofc_lib.tasks.lamofc.dense",
        "lamofc_lib.tasks.lamofc.seg",
        "lamofc_lib.metrics.fid",
    } & set(cls)
    tti = code_hash.script_modules(package, scripts / "extract.py", "tti")
    assert {"lamofc_lib.tasks.lamofc.tti", "lamofc_lib.tasks.lamofc.sd3_demo", "lamofc_lib.metrics.fid"} <= set(tti)
    assert code_hash.registered_modules(package, "lamofc_lib.tasks") == {
        "cls": "lamofc_lib.tasks.lamofc.cls",
        "seg": "lamofc_lib.tasks.lamofc.seg",
        "dpt": "lamofc_lib.tasks.lamofc.dpt",
        "csr": "lamofc_lib.tasks.lamofc.csr",
        "tti": "lamofc_lib.tasks.lamofc.tti",
        **dict.fromkeys(
            ["dinov3_in1k", "dinov3_in_a", "dinov3_in_r"], "lamofc_lib.tasks.lamofcbench.vision.classification"
        ),
        "dinov3_ade20k": "lamofc_lib.tasks.lamofcbench.vision.segmentation",
        "dinov3_nyu": "lamofc_lib.tasks.lamofcbench.vision.depth",
        **dict.fromkeys(
            ["lm_arc_challenge", "lm_gsm8k", "lm_hellaswag", "lm_truthfulqa_mc1", "lm_winogrande"],
            "lamofc_lib.tasks.lamofcbench.language.scenario",
        ),
        "sd35_canny": "lamofc_lib.tasks.lamofcbench.generation.sd35_canny",
    }
    # the scenario's code reaches tti's decoder and FID and the demo SD3's components through imports in functions
    sd35 = code_hash.script_modules(package, scripts / "score.py", "sd35_canny")
    assert {"lamofc_lib.tasks.lamofc.tti", "lamofc_lib.tasks.lamofc.sd3_demo", "lamofc_lib.metrics.fid"} <= set(sd35)


def test_editing_a_task_module_changes_only_that_tasks_code_hash(tmp_path):
    import shutil

    package = Path(shutil.copytree(REPO / "lamofc_lib", tmp_path / "lamofc_lib"))
    script = REPO / "workflow" / "scripts" / "extract.py"
    before = {t: code_hash.script_code_version(package, script, t) for t in ("cls", "csr", "tti")}
    with open(package / "tasks" / "lamofc" / "tti.py", "a") as f:
        f.write("\n# edited\n")
    after = {t: code_hash.script_code_version(package, script, t) for t in ("cls", "csr", "tti")}
    assert after["tti"] != before["tti"] and after["cls"] == before["cls"] and after["csr"] == before["csr"]
    with open(package / "store.py", "a") as f:  # every extraction writes a store
        f.write("\n# edited\n")
    edited = {t: code_hash.script_code_version(package, script, t) for t in after}
    assert all(edited[t] != after[t] for t in after)
    assert all(len(h) == 16 and int(h, 16) >= 0 for h in edited.values())
    copy = Path(shutil.copy(script, tmp_path / "extract.py"))
    assert code_hash.script_code_version(package, copy, "cls") == edited["cls"]  # where the script lies does not count
    with open(copy, "a") as f:  # nor Snakemake, but the hash sees a change to the script itself
        f.write("\n# edited\n")
    assert code_hash.script_code_version(package, copy, "cls") != edited["cls"]


def test_a_coding_jobs_code_is_its_codec_alone():
    package, scripts = REPO / "lamofc_lib", REPO / "workflow" / "scripts"
    assert code_hash.registered_modules(package, "lamofc_lib.codecs") == {
        "vvenc": "lamofc_lib.codecs.vvenc",
        "vtm": "lamofc_lib.codecs.vtm",
        "hyperprior": "lamofc_lib.codecs.hyperprior.codec",
        "elic": "lamofc_lib.codecs.elic.codec",
    }
    vvenc = set(code_hash.script_modules(package, scripts / "code.py", "cls", "vvenc"))
    # code.py imports the codec registry and coding (which writes the bitstreams and sidecars of bitstreams.py
    # from the frames that preprocess.py packed, through the store)
    common = {"lamofc_lib.codecs", "lamofc_lib.codecs.base", "lamofc_lib.coding", "lamofc_lib.bitstreams"}
    assert common | {"lamofc_lib.codecs.vvenc", "lamofc_lib.preprocess", "lamofc_lib.store"} <= vvenc
    assert not {m for m in vvenc if m.startswith(("lamofc_lib.codecs.vtm", "lamofc_lib.codecs.hyperprior"))}
    hyperprior = set(code_hash.script_modules(package, scripts / "code.py", "cls", "hyperprior"))
    # the package between the registry and the codec's module runs on import (and the codec's training hook
    # names its training code: an edit there retrains the models, which reruns these jobs anyway)
    assert common | {"lamofc_lib.codecs.hyperprior", "lamofc_lib.codecs.hyperprior.codec"} <= hyperprior
    assert "lamofc_lib.codecs.vvenc" not in hyperprior
    # ELIC is the Hyperprior's machinery with another network: an edit to ELIC reruns ELIC's jobs alone
    elic = set(code_hash.script_modules(package, scripts / "code.py", "cls", "elic"))
    assert {"lamofc_lib.codecs.elic.codec", "lamofc_lib.codecs.hyperprior.codec"} <= elic
    assert not {m for m in hyperprior if m.startswith("lamofc_lib.codecs.elic")}
    # no task module runs in a coding job, nor a codec in pre-processing or scoring
    assert not {m for m in vvenc | hyperprior if m.startswith("lamofc_lib.tasks")}
    for script in ("preprocess.py", "score.py", "score_original.py"):
        assert not {
            m for m in code_hash.script_modules(package, scripts / script, "cls") if m.startswith("lamofc_lib.codecs.")
        } - {"lamofc_lib.codecs.base"}
    with pytest.raises(KeyError, match="registers no 'vvc'"):
        code_hash.script_modules(package, scripts / "code.py", "cls", "vvc")


def test_the_quantizer_registry_stands_for_the_one_a_job_runs():
    """Uniform frames do not depend on the K-means module (an edit to it reruns only K-means jobs); both the
    K-means frames and the uniform arithmetic, which preprocess re-exports, count for K-means jobs."""
    package, scripts = REPO / "lamofc_lib", REPO / "workflow" / "scripts"
    assert code_hash.registered_modules(package, "lamofc_lib.quantizers") == {
        "uniform": "lamofc_lib.quantizers.uniform",
        "kmeans": "lamofc_lib.quantizers.kmeans",
    }
    for script in ("preprocess.py", "code.py", "train.py"):
        uniform = set(code_hash.script_modules(package, scripts / script, "cls", "hyperprior", "uniform"))
        kmeans = set(code_hash.script_modules(package, scripts / script, "cls", "hyperprior", "kmeans"))
        assert "lamofc_lib.quantizers.uniform" in uniform and "lamofc_lib.quantizers.kmeans" not in uniform
        assert {"lamofc_lib.quantizers.uniform", "lamofc_lib.quantizers.kmeans"} <= kmeans


def test_the_task_registry_stands_for_every_task_or_none():
    package, scripts = REPO / "lamofc_lib", REPO / "workflow" / "scripts"
    every = set(code_hash.script_modules(package, scripts / "extract.py"))
    assert {f"lamofc_lib.tasks.lamofc.{m}" for m in ("cls", "csr", "seg", "dpt", "dense", "tti")} <= every
    none = set(code_hash.script_modules(package, scripts / "extract.py", task=None))
    # no task module: the source readers a task names (and the csr prompt protocol, which the ARC source writes
    # into the manifest) count through the task's module
    assert {m for m in none if m.startswith("lamofc_lib.tasks.")} == set()
    csr = set(code_hash.script_modules(package, scripts / "candidates.py", task="csr"))
    assert {"lamofc_lib.sources.arc", "lamofc_lib.tasks.lamofc.csr_prompt"} <= csr


def test_rule_functions_carry_their_parameters_so_snakemake_inspects_none(monkeypatch):
    """workflow.record_signatures: Snakemake reads an input, params or resource function's recorded parameters
    (an unpack()ed input function's, a resource function it wrapped) and passes each the same arguments as it
    would after inspecting its signature."""
    import inspect
    from types import SimpleNamespace

    from snakemake.common import get_function_params, get_input_function_aux_params
    from snakemake.io import unpack
    from snakemake.resources import Resources

    def inputs(wildcards):
        return {}

    def param(wildcards, input):
        return 0

    def memory(wildcards, input, attempt):
        return 1000

    def runtime(wildcards, **kwargs):
        return 10

    rule = SimpleNamespace(
        input=[unpack(inputs), "a.txt"],
        params=[param, "{task}", {"key": 1}],
        resources=Resources.from_mapping({"mem_mb": memory, "runtime": runtime, "gpu": 0}),
    )
    wf.record_signatures([rule])
    evaluators = {name: rule.resources[name]._evaluator for name in ("mem_mb", "runtime")}
    monkeypatch.setattr(inspect, "signature", lambda func: pytest.fail(f"{func} was inspected"))
    aux = {"input": ["a.txt"], "output": [], "attempt": 2, "threads": 1}
    assert list(get_function_params(inputs)) == ["wildcards"]
    assert get_input_function_aux_params(param, aux) == {"input": ["a.txt"]}
    assert get_input_function_aux_params(evaluators["mem_mb"], aux) == {"input": ["a.txt"], "attempt": 2}
    assert get_input_function_aux_params(evaluators["runtime"], aux) == aux  # **kwargs takes every argument
