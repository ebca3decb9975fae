"""Geometry and extraction of the dense DINOv2 tasks (seg windows, dpt views) and their data readers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from lamofc_lib.sources import SourceError, build_candidates
from lamofc_lib.sources.images import load_depth, load_label_map
from lamofc_lib.store import FeatureStore
from lamofc_lib.tasks.lamofc.dinov2 import center_padding, dpt_geometry, rescale_shape, seg_geometry, slide_windows
from lamofc_lib.tasks.lamofc.dpt import DepthTask
from lamofc_lib.tasks.lamofc.seg import SegmentationTask

REPO = Path(__file__).resolve().parents[1]


def test_voc_image_gives_two_windows_of_1370_tokens():
    # 500 x 375 (w x h): scale min(2048/500, 512/375) = 1.3653 -> 683 x 512; windows at x = 0 and 683 - 512.
    g = seg_geometry(375, 500)
    assert g["resized"] == [512, 683]
    assert g["windows"] == [[0, 512, 0, 512], [0, 512, 171, 683]]  # (y1, y2, x1, x2)
    assert g["padding"] == [[3, 3, 3, 3]] * 2
    assert g["grid"] == [[37, 37]] * 2  # 1 + 37 * 37 = 1370 tokens


def test_nyu_views_are_padded_to_490_by_644():
    g = dpt_geometry(480, 640)
    assert g["padding"] == [[5, 5, 2, 2]] * 2
    assert g["grid"] == [[35, 46]] * 2  # 1 + 35 * 46 = 1611 tokens
    # model.resolution (the demo's 240 x 320): 252 x 322 (18 and 23 patches) after padding 6 + 6 rows, 1 + 1 columns
    small = dpt_geometry(480, 640, size=(240, 320))
    assert small["resized"] == [240, 320] and small["original"] == [480, 640]
    assert small["padding"] == [[6, 6, 1, 1]] * 2
    assert small["grid"] == [[18, 23]] * 2


def test_rescale_and_windows_by_hand():
    assert rescale_shape(512, 512) == (512, 512)
    assert rescale_shape(100, 1000) == (205, 2048)  # the long edge limit binds: 2048 / 1000
    assert slide_windows(512, 512) == [(0, 512, 0, 512)]
    assert slide_windows(512, 1200) == [(0, 512, 0, 512), (0, 512, 341, 853), (0, 512, 682, 1194), (0, 512, 688, 1200)]
    assert center_padding(512, 512) == (3, 3, 3, 3)
    assert center_padding(5, 13, 14) == (4, 5, 0, 1)


def test_dense_extraction_shapes_and_geometry_attrs(tmp_path):
    model = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())["tasks"]["cls"]["model"]
    manifest = build_candidates({"kind": "skimage", "images": ["astronaut", "chelsea"]})
    seg, dpt = SegmentationTask(), DepthTask()
    # The layout needs no weights and gives the shapes the extraction then writes.
    layout = seg.layout(manifest, model, 4)
    seg.extract(manifest, model, 4, tmp_path / "seg.zarr")
    dpt.extract(manifest, model, [1, 2, 3, 4], tmp_path / "dpt.zarr")
    seg_store, dpt_store = FeatureStore(tmp_path / "seg.zarr"), FeatureStore(tmp_path / "dpt.zarr")
    # astronaut 512 x 512 -> one window; chelsea 300 x 451 -> 512 x 770 -> two windows.
    assert seg_store.shapes == [(1, 1, 1370, 96), (2, 1, 1370, 96)] == [tuple(s) for s in layout.shapes]
    assert dpt_store.shapes == [(2, 4, 1611, 96)] * 2
    assert seg_store.attrs["geometry"][1]["resized"] == [512, 770]
    assert dpt_store.attrs["split"]["blocks"] == [1, 2, 3, 4]
    # The flipped view is a different input, so its features differ from the first view's.
    assert not np.allclose(dpt_store.read(0)[0], dpt_store.read(0)[1])
    with pytest.raises(ValueError, match=r"blocks \[5\] are not all inside the model's 1\.\.4"):
        seg.layout(manifest, model, 5)


def test_voc_reader_lists_images_and_label_maps(tmp_path):
    root = tmp_path / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True)
    for name in ("2007_000033", "2007_000042"):
        Image.new("RGB", (5, 4)).save(root / "JPEGImages" / f"{name}.jpg")
        label = Image.fromarray(np.array([[0, 1, 255, 20, 0]] * 4, dtype=np.uint8), mode="P")
        label.putpalette(np.repeat(np.arange(256, dtype=np.uint8), 3).tolist())  # a full palette, like VOC's
        label.save(root / "SegmentationClass" / f"{name}.png")
    (root / "ImageSets/Segmentation/val.txt").write_text("2007_000033\n2007_000042\n")
    table = build_candidates({"kind": "voc2012", "root": str(root)})
    assert list(table.sample_id) == ["2007_000033", "2007_000042"]
    assert load_label_map(table.label[0])[0].tolist() == [0, 1, 255, 20, 0]
    (root / "JPEGImages" / "2007_000042.jpg").unlink()
    with pytest.raises(SourceError, match="2007_000042.jpg does not exist"):
        build_candidates({"kind": "voc2012", "root": str(root)})


def test_nyu_reader_uses_the_split_file_and_depth_in_metres(tmp_path, caplog):
    (tmp_path / "bathroom").mkdir()
    Image.new("RGB", (6, 4)).save(tmp_path / "bathroom" / "rgb_00045.jpg")
    Image.fromarray(np.full((4, 6), 2500, dtype=np.uint16)).save(tmp_path / "bathroom" / "sync_depth_00045.png")
    Image.new("RGB", (6, 4)).save(tmp_path / "bathroom" / "rgb_00046.jpg")  # no ground truth: skipped
    split = tmp_path / "split.txt"
    split.write_text(
        "/bathroom/rgb_00045.jpg /bathroom/sync_depth_00045.png 518.8579\n"
        "/bathroom/rgb_00046.jpg /bathroom/sync_depth_00046.png 518.8579\n"
    )
    table = build_candidates({"kind": "nyu_depth_v2", "root": str(tmp_path), "labels": str(split)})
    assert list(table.sample_id) == ["bathroom_rgb_00045"]
    assert "line 2: no ground truth" in caplog.text and "rgb_00046.jpg is not a candidate" in caplog.text
    assert float(load_depth(table.label[0])[0, 0]) == pytest.approx(2.5)
