"""LaMoFCBench's segmentation scenario (row 4): DINOv3 ViT-7B/16 with the release's Mask2Former head on ADE20K
(`dinov3_ade20k`), mIoU over 150 classes (with dice and fscore).

As the reference (machine/cvu/dinov3seg.py with DINOv3's segmentation evaluation):
- input: the image's short side resized to `model.resolution` (896; the long side int(x + 0.5), bilinear as
  PIL resizes), ImageNet-normalized on the 0-255 scale; slide inference with `model.crop` squares (896) at
  `model.stride` (596), the crops of one image one batch through the backbone;
- split: the outputs of blocks 9, 19, 29 and 39 (0-based, before the final norm; `split: [10, 20, 30, 40]`), each
  crop its own tensor: `layer.<b>.<k>`, (1, 3141, 4096) fp32 for an 896 crop. Every crop is kept (the reference
  rebuilds at most 3, defect 5): an image gives as many crops as its size needs, up to `model.crops` slots (4 by
  default: aspect ratios up to about 3), and a sample with fewer has the other slots absent (lamofc_lib.store.absent:
  no bitstream, 0 bits); the slots of one block share K-means centres (the reference's per-level mapping keys);
- the head: the release's Mask2Former segmentor (`dinov3_vit7b16_ms`) from the user's dinov3 clone
  (`model.repository`, its backbone weights `model.backbone_weights`, its head `head.checkpoint`), whose
  ViT-Adapter reads the crops' pixels besides the four levels; per crop softmax(classes)[:-1] x sigmoid(masks) in
  bfloat16. Where the clone is absent (the demo): transformers' DINOv3 backbone with transformers' UperNet head on
  the four levels after the final norm (seeded weights), per crop the class softmax. The scores' `head` column
  says which ran;
- the crops' class scores are averaged over their overlaps, resized (bilinear) to the label map's size and the
  argmax taken; ground truth with reduce_zero_label (class 0 ignored, 1-150 -> 0-149); mIoU, dice, fscore and aAcc
  from one confusion matrix over the data set (lamofc_lib.metrics.segmentation), the headline mIoU.

Scoring puts the decoded tensors back with forward hooks on the split blocks (lamofc_lib.reinjection) and runs
the model on the crops: the release head also reads the crops' pixels (the adapter's spatial prior), so the real
crops go through it, as in the reference.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from lamofc_lib.metrics.segmentation import ConfusionMatrix, reduce_zero_label, segmentation_scores
from lamofc_lib.sources.base import Source
from lamofc_lib.sources.images import IMAGE_SUFFIXES, SkImage, image_size, load_image, load_label_map
from lamofc_lib.sources.manifest import COLUMNS, SourceError
from lamofc_lib.tasks.base import Task, TensorExtraction, TensorsLayout
from lamofc_lib.tasks.lamofcbench.vision import level_items

RESOLUTION, CROP, STRIDE, CROPS = 896, 896, 596, 4
CLASSES = 150
DEMO_HEAD = {"hidden_size": 32, "pool_scales": [1, 2, 3, 6]}


def _ade20k(source: Mapping) -> pd.DataFrame:
    """ADE20K's validation images (`<root>/images/validation/*.jpg`) with their annotations
    (`<root>/annotations/validation/<stem>.png`), in name order, or the images `labels` lists (one file name or stem
    per line, the pinned sample list); sample id the stem (the reference's, without its `-stackedpatches`)."""
    root = Path(source["root"])
    images, annotations = root / "images" / "validation", root / "annotations" / "validation"
    if not images.is_dir():
        raise SourceError(f"ADE20K folder {root} has no images/validation (point source.root at ADEChallengeData2016)")
    if source.get("labels"):
        listing = Path(source["labels"])
        if not listing.is_file():
            raise SourceError(f"sample list {listing} does not exist (source.labels)")
        names = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
        paths = [images / (n if Path(n).suffix else f"{n}.jpg") for n in names]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise SourceError(f"{listing} lists images that do not exist: {missing[:3]}")
    else:
        paths = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    rows = []
    for image in paths:
        label = annotations / f"{image.stem}.png"
        if not label.is_file():
            raise SourceError(f"ADE20K image {image} has no annotation {label}")
        rows.append({"sample_id": image.stem, "source": str(image), "label": str(label), "text": ""})
    return pd.DataFrame(rows, columns=COLUMNS)


class Ade20k(Source):
    kind = "ade20k"
    description = "ADE20K (ADEChallengeData2016: images/validation, annotations/validation)"
    properties = {
        "root": {"description": "Data folder, relative to the working directory or absolute.",
                 "type": ["string", "null"]},
        "labels": {"description": "ade20k (optional): the pinned sample list, one image name or stem per line.",
                   "type": ["string", "null"]},
    }  # fmt: skip
    path_keys = required = ("root",)
    read = staticmethod(_ade20k)


def resized_size(height: int, width: int, short: int) -> tuple[int, int]:
    """DINOv3's FixedSideResize: the short side `short`, the long side int(short * long / short + 0.5)."""
    if height > width:
        return int(short * height / width + 0.5), short
    return short, int(short * width / height + 0.5)


def crop_boxes(height: int, width: int, crop: int, stride: int) -> list[tuple[int, int, int, int]]:
    """The slide windows (y1, y2, x1, x2) of a height x width image, row by row, as DINOv3's slide inference: a
    grid at `stride`, the last window of a row or column moved back inside the image; an image smaller than the
    crop along both sides is one window of its shorter side."""
    from lamofc_lib.tasks.lamofc.dinov2 import slide_windows

    if crop > height and crop > width:
        crop = min(height, width)
    return slide_windows(height, width, crop, stride)


def segmentation_input(image: np.ndarray, short: int):
    """The resized image (bilinear on the PIL image, as DINOv3's eval transform), ImageNet-normalized on the
    0-255 scale: 1 x 3 x H x W float32."""
    import torch
    from PIL import Image

    from lamofc_lib.tasks.lamofc.cls import IMAGENET_MEAN, IMAGENET_STD

    h, w = resized_size(image.shape[0], image.shape[1], short)
    resized = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR), dtype=np.float32)
    mean, std = np.float32(IMAGENET_MEAN) * 255, np.float32(IMAGENET_STD) * 255
    return torch.from_numpy(((resized - mean) / std).transpose(2, 0, 1).copy())[None]


