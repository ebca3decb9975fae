"""What the workflow's rules are made of: the coded points, codec labels, file paths and job params, computed from
the validated config (workflow/rules/common.smk binds them to Snakemake's `config` and wildcards; the jobs' code
hashes are lamofc_lib.code_hash's).

A coded configuration is named by a codec label: the codec's name ("vvenc", "hyperprior"), or, for a trained
codec applied to another task's features, "<codec>@<task it was trained on>" (e.g. "hyperprior@cls")."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

from lamofc_lib.codecs import REGISTRY
from lamofc_lib.coding import shard_samples, shards
from lamofc_lib.config import HYBRID, codec_kind, codes, points, pretrained_file, train_task
from lamofc_lib.store import FeatureStore

RESULTS = "results"
# Codec settings that change how fast a point is coded, not what: left out of the jobs' params, so changing
# them reruns nothing (points: adding one runs only its jobs; training and generalizability reach the jobs
# through the model files).
NOT_CODING = ("points", "threads", "resources", "training", "generalizability", "device", "timeout", "tasks")


def codec_name(label: str) -> str:
    return label.split("@")[0]


def trained_on(task: str, label: str) -> str:
    """The task whose training split trained the models of `label` when it codes `task`."""
    return label.split("@")[1] if "@" in label else task


def codec_class(config: Mapping, label: str):
    """The registered codec class a label's block configures (a profile: its `codec`)."""
    return REGISTRY[codec_kind(config, codec_name(label))]


def is_trained(config: Mapping, label: str) -> bool:
    return codec_class(config, label).trained


def codec_settings(config: Mapping, label: str) -> dict:
    """A codec's settings as its jobs' params (without the NOT_CODING keys)."""
    return {k: v for k, v in config["codecs"][codec_name(label)].items() if k not in NOT_CODING}


def quantization_profile(config: Mapping, task: str, label: str) -> str:
    """What a codec's frames of `task` are quantized with: its truncation profile (quantizer uniform), or its
    K-means calibration (`kmeans_profile`)."""
    block = config["codecs"][codec_name(label)]
    if block.get("quantizer", "uniform") == "uniform":
        return block["truncation"]
    return kmeans_profile(block["kmeans"], task)


def kmeans_profile(settings: Mapping, task: str) -> str:
    """The calibration of K-means settings (codecs.<codec>.kmeans) for `task`: ``kmeans8-<split><samples>``
    (centres the calibrate rule fits) or ``kmeans8-mapping`` (the centres of the user's mapping folder)."""
    if task in settings["mapping"]:
        return "kmeans8-mapping"
    return f"kmeans8-{settings['split']}{settings['samples']}"


def is_kmeans_profile(profile: str) -> bool:
    return profile.startswith("kmeans8-")


def calibration_task(config: Mapping, task: str, profile: str) -> str:
    """The task whose K-means calibration `task` codes with: a calibration on the training split is that split's
    owner's (tasks.<task>.train.from), shared; its mapping.json keys the centres by the owner's name."""
    return train_task(config, task) if profile.startswith("kmeans8-train") else task


def calibration_path(config: Mapping, task: str, profile: str) -> str:
    """The mapping folder (mapping.json, one centres file per tensor, calibration.json) of a K-means profile."""
    return f"{RESULTS}/{calibration_task(config, task, profile)}/calibration/{profile}"


def train_features_path(config: Mapping, task: str) -> str:
    """The training split's features of a task (another task's for tasks.<task>.train.from)."""
    return f"{RESULTS}/{train_task(config, task)}/train/features.zarr"


def frames_path(config: Mapping, task: str, label: str) -> str:
    """The frame store a codec codes, keyed by quantization profile (`quantization_profile`) and the codec's
    input (quantized<bits> or normalized): codecs taking the same frames (vvenc and vtm; hyperprior and
    hyperprior@cls) share one job."""
    block = config["codecs"][codec_name(label)]
    kind = codec_class(config, label).input_kind
    frames = f"quantized{block.get('bit_depth', 10)}" if kind == "quantized" else "normalized"
    return f"{RESULTS}/{task}/frames/{quantization_profile(config, task, label)}-{frames}.zarr"


def model_path(config: Mapping, task: str, label: str, point: str) -> str:
    """The model file a trained codec codes a point with: the workflow's trained model, or the block's
    pretrained checkpoint of that lambda."""
    block = config["codecs"][codec_name(label)]
    if block.get("pretrained"):
        return pretrained_file(block, point)
    return f"{RESULTS}/models/{codec_name(label)}/{trained_on(task, label)}/{point}/model.pt"


def label_points(config: Mapping, task: str, label: str) -> list[str]:
    """The operating points a codec label codes on `task` (a model applied to another task: the points of the
    task it was trained on); none on a task the codec does not code (codecs.<codec>.tasks)."""
    if not codes(config, codec_name(label), task):
        return []
    return points(config, codec_name(label), trained_on(task, label))


def coded_labels(config: Mapping) -> list[tuple[str, str]]:
    """(task, codec label) of every coded configuration, rate-accuracy and generalizability runs, each once."""
    runs = coded_points(config) + generalizability_points(config)
    return list(dict.fromkeys((t, c) for t, c, _ in runs))


def run_label(config: Mapping, codec: str) -> str:
    """The label of a codec of run.codecs on its own tasks: its name, or <codec>@hybrid for a universal codec
    (one model per lambda trained on a mix of tasks, codecs.<codec>.universal)."""
    return f"{codec}@{HYBRID}" if config["codecs"][codec].get("universal") else codec


