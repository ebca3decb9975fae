"""Configuration, wildcard constraints and input functions shared by all rule files."""

import functools
import os
import re
import sys

REPO = Path(workflow.basedir)
# The workflow and its jobs import lamofc_lib from this checkout, whichever Python or environment runs them.
sys.path.insert(0, str(REPO))
os.environ.update(PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))


from lamofc_lib import code_hash, determinism, forkserver
from lamofc_lib.config import (
    ConfigError,
    trained_tasks,
    training_settings,
    validate,
    metric_options as task_metric_options,
)
from lamofc_lib.feature_files import feature_paths, file_signatures
from lamofc_lib.selection import needs_model, selection_mode
from lamofc_lib.tasks import REGISTRY as TASK_REGISTRY
from lamofc_lib.tasks import task_kind as block_task_kind
from lamofc_lib import workflow as wf
from lamofc_lib.workflow import RESULTS, codec_name, model_path, retried, trained_on

try:
    config = validate(config)
except ConfigError as err:
    sys.exit(f"LaMoFC configuration error: {err}")

# Every job inherits the libraries' code paths from this process's environment (set before anything loads them).
try:
    determinism.apply(config["run"]["reproducible"])
except determinism.HostError as err:
    sys.exit(f"LaMoFC: {err}")

TASKS = config["run"]["tasks"]
CODECS = config["run"]["codecs"]


def task_kind(task):
    """The registered task a task's block configures (a profile's `task`; lamofc_lib.tasks.task_kind)."""
    return block_task_kind(task, config["tasks"].get(task))


def task_class(task):
    """The registered task class (lamofc_lib.tasks.REGISTRY) of a task's block."""
    return TASK_REGISTRY[task_kind(task)]


def figure_category(task, kind):
    """The report category of a task's figure: LaMoFC's by kind, LaMoFCBench's scenarios in a category of their
    own (Task.benchmark)."""
    return "LaMoFCBench" if task_class(task).benchmark() == "LaMoFCBench" else kind


def task_settings(task):
    return config["tasks"][task]


def codec_block(label):
    return config["codecs"][codec_name(label)]


def codec_kind(label):
    """The registered codec a label's block configures (a profile's `codec`)."""
    return wf.codec_kind(config, codec_name(label))


def is_trained(label):
    return wf.is_trained(config, label)


def codec_settings(label):
    return wf.codec_settings(config, label)


def coding_resource(key):
    """A resource of a code job (see lamofc_lib.workflow.coding_resource); Snakemake evaluates it once the job's
    inputs (the frames) exist."""
    return lambda wildcards, input, attempt: wf.coding_resource(
        config, key, wildcards.task, wildcards.codec, wildcards.shard, attempt
    )


def task_resource(job, key):
    """A resource of a task's extract or score job (tasks.<task>.resources.<job>), grown per attempt."""
    return lambda wildcards, attempt: retried(key, task_settings(wildcards.task)["resources"][job][key], attempt)


def codec_shards(task, label):
    return wf.codec_shards(config, task, label)


def sample_bounds(task, label, shard):
    """[first, end) of the samples of a code job's group (a shard of `codec_shards`)."""
    indices = wf.shard_range(config, task, label, shard)
    return [indices.start, indices.stop]


def frames_path(task, label):
    return wf.frames_path(config, task, label)


def coding_inputs(wildcards):
    """The frames and, for a trained codec, the model of the operating point."""
    return {"frames": frames_path(wildcards.task, wildcards.codec), **model_inputs(wildcards)}


is_kmeans = wf.is_kmeans_profile


def profile_quantizer(profile):
    """The quantizer (lamofc_lib.quantizers) of a quantization profile's frames."""
    return "kmeans" if is_kmeans(profile) else "uniform"


def codec_quantizer(label):
    return codec_block(label).get("quantizer", "uniform")


def preprocess_inputs(wildcards):
    """The features, and for a K-means profile the task's calibration (its mapping folder)."""
    inputs = {"features": f"{RESULTS}/{wildcards.task}/features.zarr"}
    if is_kmeans(wildcards.profile):
        inputs["calibration"] = wf.calibration_path(config, wildcards.task, wildcards.profile)
    return inputs


