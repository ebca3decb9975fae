"""What the dense DINOv2 tasks share (seg: lamofc_lib.tasks.lamofc.seg, dpt: lamofc_lib.tasks.lamofc.dpt):
extraction with the per-sample geometry, and a head file holding the head's weights.

seg: the image is rescaled to the scale (2048, 512) keeping its ratio, cut into 512 x 512 sliding windows at
stride 341, and each window centre-padded to 518 x 518: a 500 x 375 VOC image gives 2 windows of
1 + 37 * 37 = 1370 tokens, so the feature is 2 x 1 x 1370 x D (windows x layers x tokens x width).
dpt: the 480 x 640 image and its horizontal flip, centre-padded to 490 x 644, give 2 views of
1 + 35 * 46 = 1611 tokens at each of four blocks: 2 x 4 x 1611 x D.
The geometry each head needs to put its outputs back onto the image is kept per sample in the store's
attributes (`geometry`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lamofc_lib.sources.images import load_image
from lamofc_lib.tasks.base import Extraction, Layout, Task, split_layers
from lamofc_lib.tasks.lamofc.options import DINOV2_MODEL_OPTIONS

if TYPE_CHECKING:
    import pandas as pd
    import torch

# torch, the heads (lamofc_lib.tasks.lamofc.heads) and the DINOv2 helpers (lamofc_lib.tasks.lamofc.dinov2) are
# imported where they run, so that importing the task registry imports no torch.


def _views_seg(image: np.ndarray, geometry: dict) -> Iterator[torch.Tensor]:
    from lamofc_lib.tasks.lamofc.dinov2 import pad, resize, to_tensor

    x = resize(to_tensor(image), tuple(geometry["resized"]))
    for (y1, y2, x1, x2), padding in zip(geometry["windows"], geometry["padding"], strict=True):
        yield pad(x[..., y1:y2, x1:x2], tuple(padding))


def _views_dpt(image: np.ndarray, geometry: dict) -> Iterator[torch.Tensor]:
    import torch

    from lamofc_lib.tasks.lamofc.dinov2 import pad, resize, to_tensor

    x = resize(to_tensor(image), tuple(geometry["resized"]))
    for view, padding in zip((x, torch.flip(x, dims=[-1])), geometry["padding"], strict=True):
        yield pad(view, tuple(padding))


def _geometry(task: str):
    """(geometry of an image of a size, its views) of task seg or dpt."""
    from lamofc_lib.tasks.lamofc.dinov2 import dpt_geometry, seg_geometry

    return {"seg": (seg_geometry, _views_seg), "dpt": (dpt_geometry, _views_dpt)}[task]


def dense_layout(task: str, config, manifest: pd.DataFrame, split, attrs: Mapping) -> Layout:
    """The windows' (seg) or views' (dpt) feature shapes of every manifest image and their geometries (image
    sizes only: no model runs), for a backbone of configuration `config`."""
    geometry_of = _geometry(task)[0]
    blocks: Sequence[int] = split_layers(split)
    depth = config.num_hidden_layers
    if not all(1 <= b <= depth for b in blocks):
        raise ValueError(f"tasks.{task}.split: blocks {blocks} are not all inside the model's 1..{depth}")
    patch, width = config.patch_size, config.hidden_size
    # dpt's model.resolution (the demo's smaller input); seg's windows have no such option
    size = {"size": tuple(attrs["model"]["resolution"])} if attrs.get("model", {}).get("resolution") else {}
    geometries = [geometry_of(*load_image(source).shape[:2], patch, **size) for source in manifest["source"]]
    shapes = [(len(g["grid"]), len(blocks), 1 + g["grid"][0][0] * g["grid"][0][1], width) for g in geometries]
    meta = {
        **attrs,
        "geometry": geometries,
        "split": {"blocks": list(blocks), "where": "block output, before the final LayerNorm"},
    }
    return Layout(shapes, meta)


def dense_samples(
    task: str, net: torch.nn.Module, manifest: pd.DataFrame, layout: Layout, device: str
) -> Iterator[np.ndarray]:
    """The block outputs of every manifest image's windows (seg) or views (dpt), one sample at a time."""
    import torch

    from lamofc_lib.tasks.lamofc.dinov2 import block_outputs

    views_of = _geometry(task)[1]
    blocks = layout.attrs["split"]["blocks"]
    dtype = next(net.parameters()).dtype
    for source, geometry, shape in zip(manifest["source"], layout.attrs["geometry"], layout.shapes, strict=True):
        views = [
            block_outputs(net, v.to(device, dtype), blocks).float().cpu()
            for v in views_of(load_image(source), geometry)
        ]
        yield torch.stack(views).numpy().reshape(shape)


