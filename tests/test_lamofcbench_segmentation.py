"""LaMoFCBench's ADE20K segmentation (dinov3_ade20k) on a tiny DINOv3 with seeded weights: the slide crops and
their split tensors as the reference names them (every crop kept, absent slots for images with fewer), scoring
with the decoded tensors put back into the backbone's forward pass (checked against transformers' own hidden
states of plain forward passes), and the geometry against hand computations."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from lamofc_lib.sources import build_candidates
from lamofc_lib.sources.images import load_image
from lamofc_lib.store import FeatureStore
from lamofc_lib.tasks import get_task
from lamofc_lib.tasks.lamofcbench.vision.segmentation import (
    crop_boxes,
    crops_of,
    resized_size,
    segmentation_input,
    stitched,
)

TINY = {
    "random_init": {"seed": 0, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 4,
                    "num_attention_heads": 2, "patch_size": 16, "num_register_tokens": 4, "image_size": 64,
                    "initializer_range": 0.2},
    "resolution": 48, "crop": 48, "stride": 32, "crops": 3,
}  # fmt: skip
SPLIT = [1, 2, 3, 4]
# astronaut 512 x 512 -> 48 x 48: one crop; coffee 400 x 600 -> 48 x 72: two; a 100 x 300 strip -> 48 x 144: 4


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory):
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("dinov3_seg")
    manifest = build_candidates({"kind": "skimage", "images": ["astronaut", "coffee"]})
    task = get_task("dinov3_ade20k")
    task.extract(manifest, TINY, SPLIT, folder / "features.zarr")
    task.write_head(TINY, SPLIT, {"seed": 3}, folder / "head.pt")
    return task, manifest, folder


def test_the_slide_windows_and_resize_are_the_references(tmp_path):
    assert resized_size(512, 683, 896) == (896, 1195)  # int(896 * 683 / 512 + 0.5)
    assert resized_size(683, 512, 896) == (1195, 896)
    assert crop_boxes(896, 1195, 896, 596) == [(0, 896, 0, 896), (0, 896, 299, 1195)]
    # (2000 - 896 + 595) // 596 + 1 = 3 columns, the last moved back to end at 2000
    assert crop_boxes(896, 2000, 896, 596) == [(0, 896, 0, 896), (0, 896, 596, 1492), (0, 896, 1104, 2000)]
    assert crop_boxes(896, 896, 896, 596) == [(0, 896, 0, 896)]


def test_each_crop_is_its_own_tensor_and_missing_crops_are_absent(seg_run):
    task, manifest, folder = seg_run
    store = FeatureStore(folder / "features.zarr")
    assert store.tensors == [f"layer.{b}.{k}" for b in range(4) for k in range(3)]
    assert [[store.has(i, f"layer.2.{k}") for k in range(3)] for i in range(2)] == [
        [True, False, False],
        [True, True, False],
    ]
    # 1 class token + 4 registers + 3 x 3 patches of a 48 x 48 crop
    assert store.layout("layer.0.0").shapes == [(1, 1, 14, 32)] * 2
    from lamofc_lib.tasks.lamofcbench.vision.dinov3 import load_dinov3

    net = load_dinov3(TINY, "cpu")
    pixels = segmentation_input(load_image(manifest["source"][1]), 48)
    crops = crops_of(pixels, [(0, 48, 0, 48), (0, 48, 24, 72)])
    with torch.no_grad():
        hidden = net(pixel_values=crops, output_hidden_states=True).hidden_states
    for b in range(4):
        for k in range(2):
            np.testing.assert_array_equal(store.read(1, f"layer.{b}.{k}")[0, 0], hidden[b + 1][k].numpy())


def test_the_input_is_the_pil_bilinear_resize_normalized_on_the_255_scale():
    image = np.asarray(Image.open(_skimage("coffee.png")).convert("RGB"))
    x = segmentation_input(image, 48)
    by_hand = np.asarray(Image.fromarray(image).resize((72, 48), Image.BILINEAR), dtype=np.float64)
    mean, std = np.array([0.485, 0.456, 0.406]) * 255, np.array([0.229, 0.224, 0.225]) * 255
    np.testing.assert_allclose(x[0].numpy().transpose(1, 2, 0), (by_hand - mean) / std, rtol=1e-5, atol=1e-5)


def _skimage(name):
    from pathlib import Path

    import skimage.data

    return Path(skimage.data.__file__).parent / name


def _plain_maps(task, manifest, store, head):
    """Each image's label map from plain forward passes: transformers' hidden states of the crops, the saved
    UperNet head on them after the final norm, stitched by hand."""
    import torch.nn.functional as F

    from lamofc_lib.tasks.lamofcbench.vision.dinov3 import load_dinov3
    from lamofc_lib.tasks.lamofcbench.vision.segmentation import upernet_head

    net = load_dinov3(TINY, "cpu")
    saved = torch.load(head, weights_only=True)
    module = upernet_head(32, 4, saved["settings"])
    module.load_state_dict(saved["state"])
    module.eval()
    out = []
    for source, g in zip(manifest["source"], store.attrs["geometry"], strict=True):
        crops = crops_of(segmentation_input(load_image(source), 48), g["boxes"])
        with torch.no_grad():
            hidden = net(pixel_values=crops, output_hidden_states=True).hidden_states
            maps = [net.norm(hidden[b + 1])[:, 5:].reshape(len(crops), 3, 3, 32).permute(0, 3, 1, 2) for b in range(4)]
            scores = F.interpolate(module(maps), size=(48, 48), mode="bilinear", align_corners=False).softmax(1)
        full = stitched(scores, g["boxes"], tuple(g["resized"]), tuple(g["original"]))
        out.append(full[0].argmax(0).to(torch.uint8).numpy())
    return out


def test_injecting_the_uncompressed_tensors_gives_the_plain_forward_label_maps_bitwise(seg_run):
    task, manifest, folder = seg_run
    store = FeatureStore(folder / "features.zarr")
    scored = task.head_outputs(folder / "head.pt", (store.sample(i) for i in range(2)), store.attrs)
    for ours, plain in zip(scored, _plain_maps(task, manifest, store, folder / "head.pt"), strict=True):
        np.testing.assert_array_equal(ours, plain)
    assert [m.shape for m in scored] == [(512, 512), (400, 600)]
    assert task.head_kind == "transformers UperNet"


def test_a_perturbed_crop_tensor_changes_the_map_and_is_what_the_next_block_reads(seg_run):
    task, manifest, folder = seg_run
    store = FeatureStore(folder / "features.zarr")
    second = {**store.attrs, "geometry": store.attrs["geometry"][1:], "sources": store.attrs["sources"][1:]}
    sample = store.sample(1)
    noise = np.random.default_rng(0).normal(0, 3, sample["layer.1.1"].shape).astype(np.float32)
    sample["layer.1.1"] = sample["layer.1.1"] + noise  # not a constant: the final norm would remove it
    from lamofc_lib.tasks.lamofcbench.vision.dinov3 import load_dinov3

    net = load_dinov3(TINY, "cpu")
    read = []
    handle = net.model.layer[2].register_forward_pre_hook(lambda module, args: read.append(args[0].clone()))
    try:
        (changed,) = task.head_outputs(folder / "head.pt", [sample], second)
    finally:
        handle.remove()
    np.testing.assert_array_equal(read[0][1].numpy(), sample["layer.1.1"][0, 0])
    (plain,) = task.head_outputs(folder / "head.pt", [store.sample(1)], second)
    assert not np.array_equal(changed, plain)


def test_ade20k_lists_images_with_their_annotations_and_reduces_the_zero_label(tmp_path):
    (tmp_path / "images" / "validation").mkdir(parents=True)
    (tmp_path / "annotations" / "validation").mkdir(parents=True)
    for stem in ("ADE_val_00000002", "ADE_val_00000001"):
        Image.new("RGB", (8, 6)).save(tmp_path / "images" / "validation" / f"{stem}.jpg")
        label = np.array([[0, 1, 150, 7, 7, 7, 7, 7]] * 6, dtype=np.uint8)
        Image.fromarray(label).save(tmp_path / "annotations" / "validation" / f"{stem}.png")
    manifest = build_candidates({"kind": "ade20k", "root": str(tmp_path)})
    assert list(manifest["sample_id"]) == ["ADE_val_00000001", "ADE_val_00000002"]
    task = get_task("dinov3_ade20k")
    assert task.reference_stem("ADE_val_00000001") == "ADE_val_00000001-stackedpatches"
    assert task.ground_truth(manifest)[0][0].tolist() == [255, 0, 149, 6, 6, 6, 6, 6]
    (tmp_path / "list.txt").write_text("ADE_val_00000002\n")
    pinned = build_candidates({"kind": "ade20k", "root": str(tmp_path), "labels": str(tmp_path / "list.txt")})
    assert list(pinned["sample_id"]) == ["ADE_val_00000002"]


def test_an_image_needing_more_crops_than_slots_is_refused_naming_it(tmp_path):
    Image.new("RGB", (300, 100)).save(tmp_path / "strip.png")
    import pandas as pd

    manifest = pd.DataFrame({"sample_id": ["strip"], "source": [str(tmp_path / "strip.png")], "label": [""],
                             "text": [""]})  # fmt: skip
    with pytest.raises(ValueError, match=r"strip .* gives 4 crops, model.crops allows 3"):
        get_task("dinov3_ade20k").layout(manifest, TINY, SPLIT)


@pytest.mark.skipif(not os.environ.get("LAMOFC_DINOV3_REPO"), reason="needs a dinov3 clone (LAMOFC_DINOV3_REPO)")
def test_the_release_mask2former_segmentor_takes_the_decoded_tensors_in_its_backbone(tmp_path, monkeypatch):
    """With the user's clone, at a tiny size (the release's builders patched to a 4-block ViT): the segmentor's
    label maps with the uncompressed tensors put back equal its plain forward pass bitwise."""
    import functools
    import sys

    repo = os.environ["LAMOFC_DINOV3_REPO"]
    sys.path.insert(0, repo)
    try:
        import dinov3.hub.backbones as backbones
        import dinov3.hub.segmentors as segmentors
        from dinov3.models.vision_transformer import DinoVisionTransformer
    finally:
        sys.path.remove(repo)

    def tiny(pretrained=True, weights=None, check_hash=False):
        torch.manual_seed(0)
        net = DinoVisionTransformer(img_size=64, patch_size=16, embed_dim=64, depth=4, num_heads=4,
                                    n_storage_tokens=4, ffn_ratio=2)  # fmt: skip
        net.init_weights()
        return net

    monkeypatch.setattr(backbones, "dinov3_vit7b16", tiny)
    monkeypatch.setattr(segmentors, "dinov3_vit7b16", tiny)
    monkeypatch.setattr(segmentors, "dinov3_vit7b16_ms", functools.partial(segmentors.dinov3_vit7b16_ms, hidden_dim=64))
    torch.manual_seed(1)
    built = segmentors.build_segmentation_decoder(backbone_model=tiny(), decoder_type="m2f", hidden_dim=64,
                                                  autocast_dtype=torch.float32)  # fmt: skip
    torch.save({k: v for k, v in built.state_dict().items() if "backbone" not in k}, tmp_path / "m2f.pth")
    torch.save({}, tmp_path / "backbone.pth")
    # crops of 64 (the adapter's levels need a multiple of 32): coffee 400 x 600 -> 64 x 96, two crops
    model = {**TINY, "repository": repo, "backbone_weights": str(tmp_path / "backbone.pth"), "resolution": 64,
             "crop": 64, "stride": 40, "random_init": {**TINY["random_init"], "hidden_size": 64,
                                                       "num_attention_heads": 4}}  # fmt: skip
    task = get_task("dinov3_ade20k")
    manifest = build_candidates({"kind": "skimage", "images": ["coffee"]})
    task.extract(manifest, model, SPLIT, tmp_path / "features.zarr")
    task.write_head(model, SPLIT, {"checkpoint": str(tmp_path / "m2f.pth")}, tmp_path / "head.pt")
    store = FeatureStore(tmp_path / "features.zarr")
    (scored,) = task.head_outputs(tmp_path / "head.pt", [store.sample(0)], store.attrs)
    assert task.head_kind == "dinov3 Mask2Former"
    from lamofc_lib.tasks.lamofcbench.vision.segmentation import ReleaseSegmenter

    segmenter = ReleaseSegmenter(model, str(tmp_path / "m2f.pth"), "cpu")
    g = store.attrs["geometry"][0]
    assert len(g["boxes"]) == 2
    crops = crops_of(segmentation_input(load_image(manifest["source"][0]), 64), g["boxes"])
    with torch.no_grad():
        full = stitched(segmenter.scores(crops), g["boxes"], tuple(g["resized"]), tuple(g["original"]))
    np.testing.assert_array_equal(scored, full[0].argmax(0).to(torch.uint8).numpy())


def test_npy_folders_import_with_the_crops_an_image_has(seg_run, tmp_path):
    """features_from: a folder per image (`<stem>-stackedpatches/`) with `<tensor>.npy` for the crops it has,
    none for its absent slots; the imported store equals the extracted one."""
    from lamofc_lib.feature_files import import_features

    task, manifest, folder = seg_run
    store = FeatureStore(folder / "features.zarr")
    for i, sample_id in enumerate(manifest["sample_id"]):
        (tmp_path / "npy" / f"{sample_id}-stackedpatches").mkdir(parents=True)
        for name, x in store.sample(i).items():
            np.save(tmp_path / "npy" / f"{sample_id}-stackedpatches" / f"{name}.npy", x)
    import_features(task, tmp_path / "npy", manifest, TINY, SPLIT, tmp_path / "imported.zarr")
    imported = FeatureStore(tmp_path / "imported.zarr")
    assert imported.tensors == store.tensors
    for i in range(2):
        assert [imported.has(i, n) for n in store.tensors] == [store.has(i, n) for n in store.tensors]
        for name, x in store.sample(i).items():
            np.testing.assert_array_equal(imported.read(i, name), x)


@pytest.mark.parametrize("task_name", ["dinov3_ade20k", "dinov3_nyu"])
def test_a_release_head_checkpoint_without_the_clone_is_refused(task_name, tmp_path):
    """A head checkpoint is the release's head, whose code is in the dinov3 clone: without model.repository it
    would silently give way to the demo's seeded head."""
    (tmp_path / "head.pth").write_bytes(b"")
    with pytest.raises(ValueError, match="set model.repository"):
        get_task(task_name).write_head(TINY, SPLIT, {"checkpoint": str(tmp_path / "head.pth")}, tmp_path / "h.pt")