def calibration_inputs(wildcards):
    """The features a calibration fits on (kmeans8-train<n>: the training split's; kmeans8-test<n>: the
    evaluated samples'), or, for kmeans8-mapping, the evaluated features (their tensor names) and the user's
    mapping.json."""
    if wildcards.calibration.startswith("kmeans8-train"):
        return {"features": f"{RESULTS}/{wildcards.task}/train/features.zarr"}
    inputs = {"features": f"{RESULTS}/{wildcards.task}/features.zarr"}
    if mapping := user_mapping(wildcards.task, wildcards.calibration):
        inputs["mapping"] = mapping["file"]
    return inputs


def calibration_samples(calibration):
    """How many samples a calibration fits on (None: a user's mapping)."""
    if calibration == "kmeans8-mapping":
        return None
    return int(calibration.removeprefix("kmeans8-train").removeprefix("kmeans8-test"))


def user_mapping(task, calibration):
    """{file: mapping.json, handler: its key} of a task's user mapping (kmeans8-mapping), else None."""
    if calibration != "kmeans8-mapping":
        return None
    for codec in CODECS:
        entry = codec_block(codec).get("kmeans", {}).get("mapping", {}).get(task)
        if entry:
            path = Path(entry["path"])
            file = path if path.suffix == ".json" else path / "mapping.json"
            return {"file": str(file), "handler": entry["handler"] or task}
    raise ValueError(f"no codec block gives a K-means mapping for task {task}")


def training_inputs(wildcards):
    """A trained codec's training features (of each task of the mix, for a universal codec's hybrid models),
    and for quantizer kmeans each task's calibration."""
    inputs = {}
    for task in wf.training_sources(config, wildcards.codec, wildcards.task):
        inputs[f"features_{task}"] = wf.train_features_path(config, task)
        profile = wf.quantization_profile(config, task, wildcards.codec)
        if is_kmeans(profile):
            inputs[f"calibration_{task}"] = wf.calibration_path(config, task, profile)
    return inputs


def training_sources(codec, trained_on):
    """Each task whose training frames train the model, with its truncation entry (None for K-means)."""
    sources = []
    for task in wf.training_sources(config, codec, trained_on):
        profile = wf.quantization_profile(config, task, codec)
        truncation = None if is_kmeans(profile) else task_settings(task)["truncation"][profile]
        source = {"task": task, "truncation": truncation}
        owner = wf.calibration_task(config, task, profile) if is_kmeans(profile) else task
        if owner != task:  # its centres are another task's (train: from), keyed by that task in mapping.json
            source["calibration_task"] = owner
        sources.append(source)
    return sources


def model_inputs(wildcards):
    """The model of the operating point, for a trained codec."""
    if is_trained(wildcards.codec):
        return {"model": model_path(config, wildcards.task, wildcards.codec, wildcards.point)}
    return {}


def coded_points():
    return wf.coded_points(config)


def generalizability_pairs():
    return wf.generalizability_pairs(config)


def generalizability_points():
    return wf.generalizability_points(config)


def trained_models():
    return wf.trained_models(config)


def _alternatives(values):
    """A regex matching any of `values` (longest first); one matching nothing when there are none."""
    return "|".join(re.escape(v) for v in sorted(set(values), key=len, reverse=True)) or "(?!)"


# The tasks whose jobs may run: those of run.tasks, and the tasks a universal codec trains on (their training
# features, calibration and frames) when they do not run themselves.
TASKS_PATTERN = _alternatives(TASKS + trained_tasks(config))
# The labels of run.codecs on their own tasks; with run.score_jobs "task" one score_task job per task scores
# them all, else one score job per task and label (as the generalizability labels always are).
RUN_LABELS = [wf.run_label(config, c) for c in CODECS]
SCORE_PER_TASK = config["run"]["score_jobs"] == "task"
SCORE_TASK_PATTERN = TASKS_PATTERN if SCORE_PER_TASK else "(?!)"  # no score_task job unless chosen
PER_LABEL_SCORES_PATTERN = _alternatives(
    c for _, c, _ in coded_points() + generalizability_points() if not (SCORE_PER_TASK and c in RUN_LABELS)
)


