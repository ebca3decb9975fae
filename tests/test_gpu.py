"""Checks that need a GPU (skipped without CUDA): LaMoFCBench's scenarios at the reference's sizes with random
weights, their split tensors' shapes and re-injection equality. Run on a lent GPU machine:
`.venv/bin/python -m pytest tests/test_gpu.py -p no:xdist`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lamofc_lib.sources import build_candidates
from lamofc_lib.tasks import get_task

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

# DINOv3 ViT-7B/16's architecture (transformers' DINOv3ViTConfig fields), random weights
DINOV3_7B = {
    "random_init": {"seed": 0, "hidden_size": 4096, "intermediate_size": 8192, "num_hidden_layers": 40,
                    "num_attention_heads": 32, "patch_size": 16, "num_register_tokens": 4, "use_gated_mlp": True,
                    "layerscale_value": 1e-5, "query_bias": False, "key_bias": False, "value_bias": False},
    "resolution": 512,
}  # fmt: skip


def test_dinov3_7b_classification_split_tensors_and_reinjection_on_the_gpu(tmp_path):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    manifest = build_candidates({"kind": "skimage", "images": ["astronaut", "coffee"]})
    task = get_task("dinov3_in1k", device="cuda")
    task.extract(manifest, DINOV3_7B, [10, 40], tmp_path / "features.zarr")
    task.write_head(DINOV3_7B, [10, 40], {"seed": 0}, tmp_path / "head.pt")
    from lamofc_lib.store import FeatureStore

    store = FeatureStore(tmp_path / "features.zarr")
    assert store.tensors == ["layer.9.0", "layer.39.0"]
    assert all(store.layout(t).shapes == [(1, 1, 1029, 4096)] * 2 for t in store.tensors)
    samples = [store.sample(i) for i in range(len(store))]
    plain = _plain_logits(manifest, tmp_path / "head.pt")
    for inject in ([10], [40]):
        task.set_metric_options({"inject": inject, "class_subset": None})
        first = task.logits(tmp_path / "head.pt", samples, store.attrs)
        again = task.logits(tmp_path / "head.pt", samples, store.attrs)
        assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
        assert all(np.array_equal(a, b) for a, b in zip(first, plain, strict=True)), inject
        perturbed = [{**s, f"layer.{inject[0] - 1}.0": s[f"layer.{inject[0] - 1}.0"] + 0.5} for s in samples]
        changed = task.logits(tmp_path / "head.pt", perturbed, store.attrs)
        assert not all(np.array_equal(a, b) for a, b in zip(first, changed, strict=True))


def _plain_logits(manifest, head) -> list[np.ndarray]:
    """The backbone's plain forward pass on each image (no hooks), then the head."""
    from lamofc_lib.sources.images import load_image
    from lamofc_lib.tasks.lamofcbench.vision.classification import classification_input
    from lamofc_lib.tasks.lamofcbench.vision.dinov3 import load_dinov3

    net = load_dinov3(DINOV3_7B, "cuda")
    state = torch.load(head, map_location="cuda", weights_only=True)
    out = []
    for source in manifest["source"]:
        with torch.no_grad():
            hidden = net(pixel_values=classification_input(load_image(source), 512).cuda()).last_hidden_state
            pooled = torch.cat([hidden[:, 0], hidden[:, 5:].mean(dim=1)], dim=-1).float()
            out.append((pooled @ state["weight"].T + state["bias"])[0].cpu().numpy())
    return out