def test_an_image_shorter_than_the_crop_gives_windows_of_its_height():
    """Short side 40 below a crop of 48: coffee (40 x 60 after resizing) gives windows of 40 x 48, 1 + 4 + 2 x 3
    tokens, astronaut (40 x 40) one 40 x 40 window, 1 + 4 + 2 x 2 (DINOv3's slide inference on small images)."""
    import pandas as pd

    manifest = pd.DataFrame({"sample_id": ["a", "c"], "source": ["skimage:astronaut", "skimage:coffee"],
                             "label": ["", ""], "text": ["", ""]})  # fmt: skip
    layout = get_task("dinov3_ade20k").layout(manifest, {**TINY, "resolution": 40}, SPLIT)
    assert layout.attrs["geometry"][1]["boxes"] == [[0, 40, 0, 48], [0, 40, 12, 60]]
    assert layout.tensors["layer.0.0"].shapes == [(1, 1, 9, 32), (1, 1, 11, 32)]


@pytest.mark.parametrize("key", ["layer.{b}", "segmentation_model.0.backbone.blocks.{b}"])
def test_released_zst_files_import_with_the_crops_each_image_has(seg_run, tmp_path, key):
    """LaMoFCBench's files (`<image>-stackedpatches.zst`: torch.save of each level's crops as one B x T x D
    batch, zstd), written here as the reference writes them, with one crop for astronaut and two for coffee: the
    store equals the extracted one, the slots an image does not fill (coffee's third, astronaut's second and
    third) absent, under the coder's key names and the older ones."""
    import io

    import zstandard

    from lamofc_lib.feature_files import import_features

    task, manifest, folder = seg_run
    store = FeatureStore(folder / "features.zarr")
    (tmp_path / "zst").mkdir()
    for i, sample_id in enumerate(manifest["sample_id"]):
        levels = {}
        for b in range(4):
            crops = [
                torch.from_numpy(store.read(i, f"layer.{b}.{k}")[0]) for k in range(3) if store.has(i, f"layer.{b}.{k}")
            ]
            levels[key.format(b=b)] = torch.cat(crops)  # (crops, T, D)
        buffer = io.BytesIO()
        torch.save(levels, buffer)
        (tmp_path / "zst" / f"{sample_id}-stackedpatches.zst").write_bytes(
            zstandard.ZstdCompressor().compress(buffer.getvalue())
        )
    assert levels[key.format(b=0)].shape[0] == 2  # the last file's, coffee's: two crops
    import_features(task, tmp_path / "zst", manifest, TINY, SPLIT, tmp_path / "imported.zarr")
    imported = FeatureStore(tmp_path / "imported.zarr")
    assert imported.tensors == store.tensors
    assert [imported.has(0, f"layer.0.{k}") for k in range(3)] == [True, False, False]
    assert [imported.has(1, f"layer.0.{k}") for k in range(3)] == [True, True, False]
    for i in range(2):
        assert [imported.has(i, n) for n in store.tensors] == [store.has(i, n) for n in store.tensors]
        for name in store.tensors:
            assert imported.layout(name).shapes[i] == store.layout(name).shapes[i]
            np.testing.assert_array_equal(imported.read(i, name), store.read(i, name))