wildcard_constraints:
    task=TASKS_PATTERN,
    codec=_alternatives([c for _, c, _ in coded_points() + generalizability_points()] + CODECS),
    point=_alternatives(p for _, _, p in coded_points() + generalizability_points()),
    shard=r"\d+",
    profile=r"[A-Za-z0-9_]+|kmeans8-(?:train|test)\d+|kmeans8-mapping",
    calibration=r"kmeans8-(?:train|test)\d+|kmeans8-mapping",
    frames=r"quantized\d+|normalized",


def reference_inputs(wildcards):
    """The reference answers: the manifest's labels, or the uncompressed model's own predictions."""
    if task_settings(wildcards.task)["reference"] == "uncompressed":
        return {"reference": f"{RESULTS}/{wildcards.task}/original/outputs.npz"}
    return {}


def label_points(task, label):
    return wf.label_points(config, task, label)


def coded_labels():
    return wf.coded_labels(config)


def label_outputs(task, labels, kind):
    """The code jobs' bitstream folders or reconstruction stores (`kind`) of every point of the codec `labels`
    on one task, label by label, point by point and, within a point, shard by shard."""
    path = {"bitstreams": "bitstreams/{shard}", "reconstructed": "reconstructed/{shard}.zarr"}[kind]
    return [
        f"{RESULTS}/{task}/{label}/{point}/{path.format(shard=shard)}"
        for label in labels
        for point in label_points(task, label)
        for shard in codec_shards(task, label)
    ]


def scored_labels(task, label=None):
    """What a score job scores, label by label, with each label's points and the number of shards of a point:
    the one `label` (rule score) or every run.codecs label (rule score_task)."""
    labels = [label] if label else RUN_LABELS
    return [{"label": c, "points": label_points(task, c), "shards": len(codec_shards(task, c))} for c in labels]


def all_bitstream_dirs():
    """Every code job's bitstream folder."""
    return [
        f"{RESULTS}/{t}/{c}/{p}/bitstreams/{shard}"
        for t, c, p in coded_points() + generalizability_points()
        for shard in codec_shards(t, c)
    ]


def head_checkpoint(wildcards):
    """The configured head checkpoint file as an input, so replacing it rebuilds the head (and rescores)."""
    path = task_settings(wildcards.task).get("head", {}).get("checkpoint")
    return [path] if path else []


def metric_options(task):
    """The task settings that change how its metric is computed (its class's metric_options, e.g. dpt's
    eigen_crop)."""
    return task_metric_options(task, task_settings(task))


def selection_label(task):
    """What makes a task's manifest (list, files or the policy), as the report names it."""
    block = task_settings(task)
    return selection_mode(block["selection"], block.get("features_from"))


def selection_needs_model(task):
    """Whether the task's selection runs the uncompressed model (the cls/csr policies)."""
    return needs_model(task_kind(task), selection_label(task))


def selection_settings(task):
    block = task_settings(task)
    keys = ("samples", "selection", "features_from", "source")
    return {k: block.get(k) for k in keys} | {"feature_files": feature_files(task)}


def feature_files(task):
    return file_signatures(task_settings(task).get("features_from"))


def feature_file_inputs(wildcards):
    return [str(p) for p in feature_paths(task_settings(wildcards.task)["features_from"])]


def training_selection_settings(task):
    train = task_settings(task)["train"]
    return {"samples": train["samples"], "selection": {"policy": "first", "list": None}, "source": train["source"]}


def converted_path(task):
    """Where a GGUF model of `task` is dequantized once (by convert_model), or None for other models. One
    folder per package (or model folder) and GGUF file, shared by every task that runs the model."""
    model = task_settings(task)["model"]
    if not model.get("gguf_file"):
        return None
    owner = model.get("package") or Path(str(model["id"])).name
    return f"{RESULTS}/models/gguf/{owner}/{Path(model['gguf_file']).stem}"


