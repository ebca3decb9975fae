"""Bad input (issue 12): each case feeds the library code the workflow runs one broken input and checks that the
error names the problem and the file or config key.

Cases covered elsewhere, with their messages asserted, are not repeated here:
duplicate ids of a source (tests/test_sources.py::test_duplicate_sample_ids_are_refused), NaN in the quantizer
(tests/test_preprocess.py::test_quantize_rejects_nan), missing, garbage, wrong-key and wrong-shape head checkpoints
(tests/test_heads.py::test_missing_file, test_unreadable_file, test_wrong_keys, test_wrong_shape,
tests/test_tasks.py::test_cls_bad_head_checkpoint_fails_before_the_model_loads), a Hyperprior checkpoint of garbage
bytes (tests/test_hyperprior.py::test_a_broken_checkpoint_is_named), text that reads as a number in the config
(tests/test_config.py::test_numbers_given_as_text_are_read_where_the_schema_takes_numbers), a COCO file without
an annotations list (tests/test_tti.py::test_coco_reader_names_a_malformed_or_missing_file).
"""

from __future__ import annotations

import copy
import json
import logging
import re
import stat
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from store_helpers import write_one

from lamofc_lib.bitstreams import SIDECAR_VERSION, Sidecar, TensorRecord, read_sidecars, sidecar_name
from lamofc_lib.codecs import CodecError
from lamofc_lib.codecs.hyperprior.model import CHECKPOINT_FORMAT, build_model, load_model
from lamofc_lib.codecs.vtm import resolve_tools
from lamofc_lib.config import ConfigError, validate
from lamofc_lib.io import file_sha256, write_json
from lamofc_lib.preprocess import preprocess_store, quantize
from lamofc_lib.selection import SelectionError, run_selection
from lamofc_lib.sources import SourceError, build_candidates, read_manifest
from lamofc_lib.sources.images import image_size, load_depth, load_image, load_label_map
from lamofc_lib.tasks import get_task
from lamofc_lib.tasks.lamofc.heads import read_state_dict

REPO = Path(__file__).resolve().parents[1]


