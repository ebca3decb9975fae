"""Tests for lamofc_lib.sources: manifests of every source kind, images and ARC questions (their csr prompts:
lamofc_lib.tasks.lamofc.csr_prompt)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from lamofc_lib.sources import SourceError, build_candidates, read_manifest
from lamofc_lib.sources.arc import _arc_demo, _arc_file, parse_arc_line
from lamofc_lib.sources.images import load_image
from lamofc_lib.tasks.lamofc.csr_prompt import arc_prompt

# The manifest's columns, written out (not taken from sources.manifest.COLUMNS).
MANIFEST_COLUMNS = ["sample_id", "source", "label", "text"]

# --- skimage ----------------------------------------------------------------------------------------------------


def test_skimage_candidates():
    table = build_candidates({"kind": "skimage", "images": ["astronaut", "camera"]})
    assert list(table.columns) == MANIFEST_COLUMNS
    assert table["sample_id"].to_list() == ["astronaut", "camera"]
    assert table["source"].to_list() == ["skimage:astronaut", "skimage:camera"]
    assert table["label"].to_list() == ["", ""]
    assert table["text"].to_list() == ["", ""]


def test_skimage_candidates_keep_the_configured_order():
    table = build_candidates({"kind": "skimage", "images": ["coins", "astronaut", "camera"]})
    assert table["sample_id"].to_list() == ["coins", "astronaut", "camera"]
    assert list(table.index) == [0, 1, 2]


def test_duplicate_sample_ids_are_refused():
    with pytest.raises(SourceError, match=r"duplicate sample ids \['camera'\]"):
        build_candidates({"kind": "skimage", "images": ["camera", "astronaut", "camera"]})


def test_skimage_unknown_image():
    with pytest.raises(SourceError, match="no_such_picture"):
        build_candidates({"kind": "skimage", "images": ["astronaut", "no_such_picture"]})


def test_unknown_source_kind():
    with pytest.raises(SourceError, match="coco"):
        build_candidates({"kind": "coco"})


def test_manifest_csv_round_trip(tmp_path):
    table = build_candidates({"kind": "skimage", "images": ["astronaut", "camera"]})
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

# The reference's prompt, written out (FACTS.md / machines/llama3/llama3.py), for the expected strings below.
BEGIN = (
    "<|start_header_id|>user<|end_header_id|>\n\nGiven the following question and four candidate answers "
    "(A, B, C and D), choose the best answer.\n"
)
END = (
    'Your response should end with "The best answer is [the_answer_letter]" where the [the_answer_letter] is one '
    "of A, B, C or D.<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nThe best answer is"
)


def _hf(qid, stem, texts, answer, labels="ABCD"):
    return json.dumps(
        {"id": qid, "question": stem, "choices": {"text": list(texts), "label": list(labels)}, "answerKey": answer}
    )


def _original(qid, stem, texts, answer, labels="ABCD"):
    choices = [{"text": t, "label": label} for t, label in zip(texts, labels, strict=True)]
    return json.dumps({"id": qid, "question": {"stem": stem, "choices": choices}, "answerKey": answer})


def test_arc_prompt_of_a_four_choice_question():
    q = parse_arc_line(_original("x", "Which is a mammal?", ["shark", "whale", "trout", "frog"], "B"), "f line 1")
    assert arc_prompt(q) == (
        "<|start_header_id|>user<|end_header_id|>\n\n"
        "Given the following question and four candidate answers (A, B, C and D), choose the best answer.\n"
        "Question: Which is a mammal?\n"
        "A: shark\n"
        "B: whale\n"
        "C: trout\n"
        "D: frog\n"
        'Your response should end with "The best answer is [the_answer_letter]" where the [the_answer_letter] is '
        "one of A, B, C or D.<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
        "The best answer is"
    )


def test_arc_prompt_of_a_three_choice_question_repeats_the_c_line():
    # The reference's loop appends the last option line again for the empty slot D.
    q = parse_arc_line(_original("x", "Pick one.", ["red", "green", "blue"], "C", labels="ABC"), "f line 1")
    assert q["letter"] == "C"
    assert arc_prompt(q) == BEGIN + "Question: Pick one.\nA: red\nB: green\nC: blue\nC: blue\n" + END


def test_arc_prompt_of_a_numerically_labelled_question_uses_letters_by_position():
    q = parse_arc_line(_hf("x", "How many legs has a spider?", ["4", "6", "8", "10"], "3", labels="1234"), "f")
    assert (q["answer"], q["letter"]) == ("3", "C")
    assert arc_prompt(q) == BEGIN + "Question: How many legs has a spider?\nA: 4\nB: 6\nC: 8\nD: 10\n" + END


def test_arc_prompt_of_a_five_choice_question_drops_the_fifth():
    q = parse_arc_line(_original("x", "Q?", ["a", "b", "c", "d", "e"], "E", labels="ABCDE"), "f line 1")
    # The answer keeps its positional letter E, which the prompt never offers (the reference counts it wrong
    # unless the model says E).
    assert q["letter"] == "E"
    assert arc_prompt(q) == BEGIN + "Question: Q?\nA: a\nB: b\nC: c\nD: d\n" + END


def test_arc_prompt_of_a_two_choice_question():
    q = parse_arc_line(_hf("x", "Yes or no?", ["yes", "no"], "2", labels="12"), "f line 1")
    assert q["letter"] == "B"
    assert arc_prompt(q) == BEGIN + "Question: Yes or no?\nA: yes\nB: no\nB: no\nB: no\n" + END


def test_arc_demo_candidates_are_every_question_in_file_order():
    from importlib import resources

    files = [("arc_demo.jsonl", {"kind": "arc_demo"}), ("arc_demo_train.jsonl", {"kind": "arc_demo", "set": "train"})]
    for name, source in files:
        text = resources.files("lamofc_lib").joinpath(f"data/{name}").read_text()
        items = [json.loads(line) for line in text.splitlines()]
        table = _arc_demo(source)
        assert list(table.columns) == MANIFEST_COLUMNS
        assert table["sample_id"].to_list() == [item["id"] for item in items]
        assert table["label"].to_list() == ["ABCD"[item["choices"]["label"].index(item["answerKey"])] for item in items]
        assert table["source"].to_list() == [f"lamofc_lib/data/{name}:{n}" for n in range(1, len(items) + 1)]
        for text, item in zip(table["text"], items, strict=True):
            choices = "".join(f"{letter}: {t}\n" for letter, t in zip("ABCD", item["choices"]["text"], strict=True))
            assert text == BEGIN + f"Question: {item['question']}\n" + choices + END
    assert len(_arc_demo({"kind": "arc_demo"})) == 20
    assert len(_arc_demo({"kind": "arc_demo", "set": "train"})) == 12


@pytest.mark.parametrize("layout", [_hf, _original])
def test_arc_file(tmp_path, layout):
    lines = [
        layout("q-short", "Short?", ["a", "b", "c", "d"], "B"),
        "",
        layout("q-long", "A much longer question about science?", ["one", "two", "three", "four"], "D"),
        layout("q-digits", "Numbered labels?", ["w", "x", "y", "z"], "2", labels="1234"),
        layout("q-three", "Three choices?", ["x", "y", "z"], "A", labels="ABC"),
        layout("q-mid", "Medium length question?", ["e", "f", "g", "h"], "A"),
    ]
    path = tmp_path / "ARC-Challenge-Test.jsonl"
    path.write_text("\n".join(lines) + "\n")
    table = _arc_file({"kind": "arc", "path": str(path)})
    # All questions, in file order (selection by correctness and prompt length comes later).
    assert table["sample_id"].to_list() == ["q-short", "q-long", "q-digits", "q-three", "q-mid"]
    assert table["label"].to_list() == ["B", "D", "B", "A", "A"]
    # The source names the file and its 1-based line (the blank line 2 counts).
    assert table["source"].to_list() == [f"{path}:{n}" for n in (1, 3, 4, 5, 6)]
    assert table["text"][1] == BEGIN + "Question: A much longer question about science?\n" \
        "A: one\nB: two\nC: three\nD: four\n" + END  # fmt: skip
    assert table["text"][3] == BEGIN + "Question: Three choices?\nA: x\nB: y\nC: z\nC: z\n" + END


def test_arc_file_lines_split_at_newlines_only(tmp_path):
    # A question text may hold U+2028 unescaped (valid JSON); the reference reads files line by line at newlines,
    # and it drops bytes that are not UTF-8.
    path = tmp_path / "arc.jsonl"
    line = json.dumps(
        {"id": "u", "question": {"stem": "One\u2028two?", "choices": [{"label": "A", "text": "x"}]}, "answerKey": "A"},
        ensure_ascii=False,
    )
    path.write_bytes(line.encode() + b"\r\n" + _hf("v", "Caf\xff?", "abcd", "D").encode().replace(b"\\u00ff", b"\xff"))
    table = _arc_file({"kind": "arc", "path": str(path)})
    assert table["sample_id"].to_list() == ["u", "v"]
    assert table["text"][0] == BEGIN + "Question: One\u2028two?\nA: x\nA: x\nA: x\nA: x\n" + END
    assert "Question: Caf?\n" in table["text"][1]


def test_both_layouts_parse_the_same():
    texts = ["shark", "whale", "trout", "frog"]
    hf = parse_arc_line(_hf("x", "Which is a mammal?", texts, "B"), "f line 1")
    original = parse_arc_line(_original("x", "Which is a mammal?", texts, "B"), "f line 1")
    expected = {
        "id": "x",
        "stem": "Which is a mammal?",
        "choices": [("A", "shark"), ("B", "whale"), ("C", "trout"), ("D", "frog")],
        "answer": "B",
        "letter": "B",
    }
    assert hf == expected
    assert original == expected


@pytest.mark.parametrize(
    "bad, why",
    [
        ("{not json", "not an ARC question"),
        (json.dumps({"id": "q", "question": "No choices?", "answerKey": "A"}), "not an ARC question"),
        (
            json.dumps(
                {"question": "No id?", "choices": {"text": list("abcd"), "label": list("ABCD")}, "answerKey": "A"}
            ),
            "not an ARC question",
        ),  # fmt: skip
        (json.dumps(["a", "list"]), "not an ARC question"),
        # Labels and texts of different lengths.
        (
            json.dumps(
                {"id": "q", "question": "?", "choices": {"text": ["a"], "label": list("ABCD")}, "answerKey": "A"}
            ),
            "not an ARC question",
        ),  # fmt: skip
        (_hf("q", "Key?", "abcd", "E"), r"answer key 'E' is not among the choice labels \['A', 'B', 'C', 'D'\]"),
        (_hf("q", "Six?", "abcdef", "F", labels="ABCDEF"), "the answer is choice 6"),
    ],
)
def test_arc_malformed_line_names_file_and_line(tmp_path, bad, why):
    path = tmp_path / "arc.jsonl"
    path.write_text(_hf("ok", "Fine?", ["a", "b", "c", "d"], "A") + "\n" + bad + "\n")
    with pytest.raises(SourceError, match=why) as info:
        _arc_file({"kind": "arc", "path": str(path)})
    assert f"{path} line 2" in str(info.value)


def test_arc_file_missing(tmp_path):
    missing = tmp_path / "none.jsonl"
    with pytest.raises(SourceError, match="none.jsonl"):
        _arc_file({"kind": "arc", "path": str(missing)})


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


def test_imagenet_one_image_per_class(imagenet, caplog):
    table = build_candidates({"kind": "imagenet", "root": str(imagenet)})
    assert "n03 (class 2) holds no image" in caplog.text
    assert list(table.columns) == MANIFEST_COLUMNS
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


def test_imagenet_labels_file(imagenet, tmp_path):
    labels = tmp_path / "selection.txt"
    labels.write_text("n04/b.jpg 7\n\nn02/ILSVRC2012_val_00000009.JPEG 12\nn01/ILSVRC2012_val_00000005.png 0\n")
    table = build_candidates({"kind": "imagenet", "root": str(imagenet), "labels": str(labels)})
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


@pytest.mark.parametrize("line", ["n04/b.jpg", "n04/b.jpg seven"])
def test_imagenet_bad_labels_line(imagenet, tmp_path, line):
    labels = tmp_path / "selection.txt"
    labels.write_text(f"n01/ILSVRC2012_val_00000005.png 0\n{line}\n")
    with pytest.raises(SourceError) as info:
        build_candidates({"kind": "imagenet", "root": str(imagenet), "labels": str(labels)})
    assert f"{labels} line 2" in str(info.value)


def test_imagenet_missing_root(tmp_path):
    missing = tmp_path / "no-imagenet"
    with pytest.raises(SourceError, match="no-imagenet"):
        build_candidates({"kind": "imagenet", "root": str(missing)})
