"""LaMoFCBench's classification scenarios (rows 1-3): DINOv3 ViT-7B/16 with the release's linear classifier on
ImageNet-1k val (`dinov3_in1k`), ImageNet-A (`dinov3_in_a`) and ImageNet-R (`dinov3_in_r`), top-1.

As the reference (machine/cvu/dinov3cls.py):
- input: resize the short side to `model.resolution` (512), centre crop, ImageNet normalization;
- split: the outputs of blocks 9 and 39 (0-based, before the final norm; `split: [10, 40]` in the project's
  1-based convention), each image one batch item: tensors `layer.9.0` and `layer.39.0`, (1, 1029, 4096) fp32 at
  512 x 512 (the class token, 4 registers, 32 x 32 patches);
- scoring by re-injection: the decoded tensors replace the outputs of those blocks in the backbone's forward pass
  (lamofc_lib.reinjection), the blocks after them run on them, then the final norm and the linear head on
  [class token, mean of the patch tokens] (registers excluded);
- ImageNet-A and -R score the 200 columns of their classes (`class_subset`); the prediction is the index among
  them, as the label is the index of the image's class folder among the subset's sorted folders.

As the reference (`--skip_layer`), each split block's tensor is put back on its own: two results per data set,
the variants `layer.9` and `layer.39` (the tables' task `dinov3_in1k:layer.9`, ...). `inject` names the blocks
instead (one result). The whole file (every split tensor) is coded and counted in BPFP, as the reference reports
it; `bpfp_injected` is the rate of the tensors put back.

At scoring the backbone runs on a blank image of the input's size: everything after the first injected block
depends on the pixels only through the injected tensor (the rotary position embeddings depend on the input's
size alone), so the outputs equal those of the real image's forward pass with the same tensors injected.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from lamofc_lib.sources.base import Source
from lamofc_lib.sources.images import IMAGE_SUFFIXES, SkImage, load_image
from lamofc_lib.sources.manifest import COLUMNS, SourceError
from lamofc_lib.tasks.base import Task, TensorExtraction, TensorsLayout, load_head_file
from lamofc_lib.tasks.lamofcbench.vision import level_items

RESOLUTION = 512


def read_class_subset(path: str | Path) -> list[int]:
    """A data set's class subset: the ImageNet-1k class index of each of its classes, in the order of its sorted
    class folders (a JSON list of integers, or one integer per line)."""
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"class subset file {path} does not exist (class_subset)")
    text = path.read_text()
    try:
        values = json.loads(text) if text.lstrip().startswith("[") else [line for line in text.split() if line]
        columns = [int(v) for v in values]
    except (ValueError, TypeError) as err:
        raise SourceError(f"class subset file {path}: expected ImageNet-1k class indices ({err})") from None
    if not columns or len(set(columns)) != len(columns) or min(columns) < 0:
        raise SourceError(f"class subset file {path}: expected distinct non-negative class indices")
    return columns


def subset_prediction(logits: np.ndarray, columns: Sequence[int] | None) -> int:
    """The predicted class: the argmax over all logits, or over the subset's columns (its index among them)."""
    logits = np.asarray(logits, dtype=np.float64).reshape(-1)
    if columns is None:
        return int(np.argmax(logits))
    if max(columns) >= logits.size:
        raise ValueError(f"class subset column {max(columns)} is outside the head's {logits.size} classes")
    return int(np.argmax(logits[list(columns)]))


def _image_folder(source: Mapping) -> pd.DataFrame:
    """Every image of the class folders under `root` (torchvision ImageFolder's order: folders sorted, images
    sorted), labelled by its folder's index among them; sample id `<folder>-<stem>` (the reference's)."""
    root = Path(source["root"])
    if not root.is_dir():
        raise SourceError(f"image folder {root} does not exist")
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if not folders:
        raise SourceError(f"image folder {root} holds no class folders")
    rows = []
    for index, folder in enumerate(folders):
        for image in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            rows.append({"sample_id": f"{folder.name}-{image.stem}", "source": str(image), "label": str(index),
                         "text": ""})  # fmt: skip
    return pd.DataFrame(rows, columns=COLUMNS)


class ImageFolder(Source):
    kind = "image_folder"
    description = "class folders of images (ImageNet-1k val, ImageNet-A, ImageNet-R), labelled by sorted folder"
    properties = {
        "root": {"description": "Data folder, relative to the working directory or absolute.",
                 "type": ["string", "null"]},
    }  # fmt: skip
    path_keys = required = ("root",)
    read = staticmethod(_image_folder)


