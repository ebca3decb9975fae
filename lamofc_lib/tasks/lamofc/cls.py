"""Image classification with DINOv2 (task cls).

Split: the output of a ViT block before the final LayerNorm (block 40 of dinov2-giant), 1 x 1 x 257 x D per
image at 224 x 224. Head (the DINOv2 linear probe): final LayerNorm, concat(CLS token, mean of patch tokens),
Linear(2D, 1000) (tasks/heads.py's LinearHead).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lamofc_lib.selection import Policy, check_correct, first_eligible, pick
from lamofc_lib.sources.images import ImageNet, SkImage, load_image
from lamofc_lib.tasks.base import Extraction, Layout, Task, load_head_file, split_layers
from lamofc_lib.tasks.lamofc.options import DINOV2_MODEL_OPTIONS

if TYPE_CHECKING:
    import pandas as pd

    from lamofc_lib.tasks.lamofc.heads import LinearHead

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE = 256
CROP = 224


def image_transform(resize: int = RESIZE, crop: int = CROP):
    """The reference's cls transform: torchvision Resize(256) with its default interpolation (bilinear,
    antialiased on PIL images) on the short side, CenterCrop(224), ToTensor and ImageNet normalisation (other
    sizes: DINOv3's eval transform, 512 and 512)."""
    from torchvision import transforms

    return transforms.Compose(
        [
            transforms.ToPILImage(),
            transforms.Resize(resize, interpolation=transforms.InterpolationMode.BILINEAR),
            transforms.CenterCrop(crop),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


class FirstCorrect(Policy):
    """The reference's cls selection: candidates in their order (ImageNet: the first val image of each class,
    in class order); a candidate is kept when the uncompressed model's prediction equals its label, until
    `samples` are kept."""

    policy = "first_correct"
    description = "cls: the first image of each class the uncompressed model classifies correctly"
    kinds = ("imagenet",)
    needs_model = True

    @classmethod
    def select(cls, task, candidates, samples, source, correct):
        correct = check_correct(task, candidates, correct, samples)
        kept = first_eligible(correct, samples)
        reasons = [
            "" if k else ("incorrect" if not ok else "beyond samples") for k, ok in zip(kept, correct, strict=True)
        ]
        return pick(candidates, kept, reasons)


class ClassificationTask(Task):
    name = "cls"
    packing = "tokens"
    metric = "top1"
    metric_label = "top-1 accuracy (%)"
    sources = (SkImage, ImageNet)
    policies = (FirstCorrect,)
    model_options = DINOV2_MODEL_OPTIONS
    preload = ("torchvision.transforms", "transformers:Dinov2Model")
    reference_policy = "first_correct"
    head_checkpoint = True

    def _block(self, split) -> int:
        layers = split_layers(split)
        if len(layers) != 1:
            raise ValueError(f"task cls takes one split block, got {layers} (tasks.cls.split)")
        return layers[0]

    def write_head(self, model, split, head, head_out: Path) -> None:
        """The official linear probe (checked before the backbone loads) or a seeded random one, with the
        backbone's final LayerNorm, which the probe applies first."""
        import torch

        from lamofc_lib.tasks.lamofc.dinov2 import load_dinov2
        from lamofc_lib.tasks.lamofc.heads import LinearHead

        head_module = self._build_head(head) if head.get("checkpoint") else None
        net = load_dinov2(model, self.device)
        if head_module is None:
            torch.manual_seed(int(head.get("seed", 0)))
            head_module = LinearHead(net.config.hidden_size, net.config.layer_norm_eps)
        head_module.norm.load_state_dict({k: v.float().cpu() for k, v in net.layernorm.state_dict().items()})
        state = {k: v.cpu() for k, v in head_module.state_dict().items()}
        torch.save(state | {"eps": net.config.layer_norm_eps}, head_out)

    def layout(self, manifest: pd.DataFrame, model, split) -> Layout:
        from lamofc_lib.tasks.lamofc.dinov2 import dinov2_config

        block = self._block(split)
        config = dinov2_config(model)
        if not 1 <= block <= config.num_hidden_layers:
            raise ValueError(f"tasks.cls.split: block {block} is outside the model's 1..{config.num_hidden_layers}")
        shape = (1, 1, 1 + (CROP // config.patch_size) ** 2, config.hidden_size)
        attrs = {
            "task": self.block,
            "model": {k: v for k, v in model.items() if v is not None},
            "split": {"blocks": [block], "where": "block output, before the final LayerNorm"},
            "extraction": {"resize": RESIZE, "crop": CROP, "interpolation": "bilinear (antialiased)"},
        }
        return Layout([shape] * len(manifest), attrs)

    def features(self, manifest: pd.DataFrame, model, split) -> Extraction:
        import torch

        from lamofc_lib.tasks.lamofc.dinov2 import load_dinov2

        layout = self.layout(manifest, model, split)
        block = self._block(split)
        net = load_dinov2(model, self.device)
        transform = image_transform()
        dtype = next(net.parameters()).dtype
        shape = layout.shapes[0]

        def samples():
            for source in manifest["source"]:
                pixels = transform(load_image(source)).unsqueeze(0).to(self.device, dtype)
                with torch.no_grad():
                    out = net(pixel_values=pixels, output_hidden_states=True)
                yield out.hidden_states[block].float().cpu().numpy().reshape(shape)

        attrs = {**layout.attrs, "extraction": {**layout.attrs["extraction"], "device": self.device}}
        return Extraction([shape] * len(manifest), samples(), attrs)

    def _build_head(self, head: Mapping) -> LinearHead:
        """The official DINOv2 linear probe (keys `weight`, `bias` of Linear(2D, classes))."""
        from lamofc_lib.tasks.lamofc.heads import LinearHead

        state = load_head_file(head["checkpoint"], {"weight": None, "bias": None})
        weight = state["weight"]
        if weight.ndim != 2 or weight.shape[1] % 2 or tuple(state["bias"].shape) != (weight.shape[0],):
            raise ValueError(
                f"head checkpoint {head['checkpoint']}: weight {tuple(weight.shape)} / bias "
                f"{tuple(state['bias'].shape)} are not a Linear(2 x dim, classes)"
            )
        module = LinearHead(weight.shape[1] // 2, 1e-6, weight.shape[0])
        module.linear.load_state_dict({"weight": weight.float(), "bias": state["bias"].float()})
        return module

    def predict(self, head: Path, features: Iterable[np.ndarray]) -> list[str]:
        import torch

        from lamofc_lib.tasks.lamofc.heads import LinearHead

        state = torch.load(head, map_location="cpu", weights_only=True)
        weight = state["linear.weight"]
        module = LinearHead(weight.shape[1] // 2, float(state.pop("eps")), weight.shape[0])
        module.load_state_dict(state)
        module.to(self.device).eval()
        out = []
        for x in features:
            tokens = torch.from_numpy(np.ascontiguousarray(x[0, -1:], dtype=np.float32)).to(self.device)
            with torch.no_grad():
                out.append(str(int(module(tokens).argmax(dim=-1)[0])))
        return out
