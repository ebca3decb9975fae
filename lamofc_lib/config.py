"""Benchmark configuration: schema validation with defaults, semantic checks, and what the DAG is built from."""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from lamofc_lib.codecs import REGISTRY
from lamofc_lib.preprocess import truncation_ranges
from lamofc_lib.registry import RegistryError
from lamofc_lib.selection import all_policies, needs_model, policies, selection_mode
from lamofc_lib.sources import source_kinds
from lamofc_lib.tasks import REGISTRY as TASKS
from lamofc_lib.tasks import task_kind

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "workflow" / "schemas" / "config.schema.yaml"

# What this version of the workflow can run end to end is what the registries hold (lamofc_lib.tasks.REGISTRY,
# lamofc_lib.codecs.REGISTRY): load_schema fills their names into the schema, so a configured but unregistered
# task or codec fails at start, and the checks below read each task's and codec's class attributes.

# The training "task" of a universal codec: the mix of the tasks codecs.<codec>.universal names (DT-UFC's hybrid).
HYBRID = "hybrid"
# A learned codec's points and training settings for every task that has no entry of its own.
DEFAULT = "default"
# A task profile's name (a results folder and a wildcard value).
PROFILE_NAME = r"[a-z][a-z0-9_]*"


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key."""


def _key(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def _with_defaults(validator_class):
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def load_schema(path: Path = SCHEMA_PATH) -> dict:
    """The config schema with the registries' names filled in (see `fill_registries`)."""
    return fill_registries(yaml.safe_load(Path(path).read_text()))


def fill_registries(schema: dict, tasks: Mapping = TASKS, codecs: Mapping = REGISTRY) -> dict:
    """Fill the names of the registered tasks and codecs into the schema, which writes none itself: the enums of
    $defs task_name (every key naming a task) and model_task (a task, the universal codecs' hybrid or default), and of
    $defs codec_name (a profile's `codec`); codecs.properties, one block per registered codec checked against
    the $defs block its class names in `settings_schema`; each such block's `codec` key (the codecs it
    describes); and the profile's if/then branch per block."""
    defs = schema["$defs"]
    defs["task_name"]["enum"] = list(tasks)
    defs["model_task"]["enum"] = [*tasks, HYBRID, DEFAULT]
    defs["codec_name"]["enum"] = list(codecs)
    _fill_sources(defs["source"], source_kinds(tasks))
    defs["task"]["properties"]["selection"]["properties"]["policy"]["enum"] = [*all_policies(tasks), None]
    for name, task in tasks.items():
        defs[f"task_{name}"] = _task_block(defs, task)
    schema["properties"]["tasks"]["properties"] = {name: {"$ref": f"#/$defs/task_{name}"} for name in tasks}
    blocks: dict[str, list[str]] = {}
    for name, codec in codecs.items():
        block = codec.settings_schema or name
        if block not in defs:
            raise KeyError(f"codec {name}: its settings schema $defs.{block} is not in the config schema")
        blocks.setdefault(block, []).append(name)
    schema["properties"]["codecs"]["properties"] = {
        name: {"$ref": f"#/$defs/{codec.settings_schema or name}"} for name, codec in codecs.items()
    }
    for block, names in blocks.items():
        defs[block]["properties"]["codec"] = {**defs[block]["properties"].get("codec", {}), "enum": names}
    defs["profile"]["allOf"] = [
        {"if": {"required": ["codec"], "properties": {"codec": {"enum": names}}}, "then": {"$ref": f"#/$defs/{block}"}}
        for block, names in blocks.items()
    ]
    return schema


def _fill_sources(block: dict, kinds: Mapping) -> None:
    """$defs.source: the kind enum and description, and the keys the kinds' blocks hold (Source.properties; a
    key several kinds share has one type, its descriptions joined)."""
    block["properties"]["kind"]["enum"] = list(kinds)
    block["properties"]["kind"]["description"] += " " + "; ".join(f"{k}: {c.description}" for k, c in kinds.items())
    for kind, cls in kinds.items():
        for key, prop in cls.properties.items():
            have = block["properties"].setdefault(key, copy.deepcopy(prop))
            if have is prop or have == prop:
                continue
            if {k: v for k, v in have.items() if k != "description"} != {
                k: v for k, v in prop.items() if k != "description"
            }:
                raise RegistryError(f"source kind {kind}: its key '{key}' has another type than other kinds give it")
            if prop.get("description") and prop["description"] not in have.get("description", ""):
                have["description"] = f"{have.get('description', '')} {prop['description']}".strip()


