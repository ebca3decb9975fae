"""Image classification with DINOv2 (task cls).

Split: the output of a ViT block before the final LayerNorm (block 40 of dinov2-giant), 1 x 1 x 257 x D per
image at 224 x 224. Head (the DINOv2 linear probe): final LayerNorm, concat(CLS token, mean of patch tokens),
Linear(2D, 1000).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from lamofc_lib.sources import load_image
from lamofc_lib.store import write_store
from lamofc_lib.tasks.base import Task, load_head_file, model_source, split_layers, torch_dtype

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NUM_CLASSES = 1000


def load_dinov2(model: Mapping, device: str) -> nn.Module:
    """DINOv2 from a hub id or local folder, or built from `random_init` config values with seeded weights."""
    from transformers import Dinov2Config, Dinov2Model

    dtype = torch_dtype(model.get("dtype", "float32"))
    if model.get("random_init"):
        values = dict(model["random_init"])
        seed = int(values.pop("seed", 0))
        torch.manual_seed(seed)
        net = Dinov2Model(Dinov2Config(**values))
    else:
        net = Dinov2Model.from_pretrained(model_source(model), dtype=dtype)
    return net.to(device=device, dtype=dtype).eval()


def image_transform():
    """Resize 256 (bicubic), centre crop 224, ImageNet normalisation: the DINOv2 evaluation transform."""
    from torchvision import transforms

    return transforms.Compose(
        [
            transforms.ToPILImage(),
            transforms.Resize(256, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


class LinearHead(nn.Module):
    """LayerNorm, then Linear over concat(CLS, mean(patch tokens))."""

    def __init__(self, dim: int, eps: float, classes: int = NUM_CLASSES):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.linear = nn.Linear(2 * dim, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.norm(tokens)
        return self.linear(torch.cat([x[:, 0], x[:, 1:].mean(dim=1)], dim=-1))


class ClassificationTask(Task):
    name = "cls"
    metric = "top1"

    def extract(self, manifest: pd.DataFrame, model, split, head, features: Path, head_out: Path) -> None:
        layers = split_layers(split)
        if len(layers) != 1:
            raise ValueError(f"task cls takes one split block, got {layers} (tasks.cls.split)")
        block = layers[0]
        head_module = self._build_head(model, head) if head.get("checkpoint") else None
        net = load_dinov2(model, self.device)
        depth = net.config.num_hidden_layers
        if not 1 <= block <= depth:
            raise ValueError(f"tasks.cls.split: block {block} is outside the model's 1..{depth}")
        if head_module is None:
            head_module = self._random_head(net, head)
        else:
            self._copy_norm(net, head_module)
        torch.save({k: v.cpu() for k, v in head_module.state_dict().items()} | {"eps": net.config.layer_norm_eps},
                   head_out)  # fmt: skip
        transform = image_transform()
        dtype = next(net.parameters()).dtype
        tokens = 1 + (224 // net.config.patch_size) ** 2
        shape = (1, 1, tokens, net.config.hidden_size)

        def samples():
            for source in manifest["source"]:
                pixels = transform(load_image(source)).unsqueeze(0).to(self.device, dtype)
                with torch.no_grad():
                    out = net(pixel_values=pixels, output_hidden_states=True)
                yield out.hidden_states[block].float().cpu().numpy().reshape(shape)

        attrs = {
            "task": self.name,
            "model": {k: v for k, v in model.items() if v is not None},
            "split": {"blocks": layers, "where": "block output, before the final LayerNorm"},
            "extraction": {"resize": 256, "crop": 224, "interpolation": "bicubic", "device": self.device},
        }
        write_store(features, list(manifest["sample_id"]), [shape] * len(manifest), samples(), attrs=attrs)

    def _random_head(self, net: nn.Module, head: Mapping) -> LinearHead:
        torch.manual_seed(int(head.get("seed", 0)))
        module = LinearHead(net.config.hidden_size, net.config.layer_norm_eps)
        self._copy_norm(net, module)
        return module

    @staticmethod
    def _copy_norm(net: nn.Module, module: LinearHead) -> None:
        module.norm.load_state_dict({k: v.float().cpu() for k, v in net.layernorm.state_dict().items()})

    def _build_head(self, model: Mapping, head: Mapping) -> LinearHead:
        """The official DINOv2 linear probe (keys `weight`, `bias` of Linear(2D, 1000)); checked before the
        backbone loads."""
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
