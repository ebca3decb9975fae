"""Sample selection: each policy on small real inputs gives the documented result; lists and files override;
too small a pool fails naming the task and the counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skimage.data
import torch
import yaml
from PIL import Image

from lamofc_lib.selection import SelectionError, run_selection
from lamofc_lib.sources import build_candidates
from lamofc_lib.tasks import get_task
from lamofc_lib.tasks.lamofc.cls import image_transform
from lamofc_lib.tasks.lamofc.csr import CorrectLongest
from lamofc_lib.tasks.lamofc.dinov2 import load_dinov2

REPO = Path(__file__).resolve().parents[1]
DEMO = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())


def settings(samples: int, policy: str, source: dict | None = None, **extra) -> dict:
    return {"samples": samples, "selection": {"policy": policy, "list": None}, "source": source or {}, **extra}


# --- cls: first_correct with the demo DINOv2 and its seeded head -------------------------------------------------

IMAGES = ["astronaut", "coffee", "chelsea", "rocket", "camera", "coins"]


@pytest.fixture(scope="module")
def cls_pool(tmp_path_factory):
    """An ImageNet-style folder where the first image of some classes is the class the demo model predicts for
    it (correct) and of others is not: predictions computed here from the model's own final LayerNorm output."""
    tmp = tmp_path_factory.mktemp("imagenet")
    model, split = DEMO["tasks"]["cls"]["model"], DEMO["tasks"]["cls"]["split"]
    head = tmp / "head.pt"
    get_task("cls").write_head(model, split, {"seed": 1}, head)
    state = torch.load(head, weights_only=True)
    net = load_dinov2(model, "cpu")
    predicted = {}
    for name in IMAGES:
        image = getattr(skimage.data, name)()
        image = np.stack([image] * 3, -1) if image.ndim == 2 else image[..., :3]
        with torch.no_grad():
            x = net(pixel_values=image_transform()(image).unsqueeze(0)).last_hidden_state
            logits = torch.cat([x[:, 0], x[:, 1:].mean(1)], -1) @ state["linear.weight"].T + state["linear.bias"]
        predicted[name] = int(logits.argmax())
    root = tmp / "val"
    for index in range(1000):
        (root / f"n{index:04d}").mkdir(parents=True)
    placed = {}
    for i, name in enumerate(IMAGES):
        # Even positions go into the predicted class's folder (correct), odd ones into the next class (wrong).
        label = predicted[name] if i % 2 == 0 else (predicted[name] + 1) % 1000
        image = getattr(skimage.data, name)()
        Image.fromarray(image).save(root / f"n{label:04d}" / f"{i:02d}_{name}.png")
        placed[f"{i:02d}_{name}"] = label
    candidates = build_candidates({"kind": "imagenet", "root": str(root)})
    assert len(candidates) == len(IMAGES)  # every image is the first of its class folder
    stem_to_name = {f"{i:02d}_{n}": n for i, n in enumerate(IMAGES)}
    correct = [
        predicted[stem_to_name[sid]] == int(label)
        for sid, label in zip(candidates.sample_id, candidates.label, strict=True)
    ]
    return candidates, model, split, head, correct


def test_first_correct_keeps_the_correctly_classified_first_images_in_class_order(cls_pool):
    candidates, model, split, head, correct = cls_pool
    assert 1 <= sum(correct) < len(candidates)  # the pool holds both kinds
    samples = sum(correct) - 1 if sum(correct) > 1 else 1
    selection = run_selection("cls", candidates, settings(samples, "first_correct"), model, split, head)
    expected = [sid for sid, ok in zip(candidates.sample_id, correct, strict=True) if ok][:samples]
    assert list(selection.manifest.sample_id) == expected
    report = selection.report.set_index("sample_id")
    for sid, ok in zip(candidates.sample_id, correct, strict=True):
        if sid in expected:
            assert report.loc[sid, "kept"] and report.loc[sid, "reason"] == ""
        else:
            assert report.loc[sid, "reason"] == ("beyond samples" if ok else "incorrect")
    summary = selection.summary("cls", "first_correct")
    assert summary["kept"] == samples and summary["candidates"] == len(candidates)