def classification_input(image: np.ndarray, resolution: int):
    """The reference's eval transform (LaMoFC's cls transform at other sizes): the short side resized to
    `resolution` (bilinear, antialiased, as torchvision on a PIL image), the centre `resolution` square,
    ImageNet-normalized: 1 x 3 x R x R."""
    from lamofc_lib.tasks.lamofc.cls import image_transform

    return image_transform(resolution, resolution)(image)[None]


class Dinov3Classification(Task):
    """ImageNet-1k val: all 1000 logits."""

    name = "dinov3_in1k"
    metric = "top1"
    metric_label = "top-1 accuracy (%)"
    sources = (SkImage, ImageFolder)
    head_checkpoint = True
    metric_options = ("inject", "class_subset")
    options = {
        "inject": {
            "description": (
                "The split blocks (1-based, as split) whose decoded tensors re-enter the backbone at scoring "
                "(default: all of them). LaMoFCBench scores each of its blocks on its own: [10] and [40]."
            ),
            "type": ["array", "null"],
            "items": {"type": "integer", "minimum": 1},
            "default": None,
        },
        "class_subset": {
            "description": (
                "ImageNet-A/-R: a file of the ImageNet-1k class index of each of the data set's classes, in the "
                "order of its sorted class folders (a JSON list or one index per line); the prediction is the "
                "argmax over those columns. null: every class."
            ),
            "type": ["string", "null"],
            "default": None,
        },
    }
    model_options = {
        "resolution": {
            "description": "Input size: short side resized, then centre-cropped (reference 512).",
            "type": "integer",
            "minimum": 16,
        },
    }
    preload = ("transformers:DINOv3ViTModel", "torchvision.transforms")
    inject = None  # tasks.<task>.inject
    class_subset = None  # tasks.<task>.class_subset

    def layout(self, manifest: pd.DataFrame, model: Mapping, split) -> TensorsLayout:
        from lamofc_lib.store import TensorLayout
        from lamofc_lib.tasks.lamofcbench.vision.dinov3 import dinov3_config, split_blocks, tokens

        config = dinov3_config(model)
        resolution = int(model.get("resolution") or RESOLUTION)
        shape = (1, 1, tokens(config, resolution, resolution), int(config.hidden_size))
        blocks = split_blocks(self.block, split, config)
        tensors = {
            f"layer.{b}.0": TensorLayout([shape] * len(manifest), "float32", {"packing": "tokens", "block": b})
            for b in blocks
        }
        attrs = {
            "task": self.block,
            "model": {k: v for k, v in model.items() if v is not None},
            "split": {"blocks": blocks, "where": "block output (0-based), before the final norm"},
            "extraction": {"resolution": resolution, "registers": int(config.num_register_tokens)},
        }
        return TensorsLayout(tensors, attrs)

    def features(self, manifest: pd.DataFrame, model: Mapping, split) -> TensorExtraction:
        import torch

        from lamofc_lib.reinjection import batch_items, captured
        from lamofc_lib.tasks.lamofcbench.vision.dinov3 import load_dinov3, split_points

        layout = self.layout(manifest, model, split)
        net = load_dinov3(model, self.device)
        points = split_points(layout.attrs["split"]["blocks"])
        resolution = layout.attrs["extraction"]["resolution"]
        dtype = next(net.parameters()).dtype

        def samples():
            for source in manifest["source"]:
                pixels = classification_input(load_image(source), resolution).to(self.device, dtype)
                with torch.no_grad(), captured(net, points) as found:
                    net(pixel_values=pixels)
                sample = {}
                for name, tensor in found.items():
                    for item, value in batch_items(name, tensor).items():
                        sample[item] = value.float().cpu().numpy()[:, None]  # (1, 1, T, D)
                yield sample

        return TensorExtraction(layout.tensors, samples(), layout.attrs)

    def write_head(self, model: Mapping, split, head: Mapping, head_out: Path) -> None:
        """The release's linear classifier (`weight` C x 2D and `bias` C, optionally under `linear_head.` or
        `head.`), checked before any backbone loads, or a seeded random one of 1000 classes."""
        import torch

        from lamofc_lib.tasks.lamofcbench.vision.dinov3 import dinov3_config

        dim = 2 * int(dinov3_config(model).hidden_size)
        if head.get("checkpoint"):
            state = load_head_file(head["checkpoint"], {})
            state = state.get("state_dict", state) if isinstance(state.get("state_dict"), Mapping) else state
            for prefix in ("", "linear_head.", "head."):
                if f"{prefix}weight" in state and f"{prefix}bias" in state:
                    weight, bias = state[f"{prefix}weight"], state[f"{prefix}bias"]
                    break
            else:
                raise ValueError(
                    f"head checkpoint {head['checkpoint']} holds no linear classifier (weight and bias, optionally "
                    f"under linear_head. or head.); it has {sorted(state)[:8]}"
                )
            if weight.ndim != 2 or weight.shape[1] != dim or bias.shape != (weight.shape[0],):
                raise ValueError(
                    f"head checkpoint {head['checkpoint']}: a classifier of weight {tuple(weight.shape)} and bias "
                    f"{tuple(bias.shape)} does not take the backbone's [class token, mean patch token] of {dim}"
                )
        else:
            generator = torch.Generator().manual_seed(int(head.get("seed", 0)))
            weight = torch.randn(1000, dim, generator=generator) / dim**0.5
            bias = torch.zeros(1000)
        torch.save({"weight": weight.float().cpu(), "bias": bias.float().cpu()}, head_out)

    def head_input(self, sample: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        return sample

    def import_tensors(self, name: str, tensor) -> dict:
        return level_items(name, tensor)

    def variants(self, attrs: Mapping) -> dict[str, dict]:
        """Each split block's tensor put back on its own (the reference's two results per data set), unless
        `inject` names the blocks."""
        blocks = list(attrs["split"]["blocks"])
        if self.inject is not None or len(blocks) < 2:
            return {}
        return {f"layer.{b}": {"inject": [b + 1]} for b in blocks}

    def _chosen(self, attrs: Mapping) -> list[int]:
        blocks = list(attrs["split"]["blocks"])
        chosen = blocks if self.inject is None else sorted(b - 1 for b in self.inject)
        missing = sorted(set(chosen) - set(blocks))
        if missing:
            raise ValueError(f"tasks.{self.block}.inject: blocks {[b + 1 for b in missing]} are not split blocks")
        return chosen

    def tensor_groups(self, layouts: Mapping[str, Mapping]) -> dict[str, list[str]]:
        """None: each variant already puts one block's tensor back alone (the other is not read)."""
        return {}

    def injected_tensors(self, attrs: Mapping) -> list[str]:
        return [f"layer.{b}.0" for b in self._chosen(attrs)]

    def logits(self, head: Path, features: Iterable[Mapping[str, np.ndarray]], attrs: Mapping) -> list[np.ndarray]:
        """The classifier's logits with the `inject` blocks' tensors of each sample put back into the backbone."""
        import torch

        from lamofc_lib.reinjection import injected, join_items
        from lamofc_lib.tasks.lamofcbench.vision.dinov3 import load_dinov3, split_points

        chosen = self._chosen(attrs)
        net = load_dinov3(attrs["model"], self.device)
        state = torch.load(head, map_location=self.device, weights_only=True)
        resolution = int(attrs["extraction"]["resolution"])
        prefix = 1 + int(attrs["extraction"]["registers"])
        dtype = next(net.parameters()).dtype
        blank = torch.zeros(1, 3, resolution, resolution, device=self.device, dtype=dtype)
        out = []
        for sample in features:
            tensors = {f"layer.{b}": join_items(f"layer.{b}", sample)[:, 0] for b in chosen}
            with torch.no_grad(), injected(net, split_points(chosen), tensors):
                hidden = net(pixel_values=blank).last_hidden_state  # after the final norm
                features_ = torch.cat([hidden[:, 0], hidden[:, prefix:].mean(dim=1)], dim=-1).float()
                logits = features_ @ state["weight"].T + state["bias"]
            out.append(logits[0].cpu().numpy())
        return out

    def head_outputs(self, head: Path, features: Iterable, attrs: Mapping) -> list[str]:
        columns = read_class_subset(self.class_subset) if self.class_subset else None
        return [str(subset_prediction(x, columns)) for x in self.logits(head, features, attrs)]


class Dinov3ImageNetA(Dinov3Classification):
    """ImageNet-A: the 200 columns of its classes (`class_subset`)."""

    name = "dinov3_in_a"


class Dinov3ImageNetR(Dinov3Classification):
    """ImageNet-R: the 200 columns of its classes (`class_subset`)."""

    name = "dinov3_in_r"
