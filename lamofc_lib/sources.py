"""Source samples and their manifests.

A manifest is the table of selected samples that the rest of the DAG depends on: `sample_id`, `source`
(where to read the sample), `label` (the reference answer, empty when the data set has none) and `text`
(the prompt of text tasks). Changing the selection changes the manifest and so reruns what depends on it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

COLUMNS = ["sample_id", "source", "label", "text"]
IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png"}
# Images inside the scikit-image wheel (checked to load offline); other skimage.data names download or are not images.
SKIMAGE_IMAGES = (
    "astronaut", "brick", "camera", "cat", "chelsea", "clock", "coffee", "coins", "colorwheel", "grass", "gravel",
    "horse", "hubble_deep_field", "immunohistochemistry", "logo", "microaneurysms", "moon", "page", "retina",
    "rocket", "text",
)  # fmt: skip
LETTERS = "ABCD"
# Source kinds (tasks.<task>.source.kind; each task lists those it takes in Task.source_kinds) and the keys of
# a source naming files or folders, which lamofc_lib.config checks exist before anything runs.
PATH_KEYS = {
    "imagenet": ("root",),
    "arc": ("path",),
    "skimage": (),
    "arc_demo": (),
    "voc2012": ("root",),
    "nyu_depth_v2": ("root", "labels"),
    "coco_captions": ("path",),
    "captions_demo": (),
}
VOC_CLASSES = 21  # VOC2012 segmentation labels: background and 20 object classes (255: ignored)

log = logging.getLogger(__name__)


class SourceError(ValueError):
    """The source data cannot give the configured samples; the message names the file or folder."""


def build_candidates(source: Mapping) -> pd.DataFrame:
    """Every sample the configured source offers, in the source's order (the pool that selection picks from)."""
    kind = source["kind"]
    builders = {
        "skimage": _skimage,
        "imagenet": _imagenet,
        "voc2012": _voc2012,
        "nyu_depth_v2": _nyu_depth_v2,
        "arc": _arc_file,
        "arc_demo": _arc_demo,
        "coco_captions": _coco_captions,
        "captions_demo": _captions_demo,
    }
    if kind not in builders:
        raise SourceError(f"source kind '{kind}' is unknown; expected one of {', '.join(builders)}")
    table = builders[kind](source)
    where = next((f" ({source[k]})" for k in ("labels", "path", "root") if source.get(k)), "")
    if not len(table):
        raise SourceError(f"source {kind}{where} gives no samples")
    duplicated = table["sample_id"][table["sample_id"].duplicated()].tolist()
    if duplicated:
        raise SourceError(f"source {kind}{where} gives duplicate sample ids {duplicated[:5]}")
    return table.reset_index(drop=True)[COLUMNS]


def read_manifest(path: str | Path) -> pd.DataFrame:
    """A manifest (or candidates) table; refuses one without the manifest's columns or with a sample id twice,
    naming the file."""
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise SourceError(f"manifest {path} lacks the columns {missing}; it has {list(table.columns)}")
    duplicated = table["sample_id"][table["sample_id"].duplicated()].tolist()
    if duplicated:
        raise SourceError(f"manifest {path} lists sample ids more than once: {duplicated[:5]}")
    return table


def _under_root(root: Path, rel: str, where: str) -> Path:
    """`root / rel` for a path a list file gives relative to the data root; refuses one that leaves the root
    (an absolute path, or `..` above it), naming it. The check is on the path as written, so symbolic links
    inside the root still work."""
    inside = os.path.normpath(rel)
    if os.path.isabs(inside) or inside == os.pardir or inside.startswith(os.pardir + os.sep):
        raise SourceError(f"{where}: path {rel!r} leaves the data root {root}; list files name paths inside it")
    return root / rel


def _skimage(source: Mapping) -> pd.DataFrame:
    import skimage.data

    rows = []
    for name in source["images"]:
        if name not in SKIMAGE_IMAGES or not callable(getattr(skimage.data, name, None)):
            raise SourceError(
                f"scikit-image ships no image called '{name}' (source.images); choose from {', '.join(SKIMAGE_IMAGES)}"
            )
        rows.append({"sample_id": name, "source": f"skimage:{name}", "label": "", "text": ""})
    return pd.DataFrame(rows, columns=COLUMNS)