def _task_block(defs: Mapping, task) -> dict:
    """$defs.task with the task's own options (Task.options) and model options (Task.model_options) added."""
    block = copy.deepcopy(defs["task"])
    clash = sorted(set(task.options) & set(block["properties"]))
    clash += sorted(set(task.model_options) & set(defs["model"]["properties"]))
    if clash:
        raise RegistryError(f"task {task.name}: its options {clash} are keys the shared schema has already")
    block["properties"].update(copy.deepcopy(task.options))
    model = copy.deepcopy(defs["model"])
    model["properties"].update(copy.deepcopy(task.model_options))
    block["properties"]["model"] = model
    return block


def metric_options(task: str, block: Mapping) -> dict:
    """The settings of a task's block that change how its metric is computed (Task.metric_options, e.g. dpt's
    eigen_crop), passed to its scoring jobs."""
    return {k: block[k] for k in TASKS[task_kind(task, block)].metric_options}


def with_task_profiles(schema: dict, raw: Mapping) -> dict:
    """The schema extended by the config's task profiles: a block of another name than a registered task's,
    with `task: <registered task>` (one task run twice, e.g. on two models), is checked against that task's
    block, and its name is a task name wherever the schema takes one (run.tasks, a codec's tasks, ...)."""
    tasks = raw.get("tasks") if isinstance(raw, Mapping) else None
    if not isinstance(tasks, Mapping):
        return schema
    profiles = {
        name: block["task"]
        for name, block in tasks.items()
        if name not in TASKS and isinstance(block, Mapping) and "task" in block
    }
    if not profiles:
        return schema
    schema = copy.deepcopy(schema)
    defs = schema["$defs"]
    for name, kind in profiles.items():
        if not isinstance(name, str) or not re.fullmatch(PROFILE_NAME, name):
            raise ConfigError(
                f"config key tasks.{name}: a task profile's name is its results folder and a wildcard value: "
                "lowercase letters, digits and _, starting with a letter"
            )
        if kind not in TASKS:
            raise ConfigError(
                f"config key tasks.{name}.task: '{kind}' is not a registered task; a profile configures one of "
                f"{', '.join(TASKS)}"
            )
        schema["properties"]["tasks"]["properties"][name] = {"$ref": f"#/$defs/task_{kind}"}
    defs["task_name"]["enum"] = [*defs["task_name"]["enum"], *profiles]
    defs["model_task"]["enum"] = [*defs["model_task"]["enum"], *profiles]
    return schema


def validate(raw: Mapping[str, Any], schema: dict | None = None, check_paths: bool = True) -> dict:
    """Return a validated copy of `raw` with defaults filled in; raise ConfigError naming the first bad key."""
    config = copy.deepcopy(dict(raw))
    schema = with_task_profiles(schema or load_schema(), config)
    validator = _with_defaults(jsonschema.Draft202012Validator)(schema)
    errors = _errors(validator, config)
    while _read_text_values(validator, config, errors):
        errors = _errors(validator, config)
    if errors:
        best = jsonschema.exceptions.best_match(errors)
        raise ConfigError(f"config key {_key(best.absolute_path)}: {best.message}{_how_to_write(best)}")
    _check_semantics(config, check_paths)
    return _sorted(config)


def _sorted(value):
    """The config with every mapping's keys in sorted order: jobs' params are compared by their text, so the order
    in which a config file writes its keys must not look like a change (and rerun everything)."""
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


def _errors(validator, config: dict) -> list:
    return sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), list(e.absolute_path)))


def _read_text_values(validator, config: dict, errors: list) -> bool:
    """Read a text value where the schema wants a number or a boolean (`--config 'run={"threads": 2}'` gives
    Snakemake's parser the text '2'): '2' becomes 2 when that is what the key takes. True if one was read."""
    changed = False
    for error in errors:
        if error.validator != "type" or not isinstance(error.instance, str) or not error.absolute_path:
            continue
        try:
            value = yaml.safe_load(error.instance)
        except yaml.YAMLError:
            continue
        types = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
        if isinstance(value, str) or not any(validator.is_type(value, t) for t in types):
            continue
        *parents, last = error.absolute_path
        container = config
        for key in parents:
            container = container[key]
        container[last] = value
        changed = True
    return changed


