"""DINOv2 for the tasks that run it (cls, seg, dpt): the backbone's loader (load_dinov2, dinov2_config), and the
input geometry of the dense tasks (seg, dpt): resizing, sliding windows, padding to the patch size, and the block
outputs taken as features.

Follows the DINOv2 evaluation pipelines (mmseg-style): normalisation with ImageNet statistics in 0-255 units,
keep-ratio rescaling to the image scale (2048, 512), slide inference with 512 crops at stride 341, and centre
padding of every view to a multiple of the patch size (512 -> 518, 480 x 640 -> 490 x 644). Resizing uses
torch's bilinear interpolation (align_corners=False), which approximates but is not bit-identical to OpenCV's.

Position embeddings follow the DINOv2 release's ViT-g/14 (hub code: interpolate_offset=0.1,
interpolate_antialias=False) by default: for any input other than a square one with the pretraining patch count,
the M x M grid (37 x 37 for giant) is resampled in float32, bicubic, align_corners=False, with the scale factors
((rows + 0.1) / M, (cols + 0.1) / M) instead of an output size, then cast back to the tokens' dtype.
transformers' Dinov2Model passes the output size (rows, cols), which samples the grid at slightly different points,
so its features for 224 x 224 (cls, 16 x 16 patches) and 490 x 644 (dpt, 35 x 46) inputs differ from the
reference's; `set_interpolation(net, "transformers")` keeps that behaviour as an option.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from lamofc_lib.tasks.base import model_source, torch_dtype

MEAN_255 = (123.675, 116.28, 103.53)
STD_255 = (58.395, 57.12, 57.375)

INTERPOLATIONS = ("reference", "transformers")
RELEASE_OFFSET = 0.1  # interpolate_offset of the release's hub backbones without registers (dinov2_vitg14)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """An H x W x 3 uint8 image as a normalised 1 x 3 x H x W float32 tensor."""
    x = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float().unsqueeze(0)
    mean = torch.tensor(MEAN_255).view(1, 3, 1, 1)
    std = torch.tensor(STD_255).view(1, 3, 1, 1)
    return (x - mean) / std


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def rescale_shape(height: int, width: int, scale: tuple[int, int] = (2048, 512)) -> tuple[int, int]:
    """mmcv's keep-ratio rescale: the largest size whose long edge fits scale[0] and short edge scale[1]."""
    long_edge, short_edge = max(scale), min(scale)
    factor = min(long_edge / max(height, width), short_edge / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def center_padding(height: int, width: int, multiple: int = 14) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) zero padding that makes the size a multiple of the patch size, split evenly."""
    ph, pw = -height % multiple, -width % multiple
    return ph // 2, ph - ph // 2, pw // 2, pw - pw // 2


def pad(x: torch.Tensor, padding: tuple[int, int, int, int]) -> torch.Tensor:
    top, bottom, left, right = padding
    return F.pad(x, (left, right, top, bottom))


def block_outputs(net: torch.nn.Module, pixels: torch.Tensor, blocks: Sequence[int]) -> torch.Tensor:
    """Outputs of the 1-based `blocks` (before the final LayerNorm) for a 1 x 3 x H x W input: C x T x D."""
    with torch.no_grad():
        out = net(pixel_values=pixels, output_hidden_states=True)
    return torch.stack([out.hidden_states[b][0] for b in blocks])


def release_interpolate_pos_encoding(
    module: torch.nn.Module, embeddings: torch.Tensor, height: int, width: int
) -> torch.Tensor:
    """Position embeddings for an input of height x width pixels, computed as the DINOv2 release does.

    `module` is a transformers Dinov2Embeddings carrying `interpolate_offset` and `interpolate_antialias`;
    `embeddings` are its CLS + patch tokens (1 + rows * cols of them). The release names the pixel axes (w, h) in
    NCHW order, so its (sx, sy) are the factors for (rows, cols).
    """
    pos = module.position_embeddings
    num_patches, num_positions = embeddings.shape[1] - 1, pos.shape[1] - 1
    if num_patches == num_positions and height == width:
        return pos
    grid = math.isqrt(num_positions)
    if grid * grid != num_positions:
        raise ValueError(f"{num_positions} position embeddings do not form a square grid")
    patch_h, patch_w = module.patch_embeddings.patch_size
    rows, cols = height // patch_h, width // patch_w
    pos = pos.float()
    dim = pos.shape[-1]
    offset = module.interpolate_offset
    if offset:
        resample = {"scale_factor": (float(rows + offset) / grid, float(cols + offset) / grid)}
    else:
        resample = {"size": (rows, cols)}
    grid_pos = pos[:, 1:].reshape(1, grid, grid, dim).permute(0, 3, 1, 2)
    grid_pos = F.interpolate(grid_pos, mode="bicubic", antialias=module.interpolate_antialias, **resample)
    if tuple(grid_pos.shape[-2:]) != (rows, cols):
        raise ValueError(f"interpolated grid {tuple(grid_pos.shape[-2:])} is not {(rows, cols)}")
    patch_pos = grid_pos.permute(0, 2, 3, 1).reshape(1, rows * cols, dim)
    return torch.cat((pos[:, :1], patch_pos), dim=1).to(embeddings.dtype)


def set_interpolation(
    net: torch.nn.Module, interpolation: str = "reference", offset: float = RELEASE_OFFSET, antialias: bool = False
) -> torch.nn.Module:
    """Make a transformers Dinov2Model interpolate its position embeddings as the DINOv2 release (`reference`) or
    keep transformers' own output-size interpolation (`transformers`). Returns `net`, changed in place.

    The reference method is an instance attribute of `net.embeddings` (a partial over the module), so it stays
    with the module through `.to(device, dtype)`, deepcopy and pickling; weights and state_dict are unchanged.
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    embeddings = net.embeddings
    embeddings.__dict__.pop("interpolate_pos_encoding", None)  # back to the class's (transformers') method
    if interpolation == "reference":
        embeddings.interpolate_offset = float(offset)
        embeddings.interpolate_antialias = bool(antialias)
        embeddings.interpolate_pos_encoding = functools.partial(release_interpolate_pos_encoding, embeddings)
    return net


