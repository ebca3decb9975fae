"""Checks that need a GPU (skipped without CUDA): LaMoFCBench's scenarios at the reference's sizes with random
weights, their split tensors' shapes and re-injection equality. Run on a lent GPU machine:
`.venv/bin/python -m pytest tests/test_gpu.py -p no:xdist`."""

from __future__ import annotations

from pathlib import Path

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


# LaMoFCBench's language models at their split's sizes (transformers' Qwen3 and FalconMamba configs of Qwen3-8B
# and FalconMamba-7B, but 6 decoder layers: the split is after layer 4), random weights on SmolLM2's tokenizer
# (model.random_init with the demo's package), in the reference's dtypes.
LANGUAGE_7B = {
    "qwen3": {"model_type": "qwen3", "hidden_size": 4096, "intermediate_size": 12288, "num_hidden_layers": 6,
              "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "dtype": "bfloat16"},
    "falcon_mamba": {"model_type": "falcon_mamba", "hidden_size": 4096, "state_size": 16, "expand": 2,
                     "conv_kernel": 4, "num_hidden_layers": 6, "dtype": "float16"},
}  # fmt: skip


@pytest.mark.parametrize("kind", list(LANGUAGE_7B))
def test_language_split_at_the_reference_sizes_and_reinjection_on_the_gpu(tmp_path, kind):
    """The split after decoder layer 4 of a Qwen3-8B-sized and a FalconMamba-7B-sized model on the GPU: the
    reference's tensor shapes (output 1 x T x 4096; keys and values 1 x 8 x T x 128, or states 1 x 8192 x 16 and
    1 x 8192 x 4), and the answers generated from the uncompressed split put back equal lm-eval's wrapper's
    answers without it."""
    import yaml
    from lm_eval.models.huggingface import HFLM

    from lamofc_lib.tasks.lamofc.csr import convert_gguf
    from lamofc_lib.tasks.lamofcbench.language.lm_tasks import build_task
    from lamofc_lib.tasks.lamofcbench.language.models import load_lm
    from lamofc_lib.tasks.lamofcbench.language.scenario import ArcChallengeDocs, data_file

    demo = yaml.safe_load(Path("config/demo.yaml").read_text())["tasks"]["lm_arc_challenge"]["model"]
    convert_gguf(demo, tmp_path / "smollm2")
    init = dict(LANGUAGE_7B[kind])
    dtype = init.pop("dtype")
    model = {**demo, "converted": str(tmp_path / "smollm2"), "dtype": dtype, "random_init": {"seed": 0, **init}}
    manifest = ArcChallengeDocs.read({"kind": "arc_challenge_docs"}).iloc[:2].reset_index(drop=True)
    task = get_task("lm_arc_challenge", device="cuda")
    task.set_metric_options({"max_gen_toks": 8})
    extraction = task.features(manifest, model, 5)
    samples = list(extraction.samples)
    shapes = {name: x.shape for name, x in samples[0].items()}
    tokens = shapes["output"][2]
    assert shapes["output"] == (1, 1, tokens, 4096)
    if kind == "qwen3":
        assert all(shapes[f"{p}.{i}"] == (1, 8, tokens, 128) for p in ("key", "value") for i in range(5))
        assert {extraction.tensors[n].dtype for n in shapes} == {"bfloat16"}
    else:
        assert all(shapes[f"ssm_state.{i}"] == (1, 1, 8192, 16) for i in range(5))
        assert all(shapes[f"conv_state.{i}"] == (1, 1, 8192, 4) for i in range(5))
        assert extraction.tensors["output"].dtype == "float32"
    answers = task.head_outputs(tmp_path / "unused", samples, {**extraction.attrs, "sample_ids": ["0", "1"]})
    net, tokenizer = load_lm(model, "cuda")
    lm = HFLM(pretrained=net, tokenizer=tokenizer, batch_size=1)
    lm_task = build_task("arc_challenge", data_file(manifest.source[0]), max_gen_toks=8)
    lm_task.build_all_requests(apply_chat_template=True, chat_template=lm.apply_chat_template, samples=[0, 1])
    for request in lm_task.instances:
        request.resps.extend(lm.generate_until([request], disable_tqdm=True))
    lm_task.apply_filters()
    assert answers == [r.filtered_resps["get_answer"] for r in lm_task.instances]


# SD3.5 Large + its canny ControlNet at their widths (transformer 38 heads x 64, CLIP-L 768 / 768, CLIP-G 1280 /
# 1280, T5-XXL 4096, the SD3 VAE's 4 levels of 128-512 channels), a few layers of each, random weights, fp16
SD35_LARGE = {
    "random_init": {
        "seed": 0, "height": 1024, "width": 1024, "steps": 2,
        "transformer": {"num_layers": 2, "attention_head_dim": 64, "num_attention_heads": 38,
                        "caption_projection_dim": 2432, "qk_norm": "rms_norm", "sample_size": 128},
        "controlnet": {"num_layers": 1, "attention_head_dim": 64, "num_attention_heads": 38},
        "clip": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 2, "num_attention_heads": 12,
                 "projection_dim": 768},
        "clip_2": {"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 2, "num_attention_heads": 20,
                   "projection_dim": 1280},
        "t5": {"d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_layers": 2, "num_heads": 64},
        "vae": {"block_out_channels": [128, 256, 512, 512], "layers_per_block": 2, "norm_num_groups": 32},
    },
    "dtype": "float16",
}  # fmt: skip


def test_sd35_canny_split_at_the_reference_sizes_and_reinjection_on_the_gpu(tmp_path):
    """The 13 tensors at SD3.5 Large's sizes in fp16 on the GPU, and both modes' images with the uncompressed
    tensors put back equal to each other (the conditions' pass reruns the pipeline on them)."""
    from lamofc_lib.store import FeatureStore

    manifest = build_candidates({"kind": "canny_demo", "images": ["astronaut", "coffee"]})
    task = get_task("sd35_canny", device="cuda")
    task.extract(manifest, SD35_LARGE, None, tmp_path / "features.zarr")
    task.write_head(SD35_LARGE, None, {}, tmp_path / "head.pt")
    store = FeatureStore(tmp_path / "features.zarr")
    shapes = {name: store.layout(name).shapes[0] for name in store.tensors}
    assert shapes["text_encoder-item0.clip_pooled_prompt_embeds"] == (1, 1, 1, 768)
    assert shapes["text_encoder_2-item4.clip_prompt_embeds"] == (1, 1, 77, 1280)
    assert shapes["text_encoder_3-item5.t5_prompt_embeds"] == (1, 1, 77, 4096)
    assert shapes["vae.encoder_f1"] == (1, 32, 128, 128) and shapes["vae.decoder"] == (1, 16, 128, 128)
    assert {store.layout(n).dtype for n in store.tensors} == {"float16"}
    samples = [store.sample(i) for i in range(len(store))]
    images = {}
    for mode in ("conditions", "latent"):
        task.set_metric_options({"mode": mode})
        images[mode] = [x.cpu().numpy() for x in task.images(tmp_path / "head.pt", samples, store.attrs)]
    assert all(np.array_equal(a, b) for a, b in zip(images["conditions"], images["latent"], strict=True))
    assert images["latent"][0].shape == (1, 3, 1024, 1024)
