"""seg and dpt tasks: heads built in the official checkpoint layouts, outputs on the uncompressed features,
ground truth and metrics, and checkpoint errors before the backbone loads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from lamofc_lib.sources import build_candidates
from lamofc_lib.sources.images import load_image
from lamofc_lib.store import FeatureStore
from lamofc_lib.tasks import get_task
from lamofc_lib.tasks.lamofc import heads
from lamofc_lib.tasks.lamofc.dinov2 import (
    load_dinov2,
    merge_flip_views,
    pad,
    resize,
    seg_geometry,
    stitch_windows,
    to_tensor,
)

REPO = Path(__file__).resolve().parents[1]
DEMO = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
MODEL = DEMO["tasks"]["cls"]["model"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dense")
    manifest = build_candidates({"kind": "skimage", "images": ["chelsea", "coffee"]})
    out = {}
    for name, split in (("seg", 4), ("dpt", [1, 2, 3, 4])):
        task = get_task(name)
        task.write_head(MODEL, split, {"seed": 0}, tmp / f"{name}.pt")
        task.extract(manifest, MODEL, split, tmp / f"{name}.zarr")
        store = FeatureStore(tmp / f"{name}.zarr")
        outputs = task.head_outputs(tmp / f"{name}.pt", [store.read(i) for i in range(len(store))], store.attrs)
        out[name] = (task, store, tmp / f"{name}.pt", outputs)
    return manifest, out


def test_seg_outputs_equal_the_head_on_the_models_own_normed_tokens(runs):
    manifest, out = runs
    task, store, head_file, outputs = out["seg"]
    net = load_dinov2(MODEL, "cpu")
    saved = torch.load(head_file, weights_only=True)["state"]
    image = load_image(manifest["source"][0])
    g = seg_geometry(*image.shape[:2])
    x = resize(to_tensor(image), tuple(g["resized"]))
    logits = []
    for (y1, y2, x1, x2), padding, (h, w) in zip(g["windows"], g["padding"], g["grid"], strict=True):
        with torch.no_grad():
            tokens = net(pixel_values=pad(x[..., y1:y2, x1:x2], tuple(padding))).last_hidden_state  # final norm
            maps = tokens[0, 1:].reshape(h, w, -1).permute(2, 0, 1)[None]
            maps = torch.nn.functional.batch_norm(
                maps, saved["bn.running_mean"], saved["bn.running_var"], saved["bn.weight"], saved["bn.bias"], eps=1e-5
            )
            crop = torch.nn.functional.conv2d(maps, saved["conv_seg.weight"], saved["conv_seg.bias"])
            logits.append(torch.nn.functional.interpolate(crop, size=(y2 - y1, x2 - x1), mode="bilinear")[0])
    full = stitch_windows(logits, [tuple(box) for box in g["windows"]], *g["resized"])
    full = torch.nn.functional.interpolate(full[None], size=image.shape[:2], mode="bilinear")[0]
    expected = full.argmax(0).numpy()
    assert outputs[0].shape == image.shape[:2]
    np.testing.assert_array_equal(outputs[0], expected)


def test_seg_miou_is_100_against_itself_and_falls_with_noise(runs):
    _, out = runs
    task, store, head_file, outputs = out["seg"]
    value, rows = task.compare(outputs, outputs)
    assert value == 100.0 and all(r["pixel_accuracy"] == 100.0 for r in rows)
    rng = np.random.default_rng(0)
    noisy = [store.read(i) + rng.normal(0, 3.0, store.shapes[i]).astype(np.float32) for i in range(len(store))]
    worse, _ = task.compare(task.head_outputs(head_file, noisy, store.attrs), outputs)
    assert worse < 100.0


def test_dpt_outputs_are_depth_maps_at_the_image_size_and_rmse_is_zero_against_itself(runs):
    manifest, out = runs
    task, store, head_file, outputs = out["dpt"]
    for depth, source in zip(outputs, manifest["source"], strict=True):
        assert depth.shape == load_image(source).shape[:2]
        assert depth.min() >= heads.MIN_DEPTH and depth.max() <= heads.MAX_DEPTH
    value, rows = task.compare(outputs, outputs)
    assert value == 0.0 and [r["rmse"] for r in rows] == [0.0, 0.0]
    assert not task.higher_is_better


def test_dpt_outputs_equal_the_head_on_a_fresh_forward_of_both_views(runs):
    manifest, out = runs
    task, store, head_file, outputs = out["dpt"]
    net = load_dinov2(MODEL, "cpu")
    head = task._load_head(head_file)
    image = load_image(manifest["source"][1])
    x = resize(to_tensor(image), (480, 640))
    views = []
    for view in (x, torch.flip(x, dims=[-1])):
        with torch.no_grad():
            hidden = net(pixel_values=pad(view, (5, 5, 2, 2)), output_hidden_states=True).hidden_states
        views.append(torch.stack([hidden[b][0] for b in (1, 2, 3, 4)]))
    with torch.no_grad():
        depth = merge_flip_views(head(torch.stack(views), (35, 46), (480, 640)), [False, True])
        depth = torch.nn.functional.interpolate(depth, size=image.shape[:2], mode="bilinear")
    np.testing.assert_array_equal(outputs[1], depth[0, 0].numpy())


def test_dpt_flip_view_is_merged_back(runs):
    # Swapping the two views' features gives the mirror image of the depth map.
    _, out = runs
    task, store, head_file, outputs = out["dpt"]
    swapped = [store.read(i)[::-1].copy() for i in range(len(store))]
    mirrored = task.head_outputs(head_file, swapped, store.attrs)
    np.testing.assert_allclose(mirrored[0], outputs[0][:, ::-1], rtol=1e-4, atol=1e-4)


def test_bad_seg_checkpoint_fails_before_the_backbone_loads(tmp_path, monkeypatch):
    bad = tmp_path / "head.pth"
    torch.save({"state_dict": {"decode_head.conv_seg.weight": torch.zeros(21, 7, 1, 1)}}, bad)
    task = get_task("seg")

    def no_backbone(*args, **kwargs):
        raise AssertionError("the backbone was loaded before the head checkpoint was checked")

    monkeypatch.setattr("lamofc_lib.tasks.lamofc.dinov2.load_dinov2", no_backbone)
    with pytest.raises(ValueError, match=f"head checkpoint {bad}"):
        task.write_head(MODEL, 4, {"checkpoint": str(bad)}, tmp_path / "h.pt")
    with pytest.raises(FileNotFoundError, match="head checkpoint .*missing.pth does not exist"):
        task.write_head(MODEL, 4, {"checkpoint": str(tmp_path / "missing.pth")}, tmp_path / "h.pt")
    assert not (tmp_path / "h.pt").exists()


def test_official_layout_seg_checkpoint_loads(tmp_path):
    ckpt = tmp_path / "dinov2_voc2012_linear_head.pth"
    torch.save({"meta": {"epoch": 1}, "state_dict": heads.random_state_dict("seg", 96, seed=3)}, ckpt)
    task = get_task("seg")
    task.write_head(MODEL, 4, {"checkpoint": str(ckpt)}, tmp_path / "h.pt")
    saved = torch.load(tmp_path / "h.pt", weights_only=True)
    expected = heads.random_state_dict("seg", 96, seed=3)["decode_head.conv_seg.weight"]
    assert torch.equal(saved["state"]["conv_seg.weight"], expected)
