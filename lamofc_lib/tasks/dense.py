"""Feature extraction of the dense DINOv2 tasks: semantic segmentation (seg) and depth estimation (dpt).

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

import numpy as np
import pandas as pd
import torch

from lamofc_lib.sources import load_image
from lamofc_lib.store import write_store
from lamofc_lib.tasks.base import split_layers
from lamofc_lib.tasks.dinov2 import (
    block_outputs,
    center_padding,
    pad,
    rescale_shape,
    resize,
    slide_windows,
    to_tensor,
)

SEG_SCALE = (2048, 512)
SEG_CROP = 512
SEG_STRIDE = 341
DPT_SIZE = (480, 640)


def seg_geometry(height: int, width: int, patch: int = 14) -> dict:
    """Where the windows of one image lie: rescaled size, window boxes, padding and patch grid per window."""
    rh, rw = rescale_shape(height, width, SEG_SCALE)
    windows = slide_windows(rh, rw, SEG_CROP, SEG_STRIDE)
    paddings = [center_padding(y2 - y1, x2 - x1, patch) for y1, x1, y2, x2 in windows]
    grids = [
        ((y2 - y1 + p[0] + p[1]) // patch, (x2 - x1 + p[2] + p[3]) // patch)
        for (y1, x1, y2, x2), p in zip(windows, paddings, strict=True)
    ]
    return {
        "original": [height, width],
        "resized": [rh, rw],
        "windows": [list(w) for w in windows],
        "padding": [list(p) for p in paddings],
        "grid": [list(g) for g in grids],
    }


def dpt_geometry(height: int, width: int, patch: int = 14) -> dict:
    """The two views (image, horizontal flip) of a depth sample resized to 480 x 640 and padded to the patch."""
    padding = center_padding(*DPT_SIZE, patch)
    grid = ((DPT_SIZE[0] + padding[0] + padding[1]) // patch, (DPT_SIZE[1] + padding[2] + padding[3]) // patch)
    return {
        "original": [height, width],
        "resized": list(DPT_SIZE),
        "views": ["image", "hflip"],
        "padding": [list(padding)] * 2,
        "grid": [list(grid)] * 2,
    }


def _views_seg(image: np.ndarray, geometry: dict) -> Iterator[torch.Tensor]:
    x = resize(to_tensor(image), tuple(geometry["resized"]))
    for (y1, x1, y2, x2), padding in zip(geometry["windows"], geometry["padding"], strict=True):
        yield pad(x[..., y1:y2, x1:x2], tuple(padding))


def _views_dpt(image: np.ndarray, geometry: dict) -> Iterator[torch.Tensor]:
    x = resize(to_tensor(image), tuple(geometry["resized"]))
    for view, padding in zip((x, torch.flip(x, dims=[-1])), geometry["padding"], strict=True):
        yield pad(view, tuple(padding))


GEOMETRY = {"seg": (seg_geometry, _views_seg), "dpt": (dpt_geometry, _views_dpt)}


def extract_dense(
    task: str,
    net: torch.nn.Module,
    manifest: pd.DataFrame,
    split,
    features: Path,
    device: str,
    attrs: Mapping,
) -> list[dict]:
    """Write the windows' (seg) or views' (dpt) block outputs of every manifest image; return the geometries."""
    geometry_of, views_of = GEOMETRY[task]
    blocks: Sequence[int] = split_layers(split)
    depth = net.config.num_hidden_layers
    if not all(1 <= b <= depth for b in blocks):
        raise ValueError(f"tasks.{task}.split: blocks {blocks} are not all inside the model's 1..{depth}")
    patch, width = net.config.patch_size, net.config.hidden_size
    images = list(manifest["source"])
    geometries = []
    for source in images:
        h, w = load_image(source).shape[:2]
        geometries.append(geometry_of(h, w, patch))
    shapes = [(len(g["grid"]), len(blocks), 1 + g["grid"][0][0] * g["grid"][0][1], width) for g in geometries]
    dtype = next(net.parameters()).dtype

    def samples():
        for source, geometry, shape in zip(images, geometries, shapes, strict=True):
            views = [
                block_outputs(net, v.to(device, dtype), blocks).float().cpu()
                for v in views_of(load_image(source), geometry)
            ]
            yield torch.stack(views).numpy().reshape(shape)

    meta = {
        **attrs,
        "geometry": geometries,
        "split": {"blocks": list(blocks), "where": "block output, before the final LayerNorm"},
    }
    write_store(features, list(manifest["sample_id"]), shapes, samples(), attrs=meta)
    return geometries