# How to write a value of a schema type, for the message about a text value that is not one.
TYPE_EXAMPLES = {
    "integer": "a whole number such as 2",
    "number": "a number such as 22 or 0.0017",
    "boolean": "true or false",
    "null": "null",
}


def _how_to_write(error) -> str:
    """How to write what the key takes, for a text value where the schema takes a number or a boolean (a typo,
    a unit after the number); text that reads as the right type is taken (see `_read_text_values`)."""
    if error.validator != "type" or not isinstance(error.instance, str):
        return ""
    types = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
    examples = [TYPE_EXAMPLES[t] for t in types if t in TYPE_EXAMPLES]
    if not examples:
        return ""
    numeric = " (digits only: no words or units)" if {"integer", "number"} & set(types) else ""
    return f"; write it as {' or '.join(examples)}{numeric}"


def codec_kind(config: Mapping, codec: str) -> str:
    """The registered codec (lamofc_lib.codecs.REGISTRY) a codec block configures: its `codec` key, or its own
    name (a profile is a block of another name with `codec: <registered codec>`)."""
    return config["codecs"][codec].get("codec", codec)


def _check_semantics(config: dict, check_paths: bool) -> None:
    run = config["run"]
    for name, block in config["tasks"].items():
        if name in TASKS and block.get("task", name) != name:
            raise ConfigError(
                f"config key tasks.{name}.task: the block of registered task '{name}' configures it; name a "
                f"profile of '{block['task']}' otherwise (e.g. tasks.{block['task']}_2 with task: {block['task']})"
            )
    for name, block in config["codecs"].items():
        if name in REGISTRY and block.get("codec", name) != name:
            raise ConfigError(
                f"config key codecs.{name}.codec: the block of registered codec '{name}' configures it; name a "
                f"profile of '{block['codec']}' otherwise (e.g. codecs.{block['codec']}_2 with codec: {block['codec']})"
            )
    for task in config["tasks"]:
        _check_train(config, task)
    for i, task in enumerate(run["tasks"]):
        if task not in config["tasks"]:
            raise ConfigError(f"config key run.tasks[{i}]: task '{task}' has no block under tasks.{task}")
        _check_task(task, config["tasks"][task], check_paths)
    for task in [t for t in trained_tasks(config) if t not in run["tasks"] and t in config["tasks"]]:
        _check_task(task, config["tasks"][task], check_paths)  # a task without a block: see _check_universal
    for i, codec in enumerate(run["codecs"]):
        if codec not in config["codecs"]:
            raise ConfigError(f"config key run.codecs[{i}]: codec '{codec}' has no block under codecs.{codec}")
        if check_paths:
            try:
                REGISTRY[codec_kind(config, codec)].check_setup(config["codecs"][codec], f"codecs.{codec}")
            except ValueError as err:
                raise ConfigError(f"config key {err}") from None
        block = config["codecs"][codec]
        if block.get("quantizer", "uniform") == "kmeans":
            _check_kmeans(config, codec, check_paths)
            profile = None
        elif "truncation" not in block:
            raise ConfigError(
                f"config key codecs.{codec}.truncation: not set; quantizer uniform truncates each task's features "
                "with a profile of tasks.<task>.truncation (name one)"
            )
        else:
            profile = block["truncation"]
        if block.get("tasks") is not None:
            if block.get("universal"):
                raise ConfigError(
                    f"config key codecs.{codec}.tasks: a universal codec codes every task of run.tasks; its models "
                    "are the same whichever tasks it is applied to"
                )
            if not any(t in block["tasks"] for t in run["tasks"]):
                raise ConfigError(
                    f"config key codecs.{codec}.tasks: it codes {block['tasks']}, none of run.tasks "
                    f"({', '.join(run['tasks'])}); drop it from run.codecs or name one"
                )
        for task in [t for t in run["tasks"] if codes(config, codec, t)]:
            if profile is not None and profile not in config["tasks"][task]["truncation"]:
                raise ConfigError(
                    f"config key tasks.{task}.truncation: no '{profile}' range, which codec '{codec}' uses "
                    f"(codecs.{codec}.truncation)"
                )
            if not points(config, codec, HYBRID if block.get("universal") else task):
                key = f"codecs.{codec}.points" + (f".{HYBRID}" if block.get("universal") else "")
                raise ConfigError(f"config key {key}: no operating point for task '{task}'")
        if REGISTRY[codec_kind(config, codec)].trained:
            _check_trained(config, codec, check_paths)
    report = config["report"]
    # a run of universal codecs alone (LaMoFCBench's protocol) anchors on one of them: its label <codec>@hybrid
    report.setdefault("anchor", run["codecs"][0])
    if report["anchor"] not in run["codecs"]:
        raise ConfigError(
            f"config key report.anchor: '{report['anchor']}' is not coded in this run (run.codecs: "
            f"{', '.join(run['codecs'])}); name one of them"
        )
    if isinstance(report["tensor_accuracy"], list):
        unknown = [c for c in report["tensor_accuracy"] if c not in config["codecs"]]
        if unknown:  # a codec with a block that does not run is fine: a run of fewer codecs keeps its config
            raise ConfigError(
                f"config key report.tensor_accuracy: {unknown} have no block under codecs "
                f"({', '.join(config['codecs'])})"
            )


