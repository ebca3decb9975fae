"""What every task implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lamofc_lib import determinism

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from lamofc_lib.store import TensorLayout

# Importing the task registry (lamofc_lib.tasks) imports no torch, transformers or zarr: config validation reads
# the task classes' attributes at every workflow start (`import torch` alone takes seconds). Torch and the
# modules that need it are imported inside the functions and methods that run models.


# Top-level modules the code imports from a user's clone put on sys.path at run time (the DINOv3 release's heads,
# `model.repository`), not from an environment: its dependencies are the clone's requirements.
USER_PACKAGES = ("dinov3",)


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("run.device is 'cuda' but torch sees no CUDA device; set run.device to cpu or auto")
    return device


def torch_dtype(name: str) -> torch.dtype:
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def model_source(model: Mapping) -> str:
    """Where to load a model from: a local folder (checked now), a hub id, or the folder of a Python package."""
    if model.get("package"):
        import importlib.util

        spec = importlib.util.find_spec(model["package"])
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(f"model package '{model['package']}' is not installed (model.package)")
        return str(Path(list(spec.submodule_search_locations)[0]))
    source = str(model["id"])
    local = Path(source).expanduser()
    if source.startswith((".", "/", "~")) or local.exists():
        if not local.is_dir():
            raise FileNotFoundError(f"model folder {local} does not exist (model.id)")
        return str(local)
    return source


def split_layers(split) -> list[int]:
    return [split] if isinstance(split, int) else list(split)


def load_head_file(path: str | Path, required: Mapping[str, tuple | None]) -> dict:
    """Load a head checkpoint safely (weights_only) and check its keys and tensor shapes before any work."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"head checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for an unreadable file (EOFError if empty)
        raise ValueError(f"head checkpoint {path} cannot be read as a weights-only torch file: {err}") from err
    if not isinstance(state, dict):
        raise ValueError(f"head checkpoint {path} holds a {type(state).__name__}, expected a state dict")
    missing = [k for k in required if k not in state]
    if missing:
        raise ValueError(f"head checkpoint {path} lacks keys {missing}; it has {sorted(state)[:10]}")
    for key, shape in required.items():
        if shape is not None and tuple(state[key].shape) != tuple(shape):
            raise ValueError(f"head checkpoint {path}: '{key}' has shape {tuple(state[key].shape)}, expected {shape}")
    return state


@dataclass
class Layout:
    """What a task's features look like before any model runs: one shape per manifest sample (`None` on an axis
    whose length only the model knows, e.g. csr's token count), the store attributes (split point, per-sample
    geometry) and the dtype the model produces.

    This is the one-tensor form (the tensor named `store.FEATURE`); a task whose samples carry several named
    tensors returns a `TensorsLayout`."""

    shapes: list[tuple[int | None, ...]]
    attrs: dict
    dtype: str = "float32"

    def named(self, packing: str) -> TensorsLayout:
        from lamofc_lib.store import FEATURE, TensorLayout

        return TensorsLayout({FEATURE: TensorLayout(list(self.shapes), self.dtype, {"packing": packing})}, self.attrs)


@dataclass
class TensorsLayout:
    """The named tensors of a task's features before any model runs: each tensor's layout (its shape per
    manifest sample with `None` where only the model knows the length, the dtype the model gives it, its packing
    as the attribute `packing`), and the store attributes. Imported feature files are checked against it: the
    same names, dtypes and shapes."""

    tensors: dict[str, TensorLayout]
    attrs: dict

    def named(self, packing: str) -> TensorsLayout:
        return self


@dataclass
class Extraction:
    """A task's split-point features of a manifest: concrete shapes, store attributes, dtype, and the samples
    themselves as a lazy iterator in manifest order (computed one at a time while the store is written).

    This is the one-tensor form (the tensor named `store.FEATURE`); a task whose samples carry several named
    tensors returns a `TensorExtraction`."""

    shapes: list[tuple[int, ...]]
    samples: Iterable[np.ndarray]
    attrs: dict
    dtype: str = "float32"

    def named(self, packing: str) -> TensorExtraction:
        from lamofc_lib.store import FEATURE, TensorLayout

        if not packing:
            raise TypeError("a one-tensor task must declare its packing (Task.packing, see preprocess.PACKINGS)")
        return TensorExtraction(
            {FEATURE: TensorLayout(list(self.shapes), self.dtype, {"packing": packing})},
            ({FEATURE: x} for x in self.samples),
            self.attrs,
        )


@dataclass
class TensorExtraction:
    """Split-point features whose samples carry named tensors: each tensor's layout (shapes, the dtype the model
    produced it in, and its packing as a `packing` attribute), the samples as mappings from tensor name to
    array (lazy, in manifest order), and the store attributes."""

    tensors: dict[str, TensorLayout]
    samples: Iterable[Mapping[str, np.ndarray]]
    attrs: dict

    def named(self, packing: str) -> TensorExtraction:
        return self


