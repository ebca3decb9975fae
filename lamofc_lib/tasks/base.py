"""What every task implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("run.device is 'cuda' but torch sees no CUDA device; set run.device to cpu or auto")
    return device


def torch_dtype(name: str) -> torch.dtype:
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
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"head checkpoint {path} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"head checkpoint {path} holds a {type(state).__name__}, expected a state dict")
    missing = [k for k in required if k not in state]
    if missing:
        raise ValueError(f"head checkpoint {path} lacks keys {missing}; it has {sorted(state)[:10]}")
    for key, shape in required.items():
        if shape is not None and tuple(state[key].shape) != tuple(shape):
            raise ValueError(f"head checkpoint {path}: '{key}' has shape {tuple(state[key].shape)}, expected {shape}")
    return state


class Task(ABC):
    """A benchmark task. Scoring works in three steps so that every metric fits: `outputs` runs the head on
    each sample's features; `ground_truth` gives the data set's answers in the same form; `compare` turns
    outputs and references (ground truth, or the outputs on the uncompressed features) into the metric and
    per-sample rows. This base class implements them for tasks whose output is one label per sample."""

    name: str = ""
    metric: str = ""
    higher_is_better: bool = True

    def __init__(self, device: str = "cpu", threads: int | None = None):
        self.device = device
        if threads:
            torch.set_num_threads(threads)

    @abstractmethod
    def extract(
        self,
        manifest: pd.DataFrame,
        model: Mapping,
        split,
        head: Mapping,
        features: Path,
        head_out: Path,
    ) -> None:
        """Write the split-point features of every manifest sample to the store `features`, and the head
        (everything scoring needs) to `head_out`."""

    def predict(self, head: Path, features: Iterable[np.ndarray]) -> list[str]:
        """Predictions of the head on (decoded) features, one string per sample, computed on `self.device`.

        `features` is consumed one sample at a time, so a store larger than memory can be scored."""
        raise NotImplementedError(f"task {self.name} scores with its own outputs(); it has no label predictions")

    def outputs(self, head: Path, features: Iterable[np.ndarray], attrs: Mapping) -> list:
        """Per-sample head outputs, in the form `compare` and `ground_truth` use. `attrs` are the attributes of
        the uncompressed feature store (extraction settings, per-sample geometry)."""
        return self.predict(head, features)

    def ground_truth(self, manifest: pd.DataFrame) -> list:
        """The data set's answer for every manifest sample."""
        labels = list(manifest["label"])
        missing = [sid for sid, label in zip(manifest["sample_id"], labels, strict=True) if label == ""]
        if missing:
            raise ValueError(f"task {self.name}: samples {missing[:5]} have no ground-truth label in the manifest")
        return labels

    def check_counts(self, outputs: Sequence, references: Sequence) -> None:
        if len(outputs) != len(references) or not len(outputs):
            raise ValueError(f"task {self.name}: {len(outputs)} outputs for {len(references)} references")

    def compare(self, outputs: Sequence, references: Sequence) -> tuple[float, list[dict]]:
        """The metric in percent (share of outputs equal to their reference) and one row per sample."""
        self.check_counts(outputs, references)
        rows = [
            {"prediction": str(p), "reference": str(r), "correct": str(p) == str(r)}
            for p, r in zip(outputs, references, strict=True)
        ]
        return 100.0 * float(np.mean([row["correct"] for row in rows])), rows