def load_dinov2(model: Mapping, device: str) -> torch.nn.Module:
    """DINOv2 from a hub id or local folder, or built from `random_init` config values with seeded weights.

    Position embeddings are interpolated as `model.interpolation` says: `reference` (the default, the DINOv2
    release's scale-factor bicubic resampling) or `transformers` (its output-size resampling); see
    set_interpolation.
    """
    from transformers import Dinov2Config, Dinov2Model

    dtype = torch_dtype(model.get("dtype", "float32"))
    if model.get("random_init"):
        values = dict(model["random_init"])
        seed = int(values.pop("seed", 0))
        torch.manual_seed(seed)
        net = Dinov2Model(Dinov2Config(**values))
    else:
        net = Dinov2Model.from_pretrained(model_source(model), dtype=dtype)
    set_interpolation(net, model.get("interpolation") or "reference")
    return net.to(device=device, dtype=dtype).eval()


def dinov2_config(model: Mapping):
    """The backbone's configuration without its weights (to check a head or a feature layout before heavy work)."""
    from transformers import Dinov2Config

    if model.get("random_init"):
        return Dinov2Config(**{k: v for k, v in model["random_init"].items() if k != "seed"})
    return Dinov2Config.from_pretrained(model_source(model))


# Sliding windows (seg) and flipped views (dpt): where the heads' outputs go on the image