def test_first_correct_pool_too_small_names_task_and_counts(cls_pool):
    candidates, model, split, head, correct = cls_pool
    with pytest.raises(
        SelectionError, match=rf"task cls: .*answering {sum(correct)} of {len(candidates)} .*asks for 99"
    ):
        run_selection("cls", candidates, settings(99, "first_correct"), model, split, head)


def test_a_sample_list_overrides_the_policy_without_running_the_model(cls_pool, tmp_path):
    candidates, *_ = cls_pool
    wanted = [candidates.sample_id[2], candidates.sample_id[0]]
    listing = tmp_path / "ids.txt"
    listing.write_text(f"# pinned\n{wanted[0]}\n\n  # a note\n{wanted[1]} extra columns are ignored\n")
    block = settings(2, "first_correct")
    block["selection"]["list"] = str(listing)
    selection = run_selection("cls", candidates, block, model=None, split=None, head=None)  # no model to run
    assert list(selection.manifest.sample_id) == wanted
    assert selection.report.kept.sum() == 2
    listing.write_text("not_a_sample\n")
    with pytest.raises(SelectionError, match="lists 1 sample ids the source does not have"):
        run_selection("cls", candidates, block)


# --- csr: correct_longest ---------------------------------------------------------------------------------------


def test_correct_longest_keeps_the_longest_correct_prompts_in_file_order():
    candidates = pd.DataFrame(
        {"sample_id": list("abcdef"), "source": "", "label": "A", "text": ["xx", "xxxxx", "x", "xxxx", "xxxxx", "xxx"]}
    )
    correct = [True, True, True, False, True, True]
    # Correct: a(2) b(5) c(1) e(5) f(3); the 3 longest: b, e (5, file order breaks the tie), then f (3).
    selection = CorrectLongest.select("csr", candidates, 3, {}, correct)
    assert list(selection.manifest.sample_id) == ["b", "e", "f"]
    assert dict(zip(selection.report.sample_id, selection.report.reason, strict=True)) == {
        "a": "shorter prompt", "b": "", "c": "shorter prompt", "d": "incorrect", "e": "", "f": "",
    }  # fmt: skip
    selection = CorrectLongest.select("csr", candidates, 1, {}, correct)
    assert list(selection.manifest.sample_id) == ["b"]


# --- seg: class_coverage on a synthetic VOC folder ---------------------------------------------------------------


def _voc(tmp_path, images):
    root = tmp_path / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True)
    for name, (width, height), classes in images:
        Image.new("RGB", (width, height)).save(root / "JPEGImages" / f"{name}.jpg")
        label = np.zeros((height, width), dtype=np.uint8)
        for j, c in enumerate(classes):
            label[j, :] = c
        label[-1, :] = 255
        Image.fromarray(label, mode="L").save(root / "SegmentationClass" / f"{name}.png")
    (root / "ImageSets/Segmentation/val.txt").write_text("\n".join(n for n, _, _ in images) + "\n")
    return {"kind": "voc2012", "root": str(root)}