def samples_per_job(config: Mapping, label: str) -> int:
    """How many of a task's samples one code job of a codec label takes (the codec block's samples_per_job; a
    universal codec's jobs too, per task)."""
    return config["codecs"][codec_name(label)]["samples_per_job"]


def codec_shards(config: Mapping, task: str, label: str) -> list[str]:
    """The sample groups ('000', '001', ...) a codec label's code jobs take on `task`."""
    return shards(config["tasks"][task]["samples"], samples_per_job(config, label))


def shard_range(config: Mapping, task: str, label: str, shard: str, samples: int | None = None) -> range:
    """The sample indices of one of `codec_shards`, of the task's samples (or of `samples`: a store's count)."""
    samples = config["tasks"][task]["samples"] if samples is None else samples
    return shard_samples(shard, samples, samples_per_job(config, label))


def coded_points(config: Mapping) -> list[tuple[str, str, str]]:
    """(task, codec label, point) of the rate-accuracy runs."""
    run = config["run"]
    labels = [run_label(config, c) for c in run["codecs"]]
    return [(t, c, p) for t in run["tasks"] for c in labels for p in label_points(config, t, c)]


def training_sources(config: Mapping, codec: str, trained_on: str) -> list[str]:
    """The tasks whose training features train a codec's models for `trained_on` (a task, or hybrid)."""
    return list(config["codecs"][codec]["universal"]) if trained_on == HYBRID else [trained_on]


def generalizability_pairs(config: Mapping, codec: str | None = None) -> list[tuple[str, str]]:
    """The configured (trained_on, applied_to) pairs whose two tasks both run, of one trained codec (or of all
    in run.codecs, each pair once)."""
    codecs = [codec] if codec else [c for c in config["run"]["codecs"] if is_trained(config, c)]
    running = set(config["run"]["tasks"])
    found = [
        (g["trained_on"], g["applied_to"])
        for c in codecs
        for g in config["codecs"].get(c, {}).get("generalizability", [])
        if {g["trained_on"], g["applied_to"]} <= running
    ]
    return list(dict.fromkeys(found))


def generalizability_points(config: Mapping) -> list[tuple[str, str, str]]:
    """(task, codec label, point) of the generalizability runs of every trained codec, at the trained_on
    task's lambdas."""
    return [
        (dst, f"{codec}@{src}", p)
        for codec in config["run"]["codecs"]
        if is_trained(config, codec)
        for src, dst in generalizability_pairs(config, codec)
        for p in points(config, codec, src)
    ]


def trained_models(config: Mapping) -> list[tuple[str, str, str]]:
    """(codec, task it is trained on, point) of every model to train, each once (pretrained ones are not)."""
    runs = coded_points(config) + generalizability_points(config)
    return sorted(
        {
            (codec_name(c), trained_on(t, c), p)
            for t, c, p in runs
            if is_trained(config, c) and not config["codecs"][codec_name(c)].get("pretrained")
        }
    )


def retried(key: str, value, attempt: int):
    """Memory and runtime grow with each attempt (--retries), so a job killed at its limits asks for more."""
    return value * attempt if key in ("mem_mb", "runtime") else value


def coding_resource(config: Mapping, key: str, task: str, label: str, shard: str, attempt: int):
    """A resource of a code job, which encodes and then decodes a group of samples: the configured encode and
    decode requests (resources.encode, resources.decode: runtimes added, the larger memory), each plus, with
    `per_mpixel`, memory per million values of the job's largest frame and runtime per million frame values it
    codes (all tensors of a sample counted), so a cluster gets larger requests for larger frames (a dpt frame is
    50 times a cls frame); grown per attempt. Before the frames exist (dry runs) they are the bases."""
    block = config["codecs"][codec_name(label)]
    frames = Path(frames_path(config, task, label))
    sizes = None
    if frames.exists():
        store = FeatureStore(frames)
        sizes = [store.points(i) / 1e6 for i in shard_range(config, task, label, shard, len(store))]
    values = []
    for job in ("encode", "decode"):
        spec = block["resources"][job]
        per = spec.get("per_mpixel", {}).get(key)
        extra = math.ceil(per * (max(sizes) if key == "mem_mb" else sum(sizes))) if per and sizes else 0
        values.append(spec[key] + extra)
    return retried(key, max(values) if key == "mem_mb" else sum(values), attempt)


def _functions(items) -> list:
    """The functions among a rule's input or params items (an unpack()ed or ancient() function is a string
    wrapping it: its `callable`)."""
    found = []
    for item in items:
        func = getattr(item, "callable", None) or getattr(getattr(item, "_file", None), "callable", None) or item
        if callable(func) and not isinstance(func, type):
            found.append(func)
    return found


def record_signatures(rules) -> None:
    """Record the parameters of every input, params and resource function of `rules` on the function, where
    Snakemake looks first (snakemake.common.overwrite_function_params): otherwise it inspects a function's
    signature each time it calls it, up to three times per call, for each of thousands of jobs (the paper DAG's
    code jobs call ten functions each)."""
    import inspect

    from snakemake.common import FUNC_OVERWRITE_PARAMS_ATTR, overwrite_function_params

    for rule in rules:
        functions = _functions(rule.input) + _functions(rule.params)
        functions += [r._evaluator for r in rule.resources.values() if getattr(r, "_evaluator", None)]
        for func in functions:
            if not hasattr(func, FUNC_OVERWRITE_PARAMS_ATTR):
                overwrite_function_params(func, inspect.signature(func).parameters)