class DenseTask(Task):
    """What seg and dpt share: DINOv2 extraction with the per-sample geometry, and a head file holding the
    head's constructor arguments and weights."""

    packing = "tokens"
    model_options = DINOV2_MODEL_OPTIONS
    preload = ("transformers:Dinov2Model",)

    def _layers(self, split) -> int:
        return len(split_layers(split))

    def _head_from_state(self, dim: int, layers: int, state: Mapping, path: str) -> torch.nn.Module:
        """The head from a state dict in the official layout, checked first (the error names `path`)."""
        from lamofc_lib.tasks.lamofc import heads

        return heads.official_head(self.name, dim, state, path, layers=layers, **self._spec_options())

    def _spec_options(self) -> dict:
        return {}

    def write_head(self, model, split, head, head_out: Path) -> None:
        """The official head checkpoint (or seeded random weights in its layout), checked before the backbone
        loads, with the backbone's final LayerNorm where the head applies one."""
        import torch

        from lamofc_lib.tasks.lamofc import heads
        from lamofc_lib.tasks.lamofc.dinov2 import dinov2_config, load_dinov2

        config = dinov2_config(model)
        layers, dim = self._layers(split), config.hidden_size
        if head.get("checkpoint"):
            state, where = heads.read_state_dict(head["checkpoint"]), head["checkpoint"]
        else:
            state, where = heads.random_state_dict(self.name, dim, int(head.get("seed", 0)), layers=layers), "random"
        module = self._head_from_state(dim, layers, state, where)
        if hasattr(module, "set_final_norm") and getattr(module, "norm", None) is not None:
            net = load_dinov2(model, self.device)
            module.set_final_norm(heads.FinalNorm.from_module(net.layernorm))
        torch.save({"dim": dim, "layers": layers, "state": module.state_dict()}, head_out)

    def layout(self, manifest: pd.DataFrame, model, split) -> Layout:
        from lamofc_lib.tasks.lamofc.dinov2 import dinov2_config

        attrs = {"task": self.block, "model": {k: v for k, v in model.items() if v is not None}}
        return dense_layout(self.name, dinov2_config(model), manifest, split, attrs)

    def features(self, manifest: pd.DataFrame, model, split) -> Extraction:
        from lamofc_lib.tasks.lamofc.dinov2 import load_dinov2

        layout = self.layout(manifest, model, split)
        net = load_dinov2(model, self.device)
        samples = dense_samples(self.name, net, manifest, layout, self.device)
        attrs = {**layout.attrs, "extraction": {**layout.attrs.get("extraction", {}), "device": self.device}}
        return Extraction(list(layout.shapes), samples, attrs)

    def _load_head(self, head: Path) -> torch.nn.Module:
        import torch

        saved = torch.load(head, map_location="cpu", weights_only=True)
        module = self._new_head(int(saved["dim"]), int(saved["layers"]))
        module.load_state_dict(saved["state"])
        return module.to(self.device).eval()

    def _new_head(self, dim: int, layers: int) -> torch.nn.Module:
        raise NotImplementedError