def gguf_model(folder):
    """The model block of the tasks whose GGUF model convert_model writes to models/gguf/`folder`."""
    wanted = f"{RESULTS}/models/gguf/{folder}"
    for task in TASKS + trained_tasks(config):
        if converted_path(task) == wanted:
            return task_settings(task)["model"]
    raise ValueError(f"no task runs a GGUF model converted to {wanted}")


def model_settings(task):
    """The task's model block as the jobs that run the model get it: a GGUF model with the folder rule
    convert_model made of it (`converted`), which they load instead of the GGUF file."""
    model = task_settings(task)["model"]
    return {**model, "converted": converted_path(task)} if converted_path(task) else model


def converted_model(wildcards):
    return {"model": converted_path(wildcards.task)} if converted_path(wildcards.task) else {}


def selection_inputs(wildcards):
    """The candidates, the sample list if one is configured, and, for the model policies, the head (ancient:
    a later head swap keeps the samples; see rule select)."""
    block = task_settings(wildcards.task)
    inputs = {"candidates": f"{RESULTS}/{wildcards.task}/candidates.csv"}
    if block["selection"].get("list"):
        inputs["sample_list"] = block["selection"]["list"]
    if selection_needs_model(wildcards.task):
        inputs["head"] = ancient(f"{RESULTS}/{wildcards.task}/head.pt")
        inputs.update(converted_model(wildcards))
    return inputs


def selection_resource(task, key):
    """A model-running selection asks for what extraction asks for; the others for a small CPU job."""
    if selection_needs_model(task):
        return task_settings(task)["resources"]["extract"][key]
    return {"mem_mb": 2000, "runtime": 30, "gpu": 0}[key]


IMPORTED_TASKS = _alternatives([t for t in TASKS if task_settings(t).get("features_from")])
EXTRACTED_TASKS = _alternatives([t for t in TASKS if not task_settings(t).get("features_from")])


@functools.cache
def script_code(script, task=code_hash.EVERY, codec=code_hash.EVERY, quantizer=code_hash.EVERY):
    """A hash of the library modules a workflow script runs for `task` and `codec` (its imports' closure in the
    import graph; see lamofc_lib.code_hash.script_modules), so a change to them reruns the rule's jobs, and only
    theirs, and the between-workflow cache never serves older code."""
    return code_hash.script_code_version(
        REPO / "lamofc_lib", REPO / "workflow" / "scripts" / script, task, codec, quantizer
    )


def final_outputs():
    return [
        f"{RESULTS}/tables/rate_accuracy.csv",
        f"{RESULTS}/tables/rate_accuracy.md",
        f"{RESULTS}/tables/selection.csv",
        f"{RESULTS}/tables/da_r2.csv",
        f"{RESULTS}/tables/da_r2.md",
        f"{RESULTS}/tables/bd_rate.csv",
        f"{RESULTS}/tables/bd_rate.md",
        f"{RESULTS}/tables/complexity.csv",
        f"{RESULTS}/tables/complexity.md",
        f"{RESULTS}/tables/feature_statistics.csv",
        f"{RESULTS}/tables/feature_statistics.md",
        f"{RESULTS}/figures/rate_accuracy_drop.png",
        f"{RESULTS}/provenance.json",
        *[f"{RESULTS}/figures/{task}_{figure}.png" for task in TASKS for figure in TASK_FIGURES],
        *[f"{RESULTS}/models/{c}/{t}/{p}/loss.png" for c, t, p in trained_models()],
        *([f"{RESULTS}/tables/{name}" for name in GENERALIZABILITY_TABLES] if generalizability_points() else []),
    ]


TASK_FIGURES = ("rate_accuracy", "distortion_accuracy", "feature_distribution", "feature_dct")
GENERALIZABILITY_TABLES = ("generalizability.csv", "generalizability_matrix.csv", "generalizability.md")