def _imagenet(source: Mapping) -> pd.DataFrame:
    """ImageNet validation images in class folders (sorted folder names give the class indices), one image per
    class in class order; or the samples listed in `labels` ("relative/path class_index" lines)."""
    root = Path(source["root"])
    if not root.is_dir():
        raise SourceError(f"ImageNet folder {root} does not exist")
    rows = []
    if source.get("labels"):
        for n, line in enumerate(Path(source["labels"]).read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                rel, label = line.rsplit(maxsplit=1)
                int(label)
            except ValueError:
                raise SourceError(f"{source['labels']} line {n}: expected 'path class_index', got {line!r}") from None
            image = _under_root(root, rel, f"{source['labels']} line {n}")
            if not image.is_file():
                raise SourceError(f"{source['labels']} line {n}: {image} does not exist")
            rows.append({"sample_id": Path(rel).stem, "source": str(image), "label": label, "text": ""})
    else:
        classes = sorted(p for p in root.iterdir() if p.is_dir())
        for index, folder in enumerate(classes):
            images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if images:
                rows.append({"sample_id": images[0].stem, "source": str(images[0]), "label": str(index), "text": ""})
            else:
                log.warning("ImageNet class folder %s (class %d) holds no image: no candidate", folder, index)
    return pd.DataFrame(rows, columns=COLUMNS)


def _voc2012(source: Mapping) -> pd.DataFrame:
    """VOC2012 segmentation val images in list order (ImageSets/Segmentation/val.txt, or the `labels` list);
    the label is the SegmentationClass PNG (class indices, 255 = ignored boundary)."""
    root = Path(source["root"])
    listing = Path(source["labels"]) if source.get("labels") else root / "ImageSets" / "Segmentation" / "val.txt"
    if not listing.is_file():
        raise SourceError(f"VOC2012 list {listing} does not exist (expected under {root})")
    rows = []
    for name in listing.read_text().split():
        image = _under_root(root, f"JPEGImages/{name}.jpg", f"{listing} entry {name!r}")
        label = _under_root(root, f"SegmentationClass/{name}.png", f"{listing} entry {name!r}")
        for path in (image, label):
            if not path.is_file():
                raise SourceError(f"{listing} lists {name}, but {path} does not exist")
        rows.append({"sample_id": name, "source": str(image), "label": str(label), "text": ""})
    return pd.DataFrame(rows, columns=COLUMNS)


def _nyu_depth_v2(source: Mapping) -> pd.DataFrame:
    """NYU-Depth-v2 test images from a split file of "rgb_path depth_path [focal]" lines relative to the root
    (the layout of nyudepthv2_test_files_with_gt.txt); depth PNGs hold millimetres."""
    root = Path(source["root"])
    if not source.get("labels"):
        raise SourceError(
            "NYU-Depth-v2 needs its split file: set source.labels (e.g. nyudepthv2_test_files_with_gt.txt)"
        )
    listing = Path(source["labels"])
    rows = []
    for n, line in enumerate(listing.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 2:
            raise SourceError(f"{listing} line {n}: expected 'rgb_path depth_path [focal]', got {line!r}")
        image, depth = (_under_root(root, part.lstrip("/"), f"{listing} line {n}") for part in parts[:2])
        if not image.is_file():
            raise SourceError(f"{listing} line {n}: {image} does not exist")
        if not depth.is_file():  # the split lists a few images without ground truth; the benchmark uses those with it
            log.warning("%s line %d: no ground truth %s, %s is not a candidate", listing, n, depth, image)
            continue
        sample_id = Path(parts[0].lstrip("/")).with_suffix("").as_posix().replace("/", "_")
        rows.append({"sample_id": sample_id, "source": str(image), "label": str(depth), "text": ""})
    return pd.DataFrame(rows, columns=COLUMNS)


def load_label_map(path: str | Path) -> np.ndarray:
    """A segmentation label PNG as class indices (palette PNGs keep their indices)."""
    with _open_image(path, "label") as im:
        return np.asarray(im if im.mode in ("P", "L") else im.convert("L")).astype(np.uint8)


def load_depth(path: str | Path, scale: float = 1000.0) -> np.ndarray:
    """A depth PNG (uint16) in metres; 0 marks missing depth."""
    with _open_image(path, "label") as im:
        return np.asarray(im, dtype=np.float32) / scale


def image_size(source: str) -> tuple[int, int]:
    """(height, width) of a manifest `source` image, read from the file header where possible."""
    if source.startswith("skimage:"):
        return load_image(source).shape[:2]
    with _open_image(source) as im:
        return im.height, im.width


def _open_image(path: str | Path, column: str = "source"):
    """PIL's image of a file a manifest names (in `column`); a missing or undecodable file raises SourceError
    naming it."""
    from PIL import Image

    try:
        return Image.open(path)
    except FileNotFoundError:
        raise SourceError(f"image {path} (manifest {column}) does not exist") from None
    except OSError as err:  # PIL's UnidentifiedImageError for bytes that are no image, PermissionError, ...
        raise SourceError(f"image {path} (manifest {column}) cannot be read as an image: {err}") from None


def load_image(source: str) -> np.ndarray:
    """An RGB uint8 image from a manifest `source` entry (a file, or skimage:NAME)."""
    if source.startswith("skimage:"):
        import skimage.data

        name = source.split(":", 1)[1]
        if name not in SKIMAGE_IMAGES:
            raise SourceError(f"scikit-image ships no image called '{name}'")
        image = getattr(skimage.data, name)()
    else:
        with _open_image(source) as im:
            try:
                image = np.asarray(im.convert("RGB"))
            except OSError as err:  # a header that opens but pixel data that does not decode (a cut file)
                raise SourceError(f"image {source} (manifest source) does not decode: {err}") from None
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    if image.dtype != np.uint8:
        raise ValueError(f"image {source} has pixel type {image.dtype}; expected 8-bit RGB or gray")
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(image[..., :3])


# The csr prompt of the reference implementation (machines/llama3/llama3.py), one string with Llama-3's header
# tokens written out; a text-generation pipeline tokenizes it with the tokenizer's special tokens (Llama-3: BOS).
ARC_PROMPT_BEGIN = (
    "<|start_header_id|>user<|end_header_id|>\n\n"
    "Given the following question and four candidate answers (A, B, C and D), choose the best answer.\n"
)
ARC_PROMPT_END = (
    'Your response should end with "The best answer is [the_answer_letter]" where the [the_answer_letter] is one '
    "of A, B, C or D.<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nThe best answer is"
)
# The reference's answer letters: an answer key's position in the choice list (ARC labels some choices 1-4).
ARC_ANSWER_LETTERS = "ABCDE"


def parse_arc_line(line: str, where: str) -> dict:
    """One ARC question, from either the original ARC jsonl or the Hugging Face ai2_arc layout. `letter` is the
    answer's letter by position in the choice list, as in the reference ('ABCDE'[index of the answer key])."""
    try:
        item = json.loads(line.strip())
        question = item["question"]
        if isinstance(question, dict):
            stem = question["stem"]
            choices = [(c["label"], c["text"]) for c in question["choices"]]
        else:
            stem = question
            choices = list(zip(item["choices"]["label"], item["choices"]["text"], strict=True))
        answer = item["answerKey"]
        qid = item["id"]
    except (ValueError, KeyError, TypeError) as err:  # ValueError: bad JSON, or labels and texts of unequal length
        raise SourceError(f"{where}: not an ARC question ({err!r})") from None
    labels = [label for label, _ in choices]
    if answer not in labels:
        raise SourceError(f"{where}: answer key {answer!r} is not among the choice labels {labels}")
    index = labels.index(answer)
    if index >= len(ARC_ANSWER_LETTERS):
        raise SourceError(f"{where}: the answer is choice {index + 1}; the benchmark's letters stop at E")
    return {"id": qid, "stem": stem, "choices": choices, "answer": answer, "letter": ARC_ANSWER_LETTERS[index]}


def arc_prompt(question: dict) -> str:
    """The reference's csr prompt for one question, quirks included: one `X: text` line per slot A-D from the
    first four choices; a slot without a choice repeats the previous line (3 choices: the C line twice), and
    choices after the fourth are left out."""
    middle = f"Question: {question['stem']}\n"
    line = ""
    for index, letter in enumerate("ABCD"):
        if index < len(question["choices"]):
            line = f"{letter}: {question['choices'][index][1]}\n"
        middle += line
    return ARC_PROMPT_BEGIN + middle + ARC_PROMPT_END


def _arc_rows(lines: list[str], where: str) -> pd.DataFrame:
    """Every question in file order; `label` is the positional answer letter, `text` the full prompt string
    (whose length in characters is the reference's prompt length)."""
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        q = parse_arc_line(line, f"{where} line {n}")
        rows.append({"sample_id": q["id"], "source": f"{where}:{n}", "label": q["letter"], "text": arc_prompt(q)})
    return pd.DataFrame(rows, columns=COLUMNS)


def _arc_lines(data: bytes) -> list[str]:
    """Lines as the reference reads them: UTF-8 with undecodable bytes dropped, universal newlines."""
    return data.decode("utf-8", errors="ignore").replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _arc_file(source: Mapping) -> pd.DataFrame:
    path = Path(source["path"])
    if not path.is_file():
        raise SourceError(f"ARC file {path} does not exist")
    rows = _arc_rows(_arc_lines(path.read_bytes()), str(path))
    if not len(rows):
        raise SourceError(f"ARC file {path} holds no questions (it is empty or blank)")
    return rows


def _coco_captions(source: Mapping) -> pd.DataFrame:
    """One row per COCO image with its LONGEST caption, every image in the json's order of `images`
    (`source.order: file`, as the reference selection script does) or in ascending id order (`order: id`).

    Captions are cleaned as the reference does (newlines removed, stripped); images without a non-empty caption
    are skipped; among captions of equal length the first in the file wins.
    """
    if not source.get("path"):
        raise SourceError("source.path must name the COCO captions file (captions_val2017.json)")
    path = Path(source["path"])
    if not path.is_file():
        raise SourceError(f"COCO captions file {path} does not exist")
    order = source.get("order", "file")
    if order not in ("id", "file"):
        raise SourceError(f"source.order must be 'id' or 'file', got {order!r}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        ids = [int(image["id"]) for image in data["images"]]
        longest: dict[int, str] = {}
        for annotation in data["annotations"]:
            caption = annotation["caption"]
            if not isinstance(caption, str):
                raise TypeError(f"caption {caption!r} is not a string")
            image_id = int(annotation["image_id"])
            caption = caption.replace("\n", "").strip()
            if caption and len(caption) > len(longest.get(image_id, "")):
                longest[image_id] = caption
    except (ValueError, KeyError, TypeError) as err:  # ValueError: bad JSON or ids; TypeError: wrong layout
        raise SourceError(f"{path}: not a COCO captions file ({err!r})") from None
    ids = sorted(set(ids)) if order == "id" else list(dict.fromkeys(ids))
    rows = [{"sample_id": str(i), "source": str(path), "label": "", "text": longest[i]} for i in ids if i in longest]
    if not rows:
        raise SourceError(
            f"{path}: none of its {len(ids)} images has a non-empty caption ({len(data['annotations'])} annotations)"
        )
    if len(rows) < len(ids):
        without = [i for i in ids if i not in longest]
        log.warning("%s: %d images have no caption and are not candidates, e.g. %s", path, len(without), without[:5])
    return pd.DataFrame(rows, columns=COLUMNS)


def _captions_demo(source: Mapping) -> pd.DataFrame:
    """The COCO-format captions shipped with lamofc_lib (demo)."""
    name = "captions_demo_train.json" if source.get("set") == "train" else "captions_demo.json"
    path = resources.files("lamofc_lib").joinpath(f"data/{name}")
    return _coco_captions({**source, "path": str(path)})


def _arc_demo(source: Mapping) -> pd.DataFrame:
    name = "arc_demo_train.jsonl" if source.get("set") == "train" else "arc_demo.jsonl"
    data = resources.files("lamofc_lib").joinpath(f"data/{name}").read_bytes()
    return _arc_rows(_arc_lines(data), f"lamofc_lib/data/{name}")