def _check_trained(config: dict, codec: str, check_paths: bool) -> None:
    """A trained codec's network sizes (the codec's defaults unless set); every task it codes has a training
    split and training settings, or every point a pretrained checkpoint; generalizability pairs name two
    different tasks (pairs with a task outside run.tasks are skipped, like unrun task blocks)."""
    block = config["codecs"][codec]
    for size, default in REGISTRY[codec_kind(config, codec)].sizes.items():
        block.setdefault(size, default)
    tasks = [t for t in config["run"]["tasks"] if codes(config, codec, t)]
    if block["universal"]:
        _check_universal(config, codec)
    for task in [HYBRID] if block["universal"] else tasks:
        if block["pretrained"]:
            for point in points(config, codec, task):
                path = pretrained_file(block, point)
                if path is None:
                    raise ConfigError(
                        f"config key codecs.{codec}.pretrained: no checkpoint for lambda {point} (task {task}); "
                        f"it gives {sorted(block['pretrained'])}"
                    )
                if check_paths and not Path(path).is_file():
                    raise ConfigError(f"config key codecs.{codec}.pretrained.{point}: {path} does not exist")
            continue
        for source in block["universal"] if task == HYBRID else [task]:
            train = train_split(config, source)
            if not train:
                raise ConfigError(
                    f"config key tasks.{source}.train: not set; {codec} trains on features of a training split "
                    "(give its source and samples)"
                )
            owner = train_task(config, source)
            spec = TASKS[task_kind(owner, config["tasks"][owner])]
            _check_source(f"tasks.{owner}.train.source", owner, spec, train["source"], check_paths)
        settings = training_settings(block, task)
        if settings is None:
            raise ConfigError(f"config key codecs.{codec}.training.{task}: not set; give steps or epochs, batch, crop")
        if settings["steps"] is None and settings["epochs"] is None:
            raise ConfigError(f"config key codecs.{codec}.training.{task}: set steps or epochs")
    for i, pair in enumerate(block["generalizability"]):
        if pair["trained_on"] == pair["applied_to"]:
            raise ConfigError(
                f"config key codecs.{codec}.generalizability[{i}]: trained_on and applied_to are both "
                f"'{pair['trained_on']}'; that is the ordinary rate-accuracy run"
            )


def trained_tasks(config: Mapping) -> list[str]:
    """The tasks the universal codecs of run.codecs train on, whether they run or not: a universal model is the
    same model whichever tasks it is then applied to, so running fewer tasks never changes its training mix."""
    codecs = config["codecs"]
    found = [t for c in config["run"]["codecs"] for t in codecs.get(c, {}).get("universal", [])]
    return list(dict.fromkeys(found))


def _check_universal(config: dict, codec: str) -> None:
    """A universal codec trains on tasks with a block and has no generalizability pairs."""
    block = config["codecs"][codec]
    missing = [t for t in block["universal"] if t not in config["tasks"]]
    if missing:
        raise ConfigError(
            f"config key codecs.{codec}.universal: {missing} have no block under tasks; its models train on those "
            "tasks' training features"
        )
    if block["generalizability"]:
        raise ConfigError(
            f"config key codecs.{codec}.generalizability: a universal codec's models code every task already"
        )


def pretrained_file(block: Mapping, point: str) -> str | None:
    """The pretrained checkpoint a learned codec's block gives for an operating point (keys compared as
    numbers: 0.004 and 4e-3 are the same lambda)."""
    for key, path in block["pretrained"].items():
        if math.isclose(float(key), float(point), rel_tol=1e-9):
            return path
    return None