def _image(path: Path, size=(8, 6), mode="RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, 0 if mode != "RGB" else (10, 20, 30)).save(path)
    return path


def _manifest(path: Path, rows: list[dict]) -> Path:
    """A manifest file as the select rule writes it (sample_id, source, label, text)."""
    lines = ["sample_id,source,label,text"] + [f"{r['sample_id']},{r['source']},{r.get('label', '')}," for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


# --- 1. NaN or Inf in the features ----------------------------------------------------------------------------


@pytest.mark.parametrize("input_kind", ["quantized", "normalized"])
@pytest.mark.parametrize(("value", "name"), [(np.nan, "NaN"), (np.inf, "+Inf"), (-np.inf, "-Inf")])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_nan_or_inf_in_features_is_refused_with_its_count(tmp_path, input_kind, value, name, dtype):
    rng = np.random.default_rng(0)
    good = rng.normal(size=(1, 1, 4, 6)).astype(dtype)
    bad = good.copy()
    bad.flat[[1, 5, 7]] = value  # three broken values in the second sample
    write_one(tmp_path / "f.zarr", ["a", "b"], [good.shape] * 2, [good, bad], {"task": "csr"}, dtype, "plane")
    with pytest.raises(ValueError, match=rf"contains 3 {re.escape(name)} value\(s\) of {bad.size}; .*broken"):
        preprocess_store(tmp_path / "f.zarr", tmp_path / "frames.zarr", "csr", [-2, 2], input_kind, 10)
    assert not (tmp_path / "frames.zarr").exists()


def test_nan_and_inf_together_are_counted_apart(tmp_path):
    x = np.zeros((1, 1, 2, 5), np.float32)
    x.flat[:4] = [np.nan, np.inf, -np.inf, -np.inf]
    write_one(tmp_path / "f.zarr", ["a"], [x.shape], [x], {"task": "csr"}, packing="plane")
    with pytest.raises(ValueError, match=r"1 NaN, 1 \+Inf, 2 -Inf value\(s\) of 10"):
        preprocess_store(tmp_path / "f.zarr", tmp_path / "frames.zarr", "csr", [-1, 1], "normalized", 10)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_finite_values_beyond_float32_still_clip():
    # the refusal is of the feature's own values, not of what the float32 cast makes of them
    x = np.array([[[[1e300, -1e300, 0.0]]]], np.float64)
    assert quantize(x, -1, 1, 10).tolist() == [[[[1023, 0, 511]]]]


# --- 2. duplicate sample ids ----------------------------------------------------------------------------------


def test_a_manifest_listing_a_sample_id_twice_is_refused_naming_the_file(tmp_path):
    image = _image(tmp_path / "a.png")
    path = _manifest(tmp_path / "manifest.csv", [{"sample_id": s, "source": image} for s in ("a", "b", "a")])
    with pytest.raises(SourceError, match=rf"manifest {re.escape(str(path))} lists sample ids more than once: \['a'\]"):
        read_manifest(path)


def test_a_labels_file_giving_two_images_one_sample_id_names_the_file(tmp_path):
    root = tmp_path / "val"
    _image(root / "n01" / "x.png")
    _image(root / "n02" / "x.png")
    labels = tmp_path / "labels.txt"
    labels.write_text("n01/x.png 0\nn02/x.png 1\n")
    with pytest.raises(SourceError, match=rf"\({re.escape(str(labels))}\) gives duplicate sample ids \['x'\]"):
        build_candidates({"kind": "imagenet", "root": str(root), "labels": str(labels)})


# --- 3. a manifest or list naming missing or unreadable files ---------------------------------------------------


READERS = {
    "load_image": load_image,
    "image_size": image_size,
    "load_label_map": load_label_map,
    "load_depth": load_depth,
}


@pytest.mark.parametrize("reader", sorted(READERS))
def test_a_manifest_naming_a_missing_file_names_it(tmp_path, reader):
    missing = tmp_path / "images" / "gone.png"
    manifest = read_manifest(_manifest(tmp_path / "manifest.csv", [{"sample_id": "gone", "source": missing}]))
    with pytest.raises(SourceError, match=rf"image {re.escape(str(missing))} \(manifest \w+\) does not exist"):
        READERS[reader](manifest["source"][0])


@pytest.mark.parametrize("reader", sorted(READERS))
def test_a_manifest_naming_an_unreadable_file_names_it(tmp_path, reader):
    folder = tmp_path / "not_a_file.png"  # a folder where the image should be: open() fails even as root
    folder.mkdir()
    with pytest.raises(SourceError, match=rf"image {re.escape(str(folder))} .*cannot be read as an image"):
        READERS[reader](str(folder))


def test_selection_of_a_manifest_naming_a_missing_image_names_it(tmp_path):
    missing = tmp_path / "JPEGImages" / "2007_000032.jpg"
    candidates = read_manifest(
        _manifest(tmp_path / "candidates.csv", [{"sample_id": "2007_000032", "source": missing, "label": "x.png"}])
    )
    settings = {"samples": 1, "selection": {"policy": "class_coverage"}, "source": {"kind": "voc2012"}}
    with pytest.raises(SourceError, match=rf"{re.escape(str(missing))} \(manifest source\) does not exist"):
        run_selection("seg", candidates, settings)


def test_a_labels_file_naming_a_missing_image_names_the_line(tmp_path):
    root = tmp_path / "val"
    _image(root / "n01" / "a.png")
    labels = tmp_path / "labels.txt"
    labels.write_text("n01/a.png 0\nn01/missing.png 0\n")
    missing = root / "n01" / "missing.png"
    with pytest.raises(SourceError, match=rf"{re.escape(str(labels))} line 2: {re.escape(str(missing))} does not"):
        build_candidates({"kind": "imagenet", "root": str(root), "labels": str(labels)})


# --- 4. an image that does not decode -------------------------------------------------------------------------


def _garbage(path: Path) -> Path:
    path.write_bytes(b"\x00not a jpeg at all" * 20)
    return path


def _cut_jpeg(path: Path) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path, quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # the header survives, the pixel data is cut
    return path


def test_a_jpeg_of_garbage_bytes_is_named(tmp_path):
    path = _garbage(tmp_path / "broken.jpg")
    for reader in (load_image, image_size):
        with pytest.raises(SourceError, match=rf"image {re.escape(str(path))} .*cannot be read as an image"):
            reader(str(path))


def test_a_cut_jpeg_is_named_when_its_pixels_are_decoded(tmp_path):
    path = _cut_jpeg(tmp_path / "cut.jpg")
    assert image_size(str(path)) == (64, 64)  # its header still reads
    with pytest.raises(SourceError, match=rf"image {re.escape(str(path))} .*does not decode: .*truncated"):
        load_image(str(path))


# --- 5. fewer usable samples than requested --------------------------------------------------------------------


def _nyu(tmp_path: Path) -> tuple[dict, str, int, str]:
    root = tmp_path / "nyu"
    lines = []
    for i in range(3):
        _image(root / "kitchen" / f"rgb_{i}.jpg")
        if i != 1:  # rgb_1 has no ground truth
            _image(root / "kitchen" / f"sync_depth_{i}.png", mode="I;16")
        lines.append(f"/kitchen/rgb_{i}.jpg /kitchen/sync_depth_{i}.png 518.8579")
    split = tmp_path / "split.txt"
    split.write_text("\n".join(lines) + "\n")
    source = {"kind": "nyu_depth_v2", "root": str(root), "labels": str(split)}
    return (
        source,
        "dpt",
        2,
        rf"{re.escape(str(split))} line 2: no ground truth .*sync_depth_1\.png, .*rgb_1\.jpg is not",
    )


def _coco(tmp_path: Path) -> tuple[dict, str, int, str]:
    path = tmp_path / "captions.json"
    images = [{"id": i} for i in (1, 2, 3, 4)]
    annotations = [
        {"image_id": 1, "caption": "A cat."},
        {"image_id": 3, "caption": " "},
        {"image_id": 4, "caption": "A"},
    ]
    path.write_text(json.dumps({"images": images, "annotations": annotations}))
    source = {"kind": "coco_captions", "path": str(path)}
    return source, "tti", 2, rf"{re.escape(str(path))}: 2 images have no caption and are not candidates, e.g. \[2, 3\]"


def _imagenet(tmp_path: Path) -> tuple[dict, str, int, str]:
    root = tmp_path / "val"
    _image(root / "n01" / "a.png")
    (root / "n02").mkdir()
    _image(root / "n03" / "c.png")
    source = {"kind": "imagenet", "root": str(root)}
    return source, "cls", 2, rf"ImageNet class folder {re.escape(str(root / 'n02'))} \(class 1\) holds no image"


@pytest.mark.parametrize("make", [_nyu, _coco, _imagenet], ids=["nyu", "coco", "imagenet"])
def test_a_source_short_of_samples_logs_what_it_skipped_and_states_requested_vs_available(tmp_path, caplog, make):
    source, task, available, skipped = make(tmp_path)
    with caplog.at_level(logging.WARNING, logger="lamofc_lib.sources"):
        table = build_candidates(source)
    assert re.search(skipped, caplog.text), caplog.text
    assert len(table) == available
    table.to_csv(tmp_path / "candidates.csv", index=False)
    candidates = read_manifest(tmp_path / "candidates.csv")
    requested = available + 1
    settings = {"samples": requested, "selection": {"policy": "first"}, "source": source}
    with pytest.raises(
        SelectionError, match=rf"gives {available} samples, tasks\.{task}\.samples asks for {requested}"
    ):
        run_selection(task, candidates, settings)


# --- 6. paths that leave the data root --------------------------------------------------------------------------


def _imagenet_escape(tmp_path: Path, rel: str) -> dict:
    root = tmp_path / "data" / "val"
    _image(root / "n01" / "a.png")
    labels = tmp_path / "labels.txt"
    labels.write_text(f"n01/a.png 0\n{rel} 1\n")
    return {"kind": "imagenet", "root": str(root), "labels": str(labels)}


def _nyu_escape(tmp_path: Path, rel: str) -> dict:
    root = tmp_path / "data" / "nyu"
    _image(root / "kitchen" / "rgb_0.jpg")
    split = tmp_path / "split.txt"
    split.write_text(f"/kitchen/rgb_0.jpg {rel} 518.8579\n")
    return {"kind": "nyu_depth_v2", "root": str(root), "labels": str(split)}


def _voc_escape(tmp_path: Path, rel: str) -> dict:
    root = tmp_path / "data" / "voc"
    listing = tmp_path / "val.txt"
    listing.write_text(f"{rel}\n")
    return {"kind": "voc2012", "root": str(root), "labels": str(listing)}


@pytest.mark.parametrize(
    ("make", "rel"),
    [
        (_imagenet_escape, "../../../etc/passwd"),
        (_imagenet_escape, "/etc/passwd"),
        (_imagenet_escape, "n01/../../../etc/passwd"),
        (_nyu_escape, "../../etc/passwd"),
        (_voc_escape, "../../../../etc/passwd"),
    ],
)
def test_a_list_file_naming_a_path_outside_the_data_root_is_refused_naming_it(tmp_path, make, rel):
    source = make(tmp_path, rel)
    with pytest.raises(SourceError, match=rf"{re.escape(source['labels'])} .*{re.escape(rel)}.* leaves the data root"):
        build_candidates(source)


def test_a_path_that_stays_inside_the_root_through_dotdot_is_kept(tmp_path):
    root = tmp_path / "val"
    image = _image(root / "n01" / "a.png")
    (root / "n02").mkdir()
    labels = tmp_path / "labels.txt"
    labels.write_text("n02/../n01/a.png 0\n")
    table = build_candidates({"kind": "imagenet", "root": str(root), "labels": str(labels)})
    assert load_image(table["source"][0]).shape == load_image(str(image)).shape


# --- 7. a wrong head checkpoint: a zero-byte file -----------------------------------------------------------------


def test_a_zero_byte_cls_head_checkpoint_is_named_before_the_model_loads(tmp_path):
    empty = tmp_path / "head.pth"
    empty.write_bytes(b"")
    no_model = {"id": str(tmp_path / "no-such-model")}
    with pytest.raises(ValueError, match=rf"head checkpoint {re.escape(str(empty))} cannot be read"):
        get_task("cls").write_head(no_model, 4, {"checkpoint": str(empty)}, tmp_path / "h.pt")
    assert not (tmp_path / "h.pt").exists()


def test_a_zero_byte_dense_head_checkpoint_is_named(tmp_path):
    empty = tmp_path / "dinov2_vitg14_nyu_linear4_head.pth"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=rf"head checkpoint {re.escape(str(empty))} cannot be read"):
        read_state_dict(empty)


# --- 8. empty ARC and COCO files ------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "\n\n  \n"], ids=["empty", "blank"])
def test_an_empty_arc_file_is_named(tmp_path, text):
    path = tmp_path / "ARC-Challenge-Test.jsonl"
    path.write_text(text)
    with pytest.raises(SourceError, match=rf"ARC file {re.escape(str(path))} holds no questions"):
        build_candidates({"kind": "arc", "path": str(path)})


def test_a_coco_captions_file_without_annotations_is_named(tmp_path):
    path = tmp_path / "captions_val2017.json"
    path.write_text(json.dumps({"images": [{"id": 139}, {"id": 285}], "annotations": []}))
    with pytest.raises(SourceError, match=rf"{re.escape(str(path))}: none of its 2 images .*\(0 annotations\)"):
        build_candidates({"kind": "coco_captions", "path": str(path)})


# --- 9. a missing VTM cfg ---------------------------------------------------------------------------------------


def test_a_missing_vtm_cfg_is_named_with_its_key(tmp_path, monkeypatch):
    monkeypatch.delenv("LAMOFC_VTM_DIR", raising=False)
    tools = {}
    for name in ("EncoderAppStatic", "DecoderAppStatic"):
        tools[name] = tmp_path / name
        tools[name].write_text("#!/bin/sh\necho 'VTM Encoder Version 23.3'\n")
        tools[name].chmod(tools[name].stat().st_mode | stat.S_IEXEC)
    cfg = tmp_path / "cfg" / "encoder_intra_vtm.cfg"
    settings = {"encoder": str(tools["EncoderAppStatic"]), "decoder": str(tools["DecoderAppStatic"]), "cfg": str(cfg)}
    with pytest.raises(ValueError, match=rf"codecs\.vtm\.cfg: {re.escape(str(cfg))} does not exist"):
        resolve_tools(settings)
    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    config["run"]["codecs"] = ["vvenc", "vtm"]
    config["codecs"]["vtm"] = {"points": [37], "truncation": "vvc", **settings}
    with pytest.raises(ConfigError, match=rf"config key codecs\.vtm\.cfg: {re.escape(str(cfg))} does not exist"):
        validate(config)


# --- 10. a corrupted Hyperprior model file -------------------------------------------------------------------------


def test_a_truncated_hyperprior_checkpoint_is_named(tmp_path):
    path = tmp_path / "model.pt"
    net = build_model(8, 8)
    torch.save({"format": CHECKPOINT_FORMAT, "state_dict": net.state_dict(), "N": 8, "M": 8, "lambda": 0.01}, path)
    _, record = load_model(path)  # the intact file loads
    assert (record["N"], record["M"]) == (8, 8)
    data = path.read_bytes()
    for cut in (len(data) // 2, 0):
        path.write_bytes(data[:cut])
        with pytest.raises(ValueError, match=rf"checkpoint {re.escape(str(path))} cannot be read"):
            load_model(path)


# --- 11. a config value given as text that is not a number ---------------------------------------------------------


@pytest.fixture
def demo() -> dict:
    return yaml.safe_load((REPO / "config" / "demo.yaml").read_text())


@pytest.mark.parametrize(
    ("key", "keys", "text", "how"),
    [
        ("run.threads", ("run", "threads"), "two", "a whole number"),
        ("tasks.cls.samples", ("tasks", "cls", "samples"), "8 samples", "a whole number"),
        ("codecs.vvenc.points[1]", ("codecs", "vvenc", "points", 1), "QP42", "a whole number"),
        ("codecs.hyperprior.points.csr[0]", ("codecs", "hyperprior", "points", "csr", 0), "0.01x", "a number"),
        ("tasks.dpt.eigen_crop", ("tasks", "dpt", "eigen_crop"), "maybe", "true or false"),
    ],
)
def test_config_text_that_is_not_what_the_key_takes_says_how_to_write_it(demo, key, keys, text, how):
    raw = copy.deepcopy(demo)
    container = raw
    for part in keys[:-1]:
        container = container[part]
    container[keys[-1]] = text
    with pytest.raises(ConfigError, match=rf"config key {re.escape(key)}: '{re.escape(text)}' .*write it as {how}"):
        validate(raw)


# --- 12. a results folder from an older sidecar version ---------------------------------------------------------


def _coded_point(folder: Path) -> Sidecar:
    """One coded sample as the encoder leaves it: a bitstream and its sidecar."""
    folder.mkdir(parents=True)
    bitstream = folder / "00000.feature.bin"
    bitstream.write_bytes(b"\x01\x02\x03\x04")
    tensor = TensorRecord(
        name="feature", bitstream=bitstream.name, bytes=4, sha256=file_sha256(bitstream), feature_shape=[1, 1, 2, 2],
        feature_dtype="float32", feature_points=4, frame_shape=[2, 2], packing="plane", truncation=[-1, 1],
        quantizer="floor",
    )  # fmt: skip
    record = Sidecar(
        sample_index=0, sample_id="a", task="csr", codec="vvenc", codec_version="VVenC 1.0", point="22",
        input_kind="quantized", bit_depth=10, tensors=[tensor], encode_seconds=0.1,
    )  # fmt: skip
    write_json(folder / sidecar_name(0), asdict(record))
    return record


@pytest.mark.parametrize("version", [SIDECAR_VERSION - 1, None], ids=["older", "missing"])
def test_a_sidecar_of_another_version_is_refused_naming_the_file_and_what_to_do(tmp_path, version):
    folder = tmp_path / "results" / "csr" / "vvenc" / "22" / "000"
    _coded_point(folder)
    assert [r.sample_id for _, r in read_sidecars([folder])] == ["a"]  # the current version reads
    path = folder / sidecar_name(0)
    data = json.loads(path.read_text())
    if version is None:
        del data["version"]
    else:
        data["version"] = version
    path.write_text(json.dumps(data))
    found = "no version" if version is None else f"version {version}"
    with pytest.raises(
        CodecError, match=rf"sidecar {re.escape(str(path))} has {found}.*delete {re.escape(str(folder))}"
    ):
        read_sidecars([folder])


def test_a_sidecar_that_is_not_json_is_named(tmp_path):
    folder = tmp_path / "000"
    _coded_point(folder)
    path = folder / sidecar_name(0)
    path.write_text('{"sample_index": 0, ')
    with pytest.raises(CodecError, match=rf"sidecar {re.escape(str(path))} is not JSON"):
        read_sidecars([folder])