def test_class_coverage_covers_every_class_first_then_fills_in_list_order(tmp_path):
    landscape, square = (500, 375), (500, 500)  # 2 sliding windows; 1 window
    images = [
        ("i0", landscape, list(range(1, 11))),
        ("i1", landscape, [2]),                   # adds nothing new
        ("i2", square, list(range(11, 21))),      # one window: skipped whatever it holds
        ("i3", landscape, [1, *range(11, 16)]),   # adds 11-15
        ("i4", landscape, list(range(16, 21))),   # adds 16-20
        ("i5", landscape, [1]),
        ("i6", landscape, [2]),
    ]  # fmt: skip
    source = _voc(tmp_path / "all", images)
    candidates = build_candidates(source)
    # Coverage pass keeps i0, i3, i4 (all 20 object classes); filling to 5 adds i1 and i5.
    selection = run_selection("seg", candidates, settings(5, "class_coverage", source))
    assert list(selection.manifest.sample_id) == ["i0", "i1", "i3", "i4", "i5"]
    reasons = dict(zip(selection.report.sample_id, selection.report.reason, strict=True))
    assert reasons["i2"] == "1 sliding window(s), not 2"
    assert reasons["i6"] == "beyond samples"
    with pytest.raises(SelectionError, match=r"covering the 20 object classes .* takes 3 images .* asks for 2"):
        run_selection("seg", candidates, settings(2, "class_coverage", source))
    with pytest.raises(SelectionError, match=r"task seg: the 6 candidates with 2 sliding windows gives 6 .*asks for 7"):
        run_selection("seg", candidates, settings(7, "class_coverage", source))
    # Without i4, classes 16-20 are only in the square image: no selection can cover all 20.
    source = _voc(tmp_path / "some", [im for im in images if im[0] != "i4"])
    with pytest.raises(SelectionError, match=r"no usable candidate holds object classes \[16, 17, 18, 19, 20\]"):
        run_selection("seg", build_candidates(source), settings(4, "class_coverage", source))


# --- dpt: scene_quota on a synthetic NYU split -------------------------------------------------------------------


def test_scene_quota_gives_3_to_8_per_scene_evenly_spread(tmp_path):
    lines = []
    for scene, count in (("kitchen", 10), ("bathroom", 2), ("office", 5)):
        (tmp_path / scene).mkdir()
        for k in range(count):
            for stem in (f"rgb_{k:05d}.jpg", f"sync_depth_{k:05d}.png"):
                (tmp_path / scene / stem).write_bytes(b"")
            lines.append(f"/{scene}/rgb_{k:05d}.jpg /{scene}/sync_depth_{k:05d}.png 518.8579")
    split = tmp_path / "split.txt"
    split.write_text("\n".join(lines) + "\n")
    source = {"kind": "nyu_depth_v2", "root": str(tmp_path), "labels": str(split)}
    candidates = build_candidates(source)
    # Quotas: kitchen 3, bathroom 2 (all it has), office 3 = 8; the 9th goes to kitchen (first in turn).
    # kitchen, 4 of 10: floor((j + 0.5) * 10 / 4) = 1, 3, 6, 8; office, 3 of 5: 0, 2, 4.
    selection = run_selection("dpt", candidates, settings(9, "scene_quota", source))
    expected = [f"kitchen_rgb_{k:05d}" for k in (1, 3, 6, 8)] + [f"bathroom_rgb_{k:05d}" for k in (0, 1)]
    expected += [f"office_rgb_{k:05d}" for k in (0, 2, 4)]
    assert list(selection.manifest.sample_id) == expected
    summary = selection.summary("dpt", "scene_quota")
    assert summary["skipped_by_reason"] == {"scene quota": 8}
    assert summary["images_per_scene"] == {"kitchen": 4, "bathroom": 2, "office": 3}
    assert summary["scenes_below_minimum"] == {"bathroom": 2}  # it has only 2: reported
    # 3 scenes x at most 8 (bathroom only 2): 18 at most.
    with pytest.raises(SelectionError, match=r"at most 8 images per scene over 3 categories give 15"):
        run_selection("dpt", candidates, settings(16, "scene_quota", source))
    with pytest.raises(SelectionError, match=r"3 scene categories need 8 images at 3 each, .* asks for 7"):
        run_selection("dpt", candidates, settings(7, "scene_quota", source))


def test_first_takes_the_first_samples_and_reports_the_rest():
    candidates = build_candidates({"kind": "skimage", "images": ["coins", "astronaut", "camera"]})
    selection = run_selection("tti", candidates, settings(2, "first"))
    assert list(selection.manifest.sample_id) == ["coins", "astronaut"]
    assert selection.summary("tti", "first")["skipped_by_reason"] == {"beyond samples": 1}
    with pytest.raises(SelectionError, match=r"task tti: the source's 3 candidates gives 3 samples, .* asks for 4"):
        run_selection("tti", candidates, settings(4, "first"))
