"""LaMoFCBench's vision understanding scenarios (rows 1-5): DINOv3 ViT-7B/16 classification on ImageNet-1k,
ImageNet-A and ImageNet-R (classification.py), ADE20K segmentation and NYUv2 depth; the DINOv3 backbone they
share is in dinov3.py."""

import re

_LEVEL = re.compile(r"(?:layer|segmentation_model\.0\.backbone\.blocks)\.(\d+)")


def level_items(name: str, tensor) -> dict:
    """A released `.zst` file's level, named `layer.9` (the coder's name) or `segmentation_model.0.backbone.blocks.9`
    (older files, the names dinov3cls.py reads), a (B, T, D) batch, as its items `layer.9.0` ... (1, T, D) each: the
    vision scenarios' `Task.import_tensors`. Any other tensor keeps its name."""
    match = _LEVEL.fullmatch(name)
    if not match or tensor.ndim != 3:
        return {name: tensor}
    return {f"layer.{match[1]}.{b}": tensor[b : b + 1] for b in range(tensor.shape[0])}
