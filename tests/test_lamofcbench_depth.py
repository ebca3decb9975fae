"""LaMoFCBench's depth scenario (dinov3_nyu) on a tiny DINOv3 with seeded weights: the eight split tensors (four
blocks, the image and its flip) as the reference shapes them, scoring with the decoded tensors in the place of
the levels the head reads (checked against transformers' own hidden states of a plain forward pass), and the
alignment and ten metrics against hand computations."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lamofc_lib.metrics.depth import DEPTH_METRICS, align_least_squares, benchmark_valid_mask, depth_metrics
from lamofc_lib.sources import build_candidates
from lamofc_lib.store import FeatureStore
from lamofc_lib.tasks import get_task
from lamofc_lib.tasks.lamofcbench.vision.depth import DepthModel, depth_input

TINY = {
    "random_init": {"seed": 0, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 4,
                    "num_attention_heads": 2, "patch_size": 16, "num_register_tokens": 4, "image_size": 64,
                    "initializer_range": 0.2},
    "resolution": 40,   # astronaut 512 x 512 -> 40 x 40, padded to 48 x 48; coffee 400 x 600 -> 40 x 60 -> 48 x 64
}  # fmt: skip
SPLIT = [1, 2, 3, 4]


@pytest.fixture(scope="module")
def depth_run(tmp_path_factory):
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("dinov3_depth")
    manifest = build_candidates({"kind": "skimage", "images": ["astronaut", "coffee"]})
    task = get_task("dinov3_nyu")
    task.extract(manifest, TINY, SPLIT, folder / "features.zarr")
    task.write_head(TINY, SPLIT, {"seed": 3}, folder / "head.pt")
    return task, manifest, folder


def _plain_depths(task, manifest, head):
    """Each image's depth from one plain forward pass: transformers' hidden states (index b + 1 is block b's
    output), the saved head on them."""
    from lamofc_lib.tasks.lamofcbench.vision.depth import merged_depth
    from lamofc_lib.tasks.lamofcbench.vision.dinov3 import load_dinov3

    net = load_dinov3(TINY, "cpu")
    model = DepthModel(torch.load(head, weights_only=True), "cpu")
    out = []
    for source in manifest["source"]:
        from lamofc_lib.sources.images import load_image

        image = load_image(source)
        pixels = depth_input(image, TINY["resolution"], 16)
        with torch.no_grad():
            hidden = net(pixel_values=pixels, output_hidden_states=True).hidden_states
            depth = model.head_forward([hidden[b + 1] for b in range(4)], *pixels.shape[-2:])
        out.append(merged_depth(depth, image.shape[:2]))
    return out


def test_the_split_tensors_are_each_views_block_outputs_as_the_reference_names_them(depth_run):
    task, manifest, folder = depth_run
    store = FeatureStore(folder / "features.zarr")
    assert sorted(store.tensors) == sorted(f"layer.{b}.{v}" for b in range(4) for v in (0, 1))
    # 1 class token + 4 registers + the patches of the padded input: 3 x 3 and 3 x 4
    assert [store.layout("layer.0.0").shapes[i] for i in (0, 1)] == [(1, 1, 14, 32), (1, 1, 17, 32)]
    from lamofc_lib.tasks.lamofcbench.vision.dinov3 import load_dinov3

    net = load_dinov3(TINY, "cpu")
    pixels = depth_input(np.asarray(Image.open(_skimage_file("coffee.png")).convert("RGB")), 40, 16)
    assert pixels.shape == (2, 3, 48, 64)
    # the flip, then zero rows 4 above and 4 below the 40 x 60 picture, 2 columns either side
    assert torch.equal(pixels[1], pixels[0].flip(-1))
    assert not pixels[:, :, :4].any() and not pixels[:, :, 44:].any() and not pixels[..., :2].any()
    assert pixels[:, :, 4:44, 2:62].abs().min() > 0 or pixels[:, :, 4:44, 2:62].any()
    with torch.no_grad():
        hidden = net(pixel_values=pixels, output_hidden_states=True).hidden_states
    for b in range(4):
        for view in (0, 1):
            np.testing.assert_array_equal(store.read(1, f"layer.{b}.{view}")[0, 0], hidden[b + 1][view].numpy())


def _skimage_file(name: str) -> Path:
    import skimage.data

    return Path(skimage.data.__file__).parent / name


def test_injecting_the_uncompressed_tensors_gives_the_plain_forward_depths_bitwise(depth_run):
    task, manifest, folder = depth_run
    store = FeatureStore(folder / "features.zarr")
    scored = task.head_outputs(folder / "head.pt", (store.sample(i) for i in range(2)), store.attrs)
    plain = _plain_depths(task, manifest, folder / "head.pt")
    for a, b in zip(scored, plain, strict=True):
        assert a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    assert [d.shape for d in scored] == [(512, 512), (400, 600)]


def test_a_perturbed_tensor_changes_the_depth_and_is_what_the_head_reads(depth_run):
    task, manifest, folder = depth_run
    store = FeatureStore(folder / "features.zarr")
    sample = store.sample(0)
    first = {**store.attrs, "geometry": store.attrs["geometry"][:1]}
    sample["layer.2.1"] = sample["layer.2.1"] + np.float32(0.5)
    read = []
    original = DepthModel.head_forward

    def spy(self, levels, height, width):
        read.append([x.clone() for x in levels])
        return original(self, levels, height, width)

    DepthModel.head_forward = spy
    try:
        (changed,) = task.head_outputs(folder / "head.pt", [sample], first)
    finally:
        DepthModel.head_forward = original
    np.testing.assert_array_equal(read[0][2][1].numpy(), sample["layer.2.1"][0, 0])
    (plain,) = task.head_outputs(folder / "head.pt", [store.sample(0)], first)
    assert not np.array_equal(changed, plain)


def test_alignment_is_the_least_squares_line_through_the_valid_pixels():
    rng = np.random.default_rng(0)
    prediction = rng.uniform(1, 5, (6, 8))
    target = 2.5 * prediction - 0.7 + rng.normal(0, 0.05, (6, 8))
    valid = rng.random((6, 8)) > 0.3
    aligned, scale, shift = align_least_squares(prediction, target, valid)
    # the normal equations of the fit, by hand
    p, t = prediction[valid], target[valid]
    n, sp, st, spp, spt = p.size, p.sum(), t.sum(), (p * p).sum(), (p * t).sum()
    hand_scale = (n * spt - sp * st) / (n * spp - sp**2)
    hand_shift = (st - hand_scale * sp) / n
    assert scale == pytest.approx(hand_scale, rel=1e-12) and shift == pytest.approx(hand_shift, rel=1e-10)
    np.testing.assert_allclose(aligned, prediction * hand_scale + hand_shift, rtol=1e-12)


def test_the_ten_metrics_equal_their_formulas_on_a_small_map():
    target = np.array([[1.0, 2.0], [4.0, 8.0]])
    prediction = np.array([[1.2, 2.0], [3.0, 16.0]])
    valid = np.array([[True, True], [True, False]])
    got = depth_metrics(prediction, target, valid)
    assert list(got) == list(DEPTH_METRICS)
    # the valid pixels: t = 1, 2, 4 and p = 1.2, 2, 3
    # ratios max(t/p, p/t): 1.2, 1, 4/3 -> a1 counts 1.2 and 1; a2 all three
    assert got["a1"] == pytest.approx(2 / 3) and got["a2"] == 1.0 and got["a3"] == 1.0
    assert got["abs_rel"] == pytest.approx((0.2 / 1 + 0 + 1 / 4) / 3)
    assert got["sq_rel"] == pytest.approx((0.04 / 1 + 0 + 1 / 4) / 3)
    assert got["rmse"] == pytest.approx(math.sqrt((0.04 + 0 + 1) / 3))
    assert got["mae"] == pytest.approx((0.2 + 0 + 1) / 3)
    d = [math.log(1 / 1.2), 0.0, math.log(4 / 3)]
    assert got["rmse_log"] == pytest.approx(math.sqrt(sum(x * x for x in d) / 3))
    assert got["silog"] == pytest.approx(100 * math.sqrt(sum(x * x for x in d) / 3 - (sum(d) / 3) ** 2))
    assert got["log_10"] == pytest.approx(sum(abs(x) / math.log(10) for x in d) / 3)


def test_valid_pixels_are_inside_the_limits_and_the_truncated_eigen_crop():
    target = np.full((480, 640), 5.0)
    target[100, 100], target[101, 101], target[200, 200] = 10.0, 0.001, 9.99
    valid = benchmark_valid_mask(target)
    assert valid.sum() == (471 - 45) * (601 - 41) - 2
    small = benchmark_valid_mask(np.full((100, 100), 5.0))
    rows, cols = np.nonzero(small)
    # int(45 / 480 * 100) = 9, int(471 / 480 * 100) = 98, int(41 / 640 * 100) = 6, int(601 / 640 * 100) = 93
    assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == (9, 98, 6, 93)


def test_the_headline_is_the_nanmean_of_the_images_rmse(depth_run):
    task, _, _ = depth_run
    rng = np.random.default_rng(1)
    references = [rng.uniform(1, 9, (48, 64)) for _ in range(3)]
    outputs = [r * 0.5 + rng.normal(0, 0.3, r.shape) for r in references]
    metric, rows = task.compare(outputs, references)
    by_hand = []
    for o, r in zip(outputs, references, strict=True):
        valid = benchmark_valid_mask(r)
        design = np.stack([o[valid], np.ones(valid.sum())], 1)
        coef = np.linalg.lstsq(design, r[valid], rcond=None)[0]
        by_hand.append(np.sqrt(np.mean((design @ coef - r[valid]) ** 2)))
    assert metric == pytest.approx(np.mean(by_hand), rel=1e-9)
    assert [row["rmse"] for row in rows] == pytest.approx(by_hand, rel=1e-9)


def test_nyu_scene_folders_list_the_references_sample_ids_and_their_ground_truth(tmp_path):
    for scene, n in (("kitchen", 2), ("bathroom", 1)):
        (tmp_path / scene).mkdir()
        for i in range(n):
            Image.new("RGB", (8, 6)).save(tmp_path / scene / f"rgb_{i:05d}.jpg")
            Image.fromarray(np.full((6, 8), 1500, np.uint16)).save(tmp_path / scene / f"sync_depth_{i:05d}.png")
    manifest = build_candidates({"kind": "nyu_scenes", "root": str(tmp_path)})
    assert list(manifest["sample_id"]) == ["bathroom-rgb_00000", "kitchen-rgb_00000", "kitchen-rgb_00001"]
    task = get_task("dinov3_nyu")
    assert task.reference_stem("kitchen-rgb_00001") == "kitchen-rgb_00001-wflip"
    assert task.ground_truth(manifest)[0] == pytest.approx(np.full((6, 8), 1.5))
    (tmp_path / "list.txt").write_text("kitchen/rgb_00001.jpg\n")
    pinned = build_candidates({"kind": "nyu_scenes", "root": str(tmp_path), "labels": str(tmp_path / "list.txt")})
    assert list(pinned["sample_id"]) == ["kitchen-rgb_00001"]


@pytest.mark.skipif(not os.environ.get("LAMOFC_DINOV3_REPO"), reason="needs a dinov3 clone (LAMOFC_DINOV3_REPO)")
def test_the_release_dpt_head_from_a_dinov3_clone_scores_the_same_tensors(depth_run, tmp_path):
    """With the user's clone: the release's DPTHead (random weights saved in its own layout) on the stored levels
    reproduces, bitwise, the clone's decoder run on the hidden states of a plain forward pass."""
    from lamofc_lib.tasks.lamofcbench.vision.depth import release_head

    task, manifest, folder = depth_run
    repo = os.environ["LAMOFC_DINOV3_REPO"]
    model = {**TINY, "repository": repo}
    torch.manual_seed(5)
    torch.save(release_head(repo, 32, 4)["decoder"].state_dict(), tmp_path / "dpt.pth")
    task.write_head(model, SPLIT, {"checkpoint": str(tmp_path / "dpt.pth")}, tmp_path / "head.pt")
    store = FeatureStore(folder / "features.zarr")
    scored = task.head_outputs(tmp_path / "head.pt", (store.sample(i) for i in range(2)), store.attrs)
    assert task.head_kind == "dinov3 DPTHead"
    plain = _plain_depths(task, manifest, tmp_path / "head.pt")
    for a, b in zip(scored, plain, strict=True):
        np.testing.assert_array_equal(a, b)