def crops_of(pixels, boxes: Sequence[Sequence[int]]):
    """The batch of an image's windows."""
    import torch

    return torch.cat([pixels[:, :, y1:y2, x1:x2] for y1, y2, x1, x2 in boxes])


def stitched(scores, boxes: Sequence[Sequence[int]], size: tuple[int, int], label_size: tuple[int, int]):
    """The crops' class scores (B x C x crop x crop) added into the image, divided by the windows covering each
    pixel, resized (bilinear) to the label map's size: 1 x C x H x W."""
    import torch
    import torch.nn.functional as F

    total = torch.zeros((1, scores.shape[1], *size), dtype=torch.float32)
    count = torch.zeros((1, 1, *size), dtype=torch.float32)
    for score, (y1, y2, x1, x2) in zip(scores, boxes, strict=True):
        total[:, :, y1:y2, x1:x2] += score.float().cpu()
        count[:, :, y1:y2, x1:x2] += 1
    return F.interpolate(total / count, size=tuple(label_size), mode="bilinear", align_corners=False)


class ReleaseSegmenter:
    """The release's Mask2Former segmentor (backbone, ViT-Adapter, M2F head) from the clone; split points on its
    own backbone's blocks."""

    kind = "dinov3 Mask2Former"

    def __init__(self, model: Mapping, head: str, device: str):
        import torch

        from lamofc_lib.tasks.lamofcbench.vision.dinov3 import release_code

        with release_code(model["repository"], "dinov3/hub/segmentors.py"):
            from dinov3.hub.segmentors import dinov3_vit7b16_ms

            self.net = dinov3_vit7b16_ms(weights=str(head), backbone_weights=str(model["backbone_weights"]),
                                         autocast_dtype=torch.float32)  # fmt: skip
        self.net.to(device).eval()

    def point(self, block: int) -> str:
        return f"segmentation_model.0.backbone.blocks.{int(block)}"

    def scores(self, crops):
        """softmax(classes)[:-1] x sigmoid(masks), in bfloat16 as the reference: B x C x crop x crop."""
        import torch
        import torch.nn.functional as F

        out = self.net.segmentation_model[1].predict(self.net.segmentation_model[0](crops), rescale_to=crops.shape[2:])
        classes = F.softmax(out["pred_logits"], dim=-1)[..., :-1]
        masks = out["pred_masks"].sigmoid().to(torch.bfloat16)
        return torch.einsum("bqc,bqhw->bchw", classes.to(torch.bfloat16), masks)