def _check_kmeans(config: dict, codec: str, check_paths: bool) -> None:
    """A K-means calibration on the training split needs one for every task it fits; a user's mapping exists."""
    settings = config["codecs"][codec]["kmeans"]
    block = config["codecs"][codec]
    coded = [t for t in config["run"]["tasks"] if codes(config, codec, t)]
    for task in dict.fromkeys([*coded, *block.get("universal", [])]):
        if task in settings["mapping"]:
            path = Path(settings["mapping"][task]["path"])
            path = path / "mapping.json" if path.suffix != ".json" else path
            if check_paths and not path.is_file():
                raise ConfigError(f"config key codecs.{codec}.kmeans.mapping.{task}.path: {path} does not exist")
        elif settings["split"] == "train" and not train_split(config, task):
            raise ConfigError(
                f"config key tasks.{task}.train: not set; codecs.{codec}.kmeans fits the K-means centres on the "
                f"training split's features (give one, or set codecs.{codec}.kmeans.split: test)"
            )
        else:
            block = train_split(config, task) if settings["split"] == "train" else config["tasks"][task]
            where = (
                f"tasks.{train_task(config, task)}.train.samples"
                if settings["split"] == "train"
                else (f"tasks.{task}.samples")
            )
            if block["samples"] < settings["samples"]:
                raise ConfigError(
                    f"config key codecs.{codec}.kmeans.samples: {settings['samples']} calibration samples, but "
                    f"{where} gives {block['samples']}; fit on fewer samples or select more"
                )


def _check_source(key: str, task: str, spec, source: dict, check_paths: bool) -> None:
    kind, kinds = source["kind"], {cls.kind: cls for cls in spec.sources}
    if kind not in kinds:
        raise ConfigError(f"config key {key}.kind: '{kind}' is not a {task} source; expected one of {', '.join(kinds)}")
    reader = kinds[kind]
    for name in reader.required:
        value = source.get(name)
        if not value:
            hint = f"point it at your {kind} data" if name in reader.path_keys else f"a {kind} source needs it"
            raise ConfigError(f"config key {key}.{name}: not set; {hint}")
        if name in reader.path_keys and check_paths and not Path(value).exists():
            raise ConfigError(f"config key {key}.{name}: path '{value}' does not exist")
    labels = source.get("labels")
    if labels and check_paths and not Path(labels).is_file():
        raise ConfigError(f"config key {key}.labels: file '{labels}' does not exist")


def _check_selection(task: str, spec, block: dict, check_paths: bool) -> None:
    """Resolve the default policy (the reference's) and check that the source can serve it."""
    selection = block.setdefault("selection", {})
    if selection.get("policy") is None:
        selection["policy"] = spec.reference_policy
    kind, mode = block["source"]["kind"], selection_mode(selection, block.get("features_from"))
    listed, files = selection.get("list"), block.get("features_from")
    offered = policies(spec)
    if selection["policy"] not in offered:
        raise ConfigError(
            f"config key tasks.{task}.selection.policy: task {task} has no policy '{selection['policy']}'; it offers "
            f"{', '.join(offered)}"
        )
    needs = offered[mode].kinds if mode in offered else ()
    if needs and kind not in needs:
        raise ConfigError(
            f"config key tasks.{task}.selection.policy: '{mode}' needs a {' or '.join(needs)} "
            f"source, the source is '{kind}'; set the policy to first (or give selection.list)"
        )
    if needs_model(spec.name, mode) and block["reference"] != "ground_truth":
        raise ConfigError(
            f"config key tasks.{task}.selection.policy: '{mode}' keeps the samples the model gets right, which "
            f"needs tasks.{task}.reference: ground_truth"
        )
    if listed and check_paths and not Path(listed).is_file():
        raise ConfigError(f"config key tasks.{task}.selection.list: file '{listed}' does not exist")
    if files and check_paths and not Path(files).is_dir():
        raise ConfigError(f"config key tasks.{task}.features_from: folder '{files}' does not exist")


def train_task(config: Mapping, task: str) -> str:
    """The task whose training split `task` uses: its own, or that of tasks.<task>.train.from."""
    return (config["tasks"][task].get("train") or {}).get("from") or task


def train_split(config: Mapping, task: str) -> dict | None:
    """A task's training split block ({samples, source}; another task's for `from`), None without one."""
    return config["tasks"][train_task(config, task)].get("train") or None


