"""The caption sources (coco_captions: a COCO captions file; captions_demo: the one shipped with lamofc_lib): one
candidate per image, its text the image's longest caption."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

import pandas as pd

from lamofc_lib.sources.base import Source
from lamofc_lib.sources.manifest import COLUMNS, SourceError

log = logging.getLogger(__name__)


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


class CocoCaptions(Source):
    kind = "coco_captions"
    description = "the COCO2017 captions_val2017.json file"
    properties = {
        "path": {"description": "coco_captions: the captions file, relative to the working directory or absolute.",
                 "type": ["string", "null"]},
        "order": {"description": "coco_captions: take images in the order of the json's `images` list (file, the "
                  "default, as the reference selection does) or by ascending image id (id).", "enum": ["file", "id"]},
    }  # fmt: skip
    path_keys = required = ("path",)
    read = staticmethod(_coco_captions)


class CaptionsDemo(Source):
    kind = "captions_demo"
    description = "the COCO-format captions shipped with lamofc_lib (demo)"
    properties = {"set": {"description": "captions_demo: the shipped evaluation captions (eval) or the separate "
                          "ones for training learned codecs (train).", "enum": ["eval", "train"]}}  # fmt: skip
    read = staticmethod(_captions_demo)
