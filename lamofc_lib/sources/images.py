"""The image sources (skimage, imagenet, voc2012, nyu_depth_v2) and the readers of the files their manifests
name: images, segmentation label maps, depth maps."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from lamofc_lib.sources.base import Source
from lamofc_lib.sources.manifest import COLUMNS, SourceError

IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png"}
# Images inside the scikit-image wheel (checked to load offline); other skimage.data names download or are not images.
SKIMAGE_IMAGES = (
    "astronaut", "brick", "camera", "cat", "chelsea", "clock", "coffee", "coins", "colorwheel", "grass", "gravel",
    "horse", "hubble_deep_field", "immunohistochemistry", "logo", "microaneurysms", "moon", "page", "retina",
    "rocket", "text",
)  # fmt: skip
VOC_CLASSES = 21  # VOC2012 segmentation labels: background and 20 object classes (255: ignored)

log = logging.getLogger(__name__)


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


class SkImage(Source):
    kind = "skimage"
    description = "images that scikit-image ships (demo)"
    properties = {"images": {"description": "skimage: the image names.", "type": "array", "minItems": 1,
                             "items": {"type": "string"}}}  # fmt: skip
    required = ("images",)
    read = staticmethod(_skimage)


_ROOT = {"description": "Data folder, relative to the working directory or absolute.", "type": ["string", "null"]}
_LIST = {"type": ["string", "null"]}


class ImageNet(Source):
    kind = "imagenet"
    description = "an ImageNet validation folder (class folders)"
    properties = {"root": _ROOT, "labels": {**_LIST, "description": (
        'imagenet (optional): "relative/path.JPEG class_index" lines selecting the samples.')}}  # fmt: skip
    path_keys = required = ("root",)
    read = staticmethod(_imagenet)


class Voc2012(Source):
    kind = "voc2012"
    description = "the VOC2012 folder (JPEGImages, SegmentationClass, ImageSets)"
    properties = {"root": _ROOT, "labels": {**_LIST, "description": (
        "voc2012 (optional): the list of image names (default ImageSets/Segmentation/val.txt).")}}  # fmt: skip
    path_keys = required = ("root",)
    read = staticmethod(_voc2012)


class NyuDepthV2(Source):
    kind = "nyu_depth_v2"
    description = "the NYU-Depth-v2 test split folder"
    properties = {
        "root": _ROOT,
        "labels": {
            **_LIST,
            "description": (
                'nyu_depth_v2: the split file of "rgb_path depth_path focal" lines (nyudepthv2_test_files_with_gt.txt).'
            ),
        },
    }
    path_keys = required = ("root", "labels")
    read = staticmethod(_nyu_depth_v2)


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