class DemoSegmenter:
    """Transformers' DINOv3 backbone and UperNet head (seeded weights) on the four levels after the final norm."""

    kind = "transformers UperNet"

    def __init__(self, model: Mapping, head: str, device: str):
        import torch

        from lamofc_lib.tasks.lamofcbench.vision.dinov3 import load_dinov3

        saved = torch.load(head, map_location="cpu", weights_only=True)
        self.backbone = load_dinov3(model, device)
        self.blocks, self.prefix = list(saved["blocks"]), int(saved["prefix"])
        self.patch = int(saved["patch"])
        self.head = upernet_head(int(saved["dim"]), len(self.blocks), saved["settings"])
        self.head.load_state_dict(saved["state"])
        self.head.to(device).eval()

    def point(self, block: int) -> str:
        from lamofc_lib.tasks.lamofcbench.vision.dinov3 import block_module

        return block_module(block)

    def scores(self, crops):
        import torch.nn.functional as F

        from lamofc_lib.reinjection import captured

        points = {str(b): self.point(b) for b in self.blocks}
        with captured(self.backbone, points) as found:  # after any injection hook: the tensors the head reads
            self.backbone(pixel_values=crops)
        h, w = crops.shape[2] // self.patch, crops.shape[3] // self.patch
        maps = []
        for b in self.blocks:
            x = self.backbone.norm(found[str(b)])[:, self.prefix :]
            maps.append(x.reshape(x.shape[0], h, w, -1).permute(0, 3, 1, 2).contiguous())
        logits = F.interpolate(self.head(maps), size=crops.shape[2:], mode="bilinear", align_corners=False)
        return logits.softmax(dim=1)


def upernet_head(dim: int, levels: int, settings: Mapping):
    from transformers import UperNetConfig
    from transformers.models.upernet.modeling_upernet import UperNetHead

    config = UperNetConfig(num_labels=CLASSES, use_auxiliary_head=False, **dict(settings))
    return UperNetHead(config, in_channels=[dim] * levels)