def _check_train(config: Mapping, task: str) -> None:
    """A training split is its own (samples and source) or another task's (`from`: that task has its own, on the
    same model and split, so their tensors and centres are the same)."""
    train = config["tasks"][task].get("train")
    if not train:
        return
    key = f"config key tasks.{task}.train"
    if "from" not in train:
        missing = [k for k in ("samples", "source") if k not in train]
        if missing:
            raise ConfigError(f"{key}: give {' and '.join(missing)} (its own split) or from: <task> (another's)")
        return
    if set(train) != {"from"}:
        raise ConfigError(f"{key}: from: {train['from']} takes that task's split; drop {sorted(set(train) - {'from'})}")
    other = train["from"]
    block = config["tasks"].get(other)
    if other == task or block is None:
        raise ConfigError(f"{key}.from: '{other}' is {'this task' if other == task else 'not a task of the config'}")
    if not block.get("train") or "from" in block["train"]:
        raise ConfigError(f"{key}.from: tasks.{other}.train must give its own samples and source")
    for setting in ("model", "split"):
        if block.get(setting) != config["tasks"][task].get(setting):
            raise ConfigError(
                f"{key}.from: tasks.{other}.{setting} differs from tasks.{task}.{setting}; a shared training split "
                "(features, K-means centres) needs the same model and split"
            )


def _check_task(task: str, block: dict, check_paths: bool) -> None:
    spec = TASKS[task_kind(task, block)]
    _check_source(f"tasks.{task}.source", task, spec, block["source"], check_paths)
    _check_selection(task, spec, block, check_paths)
    if spec.needs_split and block.get("split") is None:
        # The schema leaves split optional because a task with a fixed split point (tti) has none.
        raise ConfigError(f"config key tasks.{task}.split: not set; give the block or layer the feature is taken at")
    model = block["model"]
    given = [k for k in ("id", "package") if model.get(k)]
    if spec.random_init_tokenizer and model.get("random_init"):
        if len(given) != 1:
            raise ConfigError(
                f"config key tasks.{task}.model: random_init needs the model whose tokenizer it reads: set one of "
                f"id, package (got {given or 'none'})"
            )
    elif len(given := [*given, *(["random_init"] if model.get("random_init") else [])]) != 1:
        raise ConfigError(
            f"config key tasks.{task}.model: set exactly one of id, package, random_init (got {given or 'none'})"
        )
    for name, truncation in block["truncation"].items():
        by_tensor = truncation if isinstance(truncation, Mapping) else {None: truncation}
        for tensor, entry in by_tensor.items():
            key = f"tasks.{task}.truncation.{name}" + (f".{tensor}" if tensor else "")
            for lo, hi in truncation_ranges(entry["range"] if isinstance(entry, Mapping) else entry):
                if not hi > lo:
                    raise ConfigError(f"config key {key}: hi {hi} must exceed lo {lo}")
    if block["reference"] not in spec.references:
        raise ConfigError(
            f"config key tasks.{task}.reference: {task} ({spec.metric}) is scored against "
            f"{' or '.join(spec.references)} only (uncompressed: its outputs on the uncompressed features); set it "
            f"to {spec.references[0]}"
        )
    head = block.get("head", {})
    if spec.head_checkpoint and not head.get("checkpoint") and block["reference"] == "ground_truth":
        raise ConfigError(
            f"config key tasks.{task}.head.checkpoint: not set; scoring against ground truth needs the task's trained "
            "head (a seeded random head is only for reference: uncompressed)"
        )
    if head.get("checkpoint") and check_paths and not Path(head["checkpoint"]).is_file():
        raise ConfigError(f"config key tasks.{task}.head.checkpoint: file '{head['checkpoint']}' does not exist")


def training_settings(block: Mapping, task: str) -> dict | None:
    """A trained codec's training settings for a task (or hybrid): its own entry, else `default`'s."""
    return block["training"].get(task, block["training"].get(DEFAULT))


def format_point(value) -> str:
    """The directory name of an operating point: QP 22 -> '22', lambda 0.0017 -> '0.0017'."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"operating point {value!r} is not a finite number")
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return format(value, "g")


def codes(config: Mapping, codec: str, task: str) -> bool:
    """Whether a codec codes a task: every task, or those its block's `tasks` names."""
    only = config["codecs"][codec].get("tasks")
    return only is None or task in only


def points(config: Mapping, codec: str, task: str) -> list[str]:
    """Operating points of `codec` on `task`, as directory names."""
    spec = config["codecs"][codec]["points"]
    values = spec.get(task, spec.get(DEFAULT, [])) if isinstance(spec, Mapping) else spec
    return [format_point(v) for v in values]