def slide_windows(height: int, width: int, crop: int = 512, stride: int = 341) -> list[tuple[int, int, int, int]]:
    """Crop boxes (y1, y2, x1, x2) of mmseg's slide inference, in its order (rows, then columns); the last crop
    of a row or column is moved back to end at the image border; an image smaller than the crop gives one
    smaller crop."""
    rows = max(height - crop + stride - 1, 0) // stride + 1
    cols = max(width - crop + stride - 1, 0) // stride + 1
    boxes = []
    for r in range(rows):
        for c in range(cols):
            y2, x2 = min(r * stride + crop, height), min(c * stride + crop, width)
            boxes.append((max(y2 - crop, 0), y2, max(x2 - crop, 0), x2))
    return boxes


def stitch_windows(
    crop_logits: Sequence[torch.Tensor], boxes: Sequence[tuple[int, int, int, int]], height: int, width: int
) -> torch.Tensor:
    """Average per-crop maps (each K x h_crop x w_crop, already at its crop's size) over the image: K x H x W."""
    if len(crop_logits) != len(boxes):
        raise ValueError(f"{len(crop_logits)} crop maps for {len(boxes)} windows")
    first = crop_logits[0]
    total = first.new_zeros((first.shape[0], height, width))
    count = first.new_zeros((1, height, width))
    for logits, (y1, y2, x1, x2) in zip(crop_logits, boxes, strict=True):
        if tuple(logits.shape[-2:]) != (y2 - y1, x2 - x1):
            raise ValueError(f"crop map {tuple(logits.shape[-2:])} does not fit window {(y1, y2, x1, x2)}")
        total[:, y1:y2, x1:x2] += logits
        count[:, y1:y2, x1:x2] += 1
    if bool((count == 0).any()):
        raise ValueError("the windows do not cover the image")
    return total / count


def merge_flip_views(depth: torch.Tensor, flipped: Sequence[bool]) -> torch.Tensor:
    """Flip back the horizontally flipped views of N x 1 x H x W maps and average them (the official flip test
    augmentation): 1 x 1 x H x W."""
    if depth.shape[0] != len(flipped):
        raise ValueError(f"{depth.shape[0]} views but {len(flipped)} flip flags")
    views = [d.flip(-1) if f else d for d, f in zip(depth, flipped, strict=True)]
    return torch.stack(views).mean(dim=0, keepdim=True)


# The windows and views of the dense tasks' inputs (mmseg's sliding windows for seg, image + flip for dpt)
SEG_SCALE = (2048, 512)
SEG_CROP = 512
SEG_STRIDE = 341
DPT_SIZE = (480, 640)


def seg_geometry(height: int, width: int, patch: int = 14) -> dict:
    """Where the windows of one image lie: rescaled size, window boxes, padding and patch grid per window."""
    rh, rw = rescale_shape(height, width, SEG_SCALE)
    windows = slide_windows(rh, rw, SEG_CROP, SEG_STRIDE)  # (y1, y2, x1, x2)
    paddings = [center_padding(y2 - y1, x2 - x1, patch) for y1, y2, x1, x2 in windows]
    grids = [
        ((y2 - y1 + p[0] + p[1]) // patch, (x2 - x1 + p[2] + p[3]) // patch)
        for (y1, y2, x1, x2), p in zip(windows, paddings, strict=True)
    ]
    return {
        "original": [height, width],
        "resized": [rh, rw],
        "windows": [list(w) for w in windows],
        "padding": [list(p) for p in paddings],
        "grid": [list(g) for g in grids],
    }


def dpt_geometry(height: int, width: int, patch: int = 14, size: tuple[int, int] = DPT_SIZE) -> dict:
    """The two views (image, horizontal flip) of a depth sample resized to `size` (the paper's 480 x 640, NYU's
    own) and padded to the patch."""
    size = (int(size[0]), int(size[1]))
    padding = center_padding(*size, patch)
    grid = ((size[0] + padding[0] + padding[1]) // patch, (size[1] + padding[2] + padding[3]) // patch)
    return {
        "original": [height, width],
        "resized": list(size),
        "views": ["image", "hflip"],
        "padding": [list(padding)] * 2,
        "grid": [list(grid)] * 2,
    }