class Dinov3Segmentation(Task):
    """ADE20K semantic segmentation: mIoU (%) over 150 classes, with dice, fscore and aAcc."""

    name = "dinov3_ade20k"
    metric = "miou"
    metric_label = "mIoU (%)"
    sources = (SkImage, Ade20k)
    head_checkpoint = True
    model_options = {
        "resolution": {"description": "The short side the image is resized to (reference 896).", "type": "integer",
                       "minimum": 16},
        "crop": {"description": "Slide window side (reference 896).", "type": "integer", "minimum": 16},
        "stride": {"description": "Slide window stride (reference 596).", "type": "integer", "minimum": 1},
        "crops": {"description": "Crop slots per image and block (default 4): an image needing more is refused.",
                  "type": "integer", "minimum": 1},
        "repository": {
            "description": ("The user's clone of facebookresearch/dinov3: the release's Mask2Former segmentor "
                            "(dinov3_vit7b16_ms) runs from it, with model.backbone_weights and head.checkpoint. "
                            "null: transformers' DINOv3 with a UperNet head of transformers' classes (the demo)."),
            "type": ["string", "null"], "default": None,
        },
        "backbone_weights": {"description": "With model.repository: the release's ViT-7B/16 backbone weights.",
                             "type": ["string", "null"], "default": None},
    }  # fmt: skip
    preload = ("transformers:DINOv3ViTModel",)

    def _settings(self, model: Mapping) -> dict:
        return {k: int(model.get(k) or d) for k, d in
                (("resolution", RESOLUTION), ("crop", CROP), ("stride", STRIDE), ("crops", CROPS))}  # fmt: skip

    def layout(self, manifest: pd.DataFrame, model: Mapping, split) -> TensorsLayout:
        from lamofc_lib.store import TensorLayout
        from lamofc_lib.tasks.lamofcbench.vision.dinov3 import dinov3_config, split_blocks, tokens

        config = dinov3_config(model)
        s = self._settings(model)
        geometry = []
        for sample_id, source in zip(manifest["sample_id"], manifest["source"], strict=True):
            original = image_size(source)
            resized = resized_size(*original, s["resolution"])
            boxes = crop_boxes(*resized, s["crop"], s["stride"])
            if len(boxes) > s["crops"]:
                raise ValueError(f"task {self.block}: image {sample_id} ({original[1]} x {original[0]}) gives "
                                 f"{len(boxes)} crops, model.crops allows {s['crops']}: raise it")  # fmt: skip
            geometry.append({"original": list(original), "resized": list(resized), "boxes": [list(b) for b in boxes]})
        blocks = split_blocks(self.block, split, config)
        d = int(config.hidden_size)
        # an image's windows share one size (the crop, or a smaller image's own side): its tokens per window
        t = [tokens(config, g["boxes"][0][1] - g["boxes"][0][0], g["boxes"][0][3] - g["boxes"][0][2]) for g in geometry]
        tensors = {
            f"layer.{b}.{k}": TensorLayout(
                [(1 if k < len(g["boxes"]) else 0, 1, n, d) for g, n in zip(geometry, t, strict=True)], "float32",
                {"packing": "tokens", "block": b, "crop": k, "calibration": f"layer.{b}"},
            )
            for b in blocks for k in range(s["crops"])
        }  # fmt: skip
        attrs = {
            "task": self.block,
            "model": {k: v for k, v in model.items() if v is not None},
            "split": {"blocks": blocks, "where": "block output (0-based), before the final norm"},
            "extraction": s,
            "geometry": geometry,
            "sources": list(manifest["source"]),  # the crops' pixels go through the segmentor again at scoring
        }
        return TensorsLayout(tensors, attrs)

    def _backbone(self, model: Mapping):
        """The backbone that gives the split tensors and its split points: the release's own (the segmentor's,
        from the clone, run as its adapter runs it) or transformers' DINOv3."""
        import torch

        if model.get("repository"):
            from lamofc_lib.tasks.lamofcbench.vision.dinov3 import release_code

            with release_code(model["repository"], "dinov3/hub/segmentors.py"):
                from dinov3.hub.backbones import dinov3_vit7b16

                net = dinov3_vit7b16(pretrained=True, weights=str(model["backbone_weights"]))
            net.to(self.device).eval()

            def run(crops, blocks):
                bf16 = torch.autocast("cuda", torch.bfloat16, enabled=crops.is_cuda)  # as DINOv3_Adapter
                with bf16:
                    net.get_intermediate_layers(crops, n=blocks, return_class_token=True)

            return net, (lambda b: f"blocks.{int(b)}"), run
        from lamofc_lib.tasks.lamofcbench.vision.dinov3 import block_module, load_dinov3

        net = load_dinov3(model, self.device)
        return net, block_module, (lambda crops, blocks: net(pixel_values=crops))

    def features(self, manifest: pd.DataFrame, model: Mapping, split) -> TensorExtraction:
        import torch

        from lamofc_lib.reinjection import batch_items, captured

        layout = self.layout(manifest, model, split)
        blocks, slots = layout.attrs["split"]["blocks"], layout.attrs["extraction"]["crops"]
        net, point, run = self._backbone(model)
        points = {f"layer.{b}": point(b) for b in blocks}
        short = layout.attrs["extraction"]["resolution"]

        def samples():
            for source, g in zip(manifest["source"], layout.attrs["geometry"], strict=True):
                crops = crops_of(segmentation_input(load_image(source), short), g["boxes"]).to(self.device)
                with torch.no_grad(), captured(net, points) as found:
                    run(crops, blocks)
                items = {}
                for name, tensor in found.items():
                    items.update(batch_items(name, tensor))
                sample = {k: v.float().cpu().numpy()[:, None] for k, v in items.items()}  # (1, 1, T, D)
                for b in blocks:  # the slots this image leaves empty
                    for k in range(len(g["boxes"]), slots):
                        sample[f"layer.{b}.{k}"] = np.zeros((0, *sample[f"layer.{b}.0"].shape[1:]), np.float32)
                yield sample

        return TensorExtraction(layout.tensors, samples(), layout.attrs)

    def write_head(self, model: Mapping, split, head: Mapping, head_out: Path) -> None:
        """The release's segmentor: its head checkpoint and backbone weights checked (both load at scoring); or
        transformers' UperNet head with seeded weights."""
        import torch

        from lamofc_lib.tasks.lamofcbench.vision.dinov3 import dinov3_config, split_blocks

        if model.get("repository"):
            missing = [k for k, v in (("head.checkpoint", head.get("checkpoint")),
                                      ("model.backbone_weights", model.get("backbone_weights"))) if not v]  # fmt: skip
            if missing:
                raise ValueError(f"tasks.{self.block}: model.repository gives the release's Mask2Former segmentor, "
                                 f"which needs {' and '.join(missing)}")  # fmt: skip
            for path in (head["checkpoint"], model["backbone_weights"]):
                if not Path(path).is_file():
                    raise FileNotFoundError(f"tasks.{self.block}: {path} does not exist")
            torch.save({"kind": "release", "checkpoint": str(Path(head["checkpoint"]).resolve())}, head_out)
            return
        if head.get("checkpoint"):
            raise ValueError(
                f"tasks.{self.block}: head.checkpoint {head['checkpoint']} is the release's Mask2Former head, whose "
                "code comes from your dinov3 clone: set model.repository (null runs the demo's seeded head)"
            )
        config = dinov3_config(model)
        blocks = split_blocks(self.block, split, config)
        torch.manual_seed(int(head.get("seed", 0)))
        module = upernet_head(int(config.hidden_size), len(blocks), DEMO_HEAD)
        torch.save({"kind": "transformers", "blocks": blocks, "dim": int(config.hidden_size),
                    "prefix": 1 + int(config.num_register_tokens), "patch": int(config.patch_size),
                    "settings": dict(DEMO_HEAD), "state": module.state_dict()}, head_out)  # fmt: skip

    def head_outputs(self, head: Path, features: Iterable, attrs: Mapping) -> list[np.ndarray]:
        """Each image's label map (0-149 at its own size) with its decoded crops' tensors in the place of the
        split blocks' outputs, the crops' pixels through the segmentor."""
        import torch

        from lamofc_lib.reinjection import injected, join_items

        saved = torch.load(head, map_location="cpu", weights_only=True)
        model = attrs["model"]
        segmenter = ReleaseSegmenter(model, saved["checkpoint"], self.device) if saved["kind"] == "release" else (
            DemoSegmenter(model, str(head), self.device))  # fmt: skip
        self.head_kind = segmenter.kind
        net = segmenter.net if saved["kind"] == "release" else segmenter.backbone
        blocks, short = attrs["split"]["blocks"], attrs["extraction"]["resolution"]
        points = {f"layer.{b}": segmenter.point(b) for b in blocks}
        out = []
        for sample, source, g in zip(features, attrs["sources"], attrs["geometry"], strict=True):
            crops = crops_of(segmentation_input(load_image(source), short), g["boxes"]).to(self.device)
            tensors = {f"layer.{b}": join_items(f"layer.{b}", sample)[:, 0] for b in blocks}
            with torch.no_grad(), injected(net, points, tensors):
                scores = segmenter.scores(crops)
            full = stitched(scores, g["boxes"], tuple(g["resized"]), tuple(g["original"]))
            out.append(full[0].argmax(0).to(torch.uint8).numpy())
        return out

    def import_tensors(self, name: str, tensor) -> dict:
        """A released file's level `layer.9` (its crops, B x T x D) as its slots `layer.9.0` ... (the slots an
        image does not fill are absent)."""
        return level_items(name, tensor)

    def head_input(self, sample: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        return sample

    def reference_stem(self, sample_id: str) -> str:
        return f"{sample_id}-stackedpatches"

    def ground_truth(self, manifest: pd.DataFrame) -> list[np.ndarray]:
        return [reduce_zero_label(load_label_map(path)) for path in Task.ground_truth(self, manifest)]

    def compare(self, outputs: Sequence, references: Sequence) -> tuple[float, list[dict]]:
        """One confusion matrix over the data set (150 classes, 255 ignored): mIoU the headline; per sample its
        own scores."""
        self.check_counts(outputs, references)
        total = ConfusionMatrix(CLASSES)
        rows = []
        for prediction, target in zip(outputs, references, strict=True):
            if prediction.shape != target.shape:
                raise ValueError(f"task {self.block}: prediction {prediction.shape} and labels {target.shape} differ")
            own = ConfusionMatrix(CLASSES)
            own.update(prediction, target)
            total = total + own
            rows.append({**segmentation_scores(own), "head": getattr(self, "head_kind", "")})
        self.summary = segmentation_scores(total)
        return self.summary["miou"], rows