class Task(ABC):
    """A benchmark task.

    Features and head are built apart, so that a new head checkpoint reruns scoring, not extraction:
    `write_head` writes everything scoring needs (head weights plus the parts of the model the head applies,
    e.g. DINOv2's final LayerNorm); `features` runs the model up to the split point; `layout` says, without
    loading weights, what the features of a manifest look like (to check features imported from files).

    Scoring works in three steps so that every metric fits: `head_outputs` runs the head on each sample's
    features; `ground_truth` gives the data set's answers in the same form; `compare` turns outputs and
    references (ground truth, or the outputs on the uncompressed features) into the metric and per-sample
    rows. This base class implements them for tasks whose output is one label per sample.

    The class attributes are plain values, read without importing torch: lamofc_lib.config checks a task's
    config block against them (and the schema's task names are the registry's), so a new task declares here
    what its block may hold, and config.py and the schema keep no table of tasks."""

    # The task's key in the registry, in run.tasks and under tasks:, and its results folders' name.
    name: str = ""
    metric: str = ""
    # The metric's axis label in figures (with its unit); higher_is_better gives its direction.
    metric_label: str = ""
    # How the one tensor of a one-tensor task becomes a frame (preprocess.PACKINGS); a task with named tensors
    # gives each its packing in its TensorExtraction instead.
    packing: str = ""
    higher_is_better: bool = True
    # Task settings (tasks.<task>.<option>) that change how the metric is computed; scoring sets them.
    metric_options: tuple[str, ...] = ()
    # The source kinds its samples come from (tasks.<task>.source.kind and train.source.kind): Source classes
    # (lamofc_lib.sources.base), its own or shared ones; the registered kinds are those the tasks name.
    sources: tuple[type, ...] = ()
    # The selection policies it offers besides `first` (lamofc_lib.selection.Policy classes), and the reference
    # implementation's, used when tasks.<task>.selection.policy is not set.
    policies: tuple[type, ...] = ()
    reference_policy: str = "first"
    # JSON-schema properties its block may hold beyond the shared schema's task block (`options`, e.g. dpt's
    # eigen_crop) and model block (`model_options`, e.g. tti's sampler settings): config validation merges them
    # into this task's block alone (lamofc_lib.config.fill_registries).
    options: dict = {}
    model_options: dict = {}
    # Modules the fork server imports once for this task's jobs (lamofc_lib.forkserver), e.g. its model library.
    preload: tuple[str, ...] = ()
    # What its outputs may be scored against (tasks.<task>.reference): the data set's answers (ground_truth)
    # and/or the outputs on the uncompressed features (uncompressed).
    references: tuple[str, ...] = ("ground_truth", "uncompressed")
    # True: its head has trained weights read from tasks.<task>.head.checkpoint; without one a seeded random head
    # is drawn, which is fine only against the uncompressed predictions (reference: uncompressed). False: the
    # head comes with the model (csr's final norm and lm_head, tti's VAE decoder).
    head_checkpoint: bool = False
    # True: the feature is taken at a numbered block or layer, which tasks.<task>.split must give; False: the
    # split point is fixed (tti: the input of the VAE decoder).
    needs_split: bool = True
    # True: model.random_init builds a seeded model that still reads text, so the block also names the model
    # (id or package) whose tokenizer it takes (the language scenarios' tiny Qwen3 and FalconMamba).
    random_init_tokenizer: bool = False

    def __init__(self, device: str = "cpu", threads: int | None = None):
        self.device = device
        # The config block this instance runs (tasks.<block>, results/<block>/): `name`, or a profile's name
        # (lamofc_lib.tasks.get_task); `name` stays the registered task's, whose code may key on it.
        self.block = self.name
        if threads:
            determinism.configure_torch(threads)

    @abstractmethod
    def write_head(self, model: Mapping, split, head: Mapping, head_out: Path) -> None:
        """Check the configured head checkpoint (or draw the seeded random head), then write the head file."""

    @abstractmethod
    def layout(self, manifest: pd.DataFrame, model: Mapping, split) -> Layout | TensorsLayout:
        """The features' shapes, attributes and dtype for `manifest` (per named tensor for a task with several),
        without loading model weights."""

    @abstractmethod
    def features(self, manifest: pd.DataFrame, model: Mapping, split) -> Extraction | TensorExtraction:
        """Load the model and return the split-point features of every manifest sample (computed lazily)."""

    def extract(self, manifest: pd.DataFrame, model: Mapping, split, out: Path) -> None:
        """Write the split-point features of every manifest sample to a new store at `out`."""
        from lamofc_lib.store import write_store

        extraction = self.features(manifest, model, split).named(self.packing)
        attrs = dict(extraction.attrs)
        if self.device == "cpu":  # the host's code path, which a cluster's nodes may not share
            attrs["extraction"] = {**attrs.get("extraction", {}), "cpu_path": determinism.summary()}
        write_store(out, list(manifest["sample_id"]), extraction.tensors, extraction.samples, attrs=attrs)

    def set_metric_options(self, options: Mapping) -> None:
        unknown = sorted(set(options) - set(self.metric_options))
        if unknown:
            raise ValueError(f"task {self.block} has no metric options {unknown}; it has {list(self.metric_options)}")
        for key, value in options.items():
            setattr(self, key, value)

    def variants(self, attrs: Mapping) -> dict[str, dict]:
        """The results a point gives besides one: variant name -> the metric options that make it (e.g. the
        DINOv3 classifiers' `layer.9` and `layer.39`, each block's tensor put back on its own, as LaMoFCBench
        scores them). Empty (the default): one result. `attrs`: the uncompressed store's attributes."""
        return {}

    def tensor_groups(self, layouts: Mapping[str, Mapping]) -> dict[str, list[str]]:
        """Which tensor carries the accuracy: the groups of named tensors that are each coded alone (the others
        kept uncompressed) at one point per codec (`report.tensor_accuracy`), group name -> tensor names.
        `layouts`: each tensor's layout attributes in the uncompressed store. By default the tensors that share a
        K-means `calibration` (the slots of one level) form a group, and every other tensor is its own; a
        one-tensor task has none (its one group is the whole point)."""
        groups: dict[str, list[str]] = {}
        for name, attrs in layouts.items():
            groups.setdefault(str(attrs.get("calibration", name)), []).append(name)
        return groups if len(groups) > 1 else {}

    def injected_tensors(self, attrs: Mapping) -> list[str] | None:
        """The tensors the current metric options put back into the model (the rate over them is reported beside
        the whole sample's, as `bpfp_injected`); None: every tensor."""
        return None

    def import_tensors(self, name: str, tensor) -> dict:
        """The task's tensors made of one tensor of an imported LaMoFCBench `.zst` file (named by its key path):
        the tensor itself by default."""
        return {name: tensor}

    def reference_stem(self, sample_id: str) -> str:
        """The file stem of a sample's feature in the reference implementation's feature folders."""
        return sample_id

    def head_input(self, sample: Mapping[str, np.ndarray]):
        """What the head takes of a sample's named tensors: the one tensor of a one-tensor task."""
        (tensor,) = sample.values()
        return tensor

    def predict(self, head: Path, features: Iterable[np.ndarray]) -> list[str]:
        """Predictions of the head on (decoded) features, one string per sample, computed on `self.device`.

        `features` is consumed one sample at a time, so a store larger than memory can be scored."""
        raise NotImplementedError(f"task {self.block} scores with its own head_outputs(); it has no label predictions")

    def head_outputs(self, head: Path, features: Iterable[np.ndarray], attrs: Mapping) -> list:
        """Per-sample head outputs, in the form `compare` and `ground_truth` use. `attrs` are the attributes of
        the uncompressed feature store (extraction settings, per-sample geometry)."""
        return self.predict(head, features)

    def ground_truth(self, manifest: pd.DataFrame) -> list:
        """The data set's answer for every manifest sample."""
        labels = list(manifest["label"])
        missing = [sid for sid, label in zip(manifest["sample_id"], labels, strict=True) if label == ""]
        if missing:
            raise ValueError(f"task {self.block}: samples {missing[:5]} have no ground-truth label in the manifest")
        return labels

    @classmethod
    def benchmark(cls) -> str:
        """The benchmark the task belongs to, from where its module lives: LaMoFCBench for
        lamofc_lib.tasks.lamofcbench, LaMoFC otherwise (the report's categories)."""
        return "LaMoFCBench" if cls.__module__.startswith("lamofc_lib.tasks.lamofcbench.") else "LaMoFC"

    # The data set's other metrics besides the headline, set by `compare` where a task has them (LaMoFCBench's
    # depth metrics, segmentation's dice and fscore): the scores record's `metrics`.
    summary: dict | None = None

    def check_counts(self, outputs: Sequence, references: Sequence) -> None:
        if len(outputs) != len(references) or not len(outputs):
            raise ValueError(f"task {self.block}: {len(outputs)} outputs for {len(references)} references")

    def compare(self, outputs: Sequence, references: Sequence) -> tuple[float, list[dict]]:
        """The metric in percent (share of outputs equal to their reference) and one row per sample."""
        self.check_counts(outputs, references)
        rows = [
            {"prediction": str(p), "reference": str(r), "correct": str(p) == str(r)}
            for p, r in zip(outputs, references, strict=True)
        ]
        return 100.0 * float(np.mean([row["correct"] for row in rows])), rows
