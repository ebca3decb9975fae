"""Tests for lamofc_lib.sources: manifests of every source kind, images and ARC questions."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from lamofc_lib.sources import (
    COLUMNS,
    SourceError,
    arc_prompt,
    build_manifest,
    load_image,
    parse_arc_line,
    read_manifest,
)

# --- skimage ----------------------------------------------------------------------------------------------------


def test_skimage_manifest():
    table = build_manifest({"kind": "skimage", "images": ["astronaut", "camera"]}, 2)
    assert list(table.columns) == COLUMNS
    assert table["sample_id"].to_list() == ["astronaut", "camera"]
    assert table["source"].to_list() == ["skimage:astronaut", "skimage:camera"]
    assert table["label"].to_list() == ["", ""]
    assert table["text"].to_list() == ["", ""]


def test_skimage_manifest_takes_the_first_samples():
    table = build_manifest({"kind": "skimage", "images": ["coins", "astronaut", "camera"]}, 2)
    assert table["sample_id"].to_list() == ["coins", "astronaut"]
    assert list(table.index) == [0, 1]


def test_skimage_unknown_image():
    with pytest.raises(SourceError, match="no_such_picture"):
        build_manifest({"kind": "skimage", "images": ["astronaut", "no_such_picture"]}, 2)


def test_more_samples_than_the_source_has():
    with pytest.raises(SourceError, match=r"gives 2 samples.*asks for 3"):
        build_manifest({"kind": "skimage", "images": ["astronaut", "camera"]}, 3)


def test_unknown_source_kind():
    with pytest.raises(SourceError, match="coco"):
        build_manifest({"kind": "coco"}, 1)


def test_manifest_csv_round_trip(tmp_path):
    table = build_manifest({"kind": "skimage", "images": ["astronaut", "camera"]}, 2)
    path = tmp_path / "manifest.csv"
    table.to_csv(path, index=False)
    back = read_manifest(path)
    assert back.to_dict("records") == table.to_dict("records")
    assert back["label"].to_list() == ["", ""]


# --- load_image -------------------------------------------------------------------------------------------------


def test_load_image_rgb():
    import skimage.data

    image = load_image("skimage:astronaut")
    assert image.shape == (512, 512, 3)
    assert image.dtype == np.uint8
    np.testing.assert_array_equal(image, skimage.data.astronaut())


def test_load_image_gray_is_replicated():
    import skimage.data

    gray = skimage.data.camera()
    image = load_image("skimage:camera")
    assert gray.ndim == 2
    assert image.shape == (*gray.shape, 3)
    assert image.dtype == np.uint8
    for channel in range(3):
        np.testing.assert_array_equal(image[..., channel], gray)
    assert image.flags["C_CONTIGUOUS"]


def test_load_image_binary_becomes_0_and_255():
    import skimage.data

    mask = skimage.data.horse()
    assert mask.dtype == bool
    image = load_image("skimage:horse")
    assert image.shape == (*mask.shape, 3)
    assert image.dtype == np.uint8
    assert set(np.unique(image).tolist()) == {0, 255}
    np.testing.assert_array_equal(image[..., 1], np.where(mask, 255, 0))


def test_load_image_file(tmp_path):
    rgba = np.zeros((5, 7, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 255
    path = tmp_path / "x.png"
    Image.fromarray(rgba, "RGBA").save(path)
    image = load_image(str(path))
    assert image.shape == (5, 7, 3)
    assert image.dtype == np.uint8
    assert image[..., 0].min() == 200
    assert image[..., 1:].max() == 0


# --- ARC --------------------------------------------------------------------------------------------------------


def test_arc_demo_manifest():
    table = build_manifest({"kind": "arc_demo"}, 20)
    assert list(table.columns) == COLUMNS
    assert len(table) == 20
    assert table["sample_id"].is_unique
    lengths = table["text"].str.len().to_list()
    assert lengths == sorted(lengths, reverse=True)
    assert set(table["label"]) <= set("ABCD")
    assert all(s.startswith("lamofc_lib/data/arc_demo.jsonl:") for s in table["source"])
    for text in table["text"]:
        assert "Question: " in text
        for letter in "ABCD":
            assert f"\n{letter}. " in text
        assert text.endswith("is one of A, B, C or D.")


def test_arc_demo_first_rows_are_the_longest():
    all_rows = build_manifest({"kind": "arc_demo"}, 20)
    few = build_manifest({"kind": "arc_demo"}, 3)
    assert few.to_dict("records") == all_rows.iloc[:3].to_dict("records")
    with pytest.raises(SourceError):
        build_manifest({"kind": "arc_demo"}, 21)


def _hf(qid, stem, texts, answer, labels="ABCD"):
    return json.dumps(
        {"id": qid, "question": stem, "choices": {"text": list(texts), "label": list(labels)}, "answerKey": answer}
    )


def _original(qid, stem, texts, answer, labels="ABCD"):
    choices = [{"text": t, "label": label} for t, label in zip(texts, labels, strict=True)]
    return json.dumps({"id": qid, "question": {"stem": stem, "choices": choices}, "answerKey": answer})


@pytest.mark.parametrize("layout", [_hf, _original])
def test_arc_file(tmp_path, layout):
    lines = [
        layout("q-short", "Short?", ["a", "b", "c", "d"], "B"),
        "",
        layout("q-long", "A much longer question about science?", ["one", "two", "three", "four"], "D"),
        layout("q-digits", "Numbered labels are left out?", ["w", "x", "y", "z"], "2", labels="1234"),
        layout("q-three", "Three choices are left out?", ["x", "y", "z"], "A", labels="ABC"),
        layout("q-mid", "Medium length question?", ["e", "f", "g", "h"], "A"),
    ]
    path = tmp_path / "ARC-Challenge-Test.jsonl"
    path.write_text("\n".join(lines) + "\n")
    table = build_manifest({"kind": "arc", "path": str(path)}, 3)
    assert table["sample_id"].to_list() == ["q-long", "q-mid", "q-short"]
    assert table["label"].to_list() == ["D", "A", "B"]
    # The source names the file and its 1-based line (the blank line 2 counts).
    assert table["source"].to_list() == [f"{path}:3", f"{path}:6", f"{path}:1"]
    long = table["text"].iloc[0]
    assert "Question: A much longer question about science?" in long
    assert "\nA. one\nB. two\nC. three\nD. four\n" in long
    with pytest.raises(SourceError, match="gives 3 samples"):
        build_manifest({"kind": "arc", "path": str(path)}, 4)


def test_both_layouts_parse_the_same():
    texts = ["shark", "whale", "trout", "frog"]
    hf = parse_arc_line(_hf("x", "Which is a mammal?", texts, "B"), "f line 1")
    original = parse_arc_line(_original("x", "Which is a mammal?", texts, "B"), "f line 1")
    expected = {
        "id": "x",
        "stem": "Which is a mammal?",
        "choices": [("A", "shark"), ("B", "whale"), ("C", "trout"), ("D", "frog")],
        "answer": "B",
    }
    assert hf == expected
    assert original == expected
    prompt = arc_prompt(hf)
    assert prompt.splitlines()[1:6] == ["Question: Which is a mammal?", "A. shark", "B. whale", "C. trout", "D. frog"]


def test_arc_ties_keep_file_order(tmp_path):
    path = tmp_path / "arc.jsonl"
    path.write_text(
        "\n".join(_hf(f"q{i}", "Same length?", ["a", "b", "c", "d"], "A") for i in range(3)) + "\n",
    )
    table = build_manifest({"kind": "arc", "path": str(path)}, 3)
    assert table["sample_id"].to_list() == ["q0", "q1", "q2"]


@pytest.mark.parametrize(
    "bad",
    [
        "{not json",
        json.dumps({"id": "q", "question": "No choices?", "answerKey": "A"}),
        json.dumps({"question": "No id?", "choices": {"text": list("abcd"), "label": list("ABCD")}, "answerKey": "A"}),
        json.dumps(["a", "list"]),
        # Labels and texts of different lengths.
        json.dumps({"id": "q", "question": "?", "choices": {"text": ["a"], "label": list("ABCD")}, "answerKey": "A"}),
    ],
)
def test_arc_malformed_line_names_file_and_line(tmp_path, bad):
    path = tmp_path / "arc.jsonl"
    path.write_text(_hf("ok", "Fine?", ["a", "b", "c", "d"], "A") + "\n" + bad + "\n")
    with pytest.raises(SourceError) as info:
        build_manifest({"kind": "arc", "path": str(path)}, 1)
    assert f"{path} line 2" in str(info.value)


def test_arc_file_missing(tmp_path):
    missing = tmp_path / "none.jsonl"
    with pytest.raises(SourceError, match="none.jsonl"):
        build_manifest({"kind": "arc", "path": str(missing)}, 1)


# --- ImageNet ---------------------------------------------------------------------------------------------------


def _image(path, value, mode="RGB", size=(6, 4)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)


@pytest.fixture
def imagenet(tmp_path):
    root = tmp_path / "val"
    # Class folders in sorted order: n01 -> 0, n02 -> 1, n03 -> 2 (no images), n04 -> 3.
    _image(root / "n02" / "ILSVRC2012_val_00000009.JPEG", (0, 255, 0))
    _image(root / "n02" / "ILSVRC2012_val_00000003.JPEG", (0, 0, 255))
    _image(root / "n01" / "ILSVRC2012_val_00000005.png", 128, mode="L")
    (root / "n03").mkdir()
    (root / "n03" / "notes.txt").write_text("no images here")
    _image(root / "n04" / "b.jpg", (255, 0, 0))
    _image(root / "n04" / "a.PNG", (10, 20, 30))
    (root / "n04" / "0_readme.txt").write_text("not an image")
    (root / "LOC_val_solution.csv").write_text("a file at the top level is not a class\n")
    return root


def test_imagenet_one_image_per_class(imagenet):
    table = build_manifest({"kind": "imagenet", "root": str(imagenet)}, 3)
    assert list(table.columns) == COLUMNS
    assert table["sample_id"].to_list() == ["ILSVRC2012_val_00000005", "ILSVRC2012_val_00000003", "a"]
    assert table["label"].to_list() == ["0", "1", "3"]
    assert table["source"].to_list() == [
        str(imagenet / "n01" / "ILSVRC2012_val_00000005.png"),
        str(imagenet / "n02" / "ILSVRC2012_val_00000003.JPEG"),
        str(imagenet / "n04" / "a.PNG"),
    ]
    assert table["text"].to_list() == ["", "", ""]
    gray = load_image(table["source"].iloc[0])
    assert gray.shape == (4, 6, 3)
    assert gray.dtype == np.uint8
    assert (gray == 128).all()
    png = load_image(table["source"].iloc[2])
    assert png[0, 0].tolist() == [10, 20, 30]
    with pytest.raises(SourceError, match="gives 3 samples"):
        build_manifest({"kind": "imagenet", "root": str(imagenet)}, 4)


def test_imagenet_labels_file(imagenet, tmp_path):
    labels = tmp_path / "selection.txt"
    labels.write_text("n04/b.jpg 7\n\nn02/ILSVRC2012_val_00000009.JPEG 12\nn01/ILSVRC2012_val_00000005.png 0\n")
    table = build_manifest({"kind": "imagenet", "root": str(imagenet), "labels": str(labels)}, 3)
    assert table["sample_id"].to_list() == ["b", "ILSVRC2012_val_00000009", "ILSVRC2012_val_00000005"]
    assert table["label"].to_list() == ["7", "12", "0"]
    assert table["source"].to_list() == [
        str(imagenet / "n04" / "b.jpg"),
        str(imagenet / "n02" / "ILSVRC2012_val_00000009.JPEG"),
        str(imagenet / "n01" / "ILSVRC2012_val_00000005.png"),
    ]
    first = load_image(table["source"].iloc[0])
    assert first.shape == (4, 6, 3)
    # JPEG is lossy; pure red stays close to red.
    assert first[..., 0].min() > 200 and first[..., 1:].max() < 60
    assert len(build_manifest({"kind": "imagenet", "root": str(imagenet), "labels": str(labels)}, 2)) == 2


@pytest.mark.parametrize("line", ["n04/b.jpg", "n04/b.jpg seven"])
def test_imagenet_bad_labels_line(imagenet, tmp_path, line):
    labels = tmp_path / "selection.txt"
    labels.write_text(f"n01/ILSVRC2012_val_00000005.png 0\n{line}\n")
    with pytest.raises(SourceError) as info:
        build_manifest({"kind": "imagenet", "root": str(imagenet), "labels": str(labels)}, 1)
    assert f"{labels} line 2" in str(info.value)


def test_imagenet_missing_root(tmp_path):
    missing = tmp_path / "no-imagenet"
    with pytest.raises(SourceError, match="no-imagenet"):
        build_manifest({"kind": "imagenet", "root": str(missing)}, 1)
