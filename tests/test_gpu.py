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


def test_dinov3_7b_depth_split_tensors_and_reinjection_on_the_gpu(tmp_path):
    """NYU-Depth-v2's scenario at the reference's size (short side 768; coffee 400 x 600 -> 768 x 1152): the eight
    tensors of blocks 9, 19, 29, 39 of the image and its flip, and the depth map from the stored tensors equal to
    the one from a plain forward pass's hidden states (transformers' Depth Anything head, seeded)."""
    from lamofc_lib.sources.images import load_image
    from lamofc_lib.store import FeatureStore
    from lamofc_lib.tasks.lamofcbench.vision.depth import DepthModel, depth_input, merged_depth
    from lamofc_lib.tasks.lamofcbench.vision.dinov3 import load_dinov3

    torch.backends.cuda.matmul.allow_tf32 = False
    model = {**DINOV3_7B, "resolution": 768}
    manifest = build_candidates({"kind": "skimage", "images": ["coffee"]})
    task = get_task("dinov3_nyu", device="cuda")
    task.extract(manifest, model, [10, 20, 30, 40], tmp_path / "features.zarr")
    task.write_head(model, [10, 20, 30, 40], {"seed": 0}, tmp_path / "head.pt")
    store = FeatureStore(tmp_path / "features.zarr")
    assert store.tensors == [f"layer.{b}.{v}" for b in (9, 19, 29, 39) for v in (0, 1)]
    assert all(store.layout(t).shapes == [(1, 1, 1 + 4 + 48 * 72, 4096)] for t in store.tensors)
    (scored,) = task.head_outputs(tmp_path / "head.pt", [store.sample(0)], store.attrs)
    net, head = load_dinov3(model, "cuda"), DepthModel(torch.load(tmp_path / "head.pt", weights_only=True), "cuda")
    image = load_image(manifest["source"][0])
    pixels = depth_input(image, 768, 16).cuda()
    with torch.no_grad():
        hidden = net(pixel_values=pixels, output_hidden_states=True).hidden_states
        depth = head.head_forward([hidden[b + 1] for b in (9, 19, 29, 39)], *pixels.shape[-2:])
    np.testing.assert_array_equal(scored, merged_depth(depth, image.shape[:2]))
    perturbed = {**store.sample(0)}
    noise = np.random.default_rng(0).normal(0, 1, (1, 1, 3461, 4096)).astype(np.float32)
    perturbed["layer.19.1"] = perturbed["layer.19.1"] + noise
    (changed,) = task.head_outputs(tmp_path / "head.pt", [perturbed], store.attrs)
    assert not np.array_equal(changed, scored)


def test_dinov3_7b_segmentation_crops_and_reinjection_on_the_gpu(tmp_path):
    """ADE20K's scenario at the reference's size (short side 896, crops of 896 at stride 596; coffee gives two):
    the crops' tensors of blocks 9, 19, 29, 39 (1 x 3141 x 4096, the two other slots absent), and the label map
    with them put back equal to the one without hooks (transformers' UperNet head, seeded)."""
    from lamofc_lib.sources.images import load_image
    from lamofc_lib.store import FeatureStore
    from lamofc_lib.tasks.lamofcbench.vision.segmentation import (
        DemoSegmenter,
        crops_of,
        segmentation_input,
        stitched,
    )

    torch.backends.cuda.matmul.allow_tf32 = False
    model = {**DINOV3_7B, "resolution": 896, "crop": 896, "stride": 596, "crops": 4}
    manifest = build_candidates({"kind": "skimage", "images": ["coffee"]})
    task = get_task("dinov3_ade20k", device="cuda")
    task.extract(manifest, model, [10, 20, 30, 40], tmp_path / "features.zarr")
    task.write_head(model, [10, 20, 30, 40], {"seed": 0}, tmp_path / "head.pt")
    store = FeatureStore(tmp_path / "features.zarr")
    assert [store.has(0, f"layer.9.{k}") for k in range(4)] == [True, True, False, False]
    assert store.layout("layer.39.1").shapes == [(1, 1, 3141, 4096)]
    (scored,) = task.head_outputs(tmp_path / "head.pt", [store.sample(0)], store.attrs)
    g = store.attrs["geometry"][0]
    segmenter = DemoSegmenter(model, str(tmp_path / "head.pt"), "cuda")
    crops = crops_of(segmentation_input(load_image(manifest["source"][0]), 896), g["boxes"]).cuda()
    with torch.no_grad():
        full = stitched(segmenter.scores(crops), g["boxes"], tuple(g["resized"]), tuple(g["original"]))
    np.testing.assert_array_equal(scored, full[0].argmax(0).to(torch.uint8).numpy())
