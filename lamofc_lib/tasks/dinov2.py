"""DINOv2 input geometry shared by the dense tasks (seg, dpt): resizing, sliding windows, padding to the patch
size, and the block outputs taken as features.

Follows the DINOv2 evaluation pipelines (mmseg-style): normalisation with ImageNet statistics in 0-255 units,
keep-ratio rescaling to the image scale (2048, 512), slide inference with 512 crops at stride 341, and centre
padding of every view to a multiple of the patch size (512 -> 518, 480 x 640 -> 490 x 644). Resizing uses
torch's bilinear interpolation (align_corners=False), which approximates but is not bit-identical to OpenCV's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

MEAN_255 = (123.675, 116.28, 103.53)
STD_255 = (58.395, 57.12, 57.375)


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
