"""LaMoFCBench's depth scenario (row 5): DINOv3 ViT-7B/16 with the release's DPT depth head on NYU-Depth-v2
(`dinov3_nyu`), ten depth metrics, RMSE the headline.

As the reference (machine/cvu/dinov3dep.py, `--mode multi`):
- input: the image as floats in [0, 1], its short side resized to `model.resolution` (768; bilinear,
  antialiased), ImageNet-normalized; the image and its horizontal flip form one batch of two, padded at the centre
  to a multiple of the patch size (DINOv3's CenterPadding; NYU's 480 x 640 gives 768 x 1024, no padding);
- split: the outputs of blocks 9, 19, 29 and 39 (0-based, before the final norm; `split: [10, 20, 30, 40]`), each
  view its own tensor: `layer.<b>.0` (the image) and `layer.<b>.1` (the flip), (1, 3077, 4096) fp32 at 768 x 1024;
- the head reads the four levels after the backbone's final norm, without the class token and registers, as
  patch maps: the release's DPT head (`dinov3_vit7b16_dd`: DPTHead and FeaturesToDepth from the user's dinov3
  clone, `model.repository`, with the head checkpoint `head.checkpoint`), or, where the clone is absent (the demo),
  transformers' Depth Anything neck and metric depth head on the same inputs (seeded random weights); the scores'
  `head` column says which ran;
- the flipped view's prediction is flipped back and averaged with the image's, resized (bilinear) to the image's
  size, and scored by `lamofc_lib.metrics.depth`: per image a least-squares scale and shift aligning it to the
  reference over its valid pixels (0.001 m < depth < 10 m, the Eigen crop scaled with truncation as the
  reference scales it), the ten metrics, averaged over images with nanmean.

Scoring puts the decoded tensors in the place of the four block outputs the head reads (the reference's patched
`_get_intermediate_layers_not_chunked`: every tensor the head reads is replaced, the backbone's own outputs are
discarded). As every tensor the head reads is a decoded one, the backbone's pass at scoring would compute only what
is thrown away: `DepthModel.head_forward` runs the final norm and the head on the decoded tensors directly, the
same code `DepthModel.forward` runs on the captured ones.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from lamofc_lib.metrics.depth import DEPTH_METRICS, align_least_squares, benchmark_valid_mask, depth_metrics
from lamofc_lib.sources.base import Source
from lamofc_lib.sources.images import IMAGE_SUFFIXES, NyuDepthV2, SkImage, image_size, load_depth, load_image
from lamofc_lib.sources.manifest import COLUMNS, SourceError
from lamofc_lib.tasks.base import Task, TensorExtraction, TensorsLayout, split_layers
from lamofc_lib.tasks.lamofcbench.vision import level_items

RESOLUTION = 768
BACKBONE = "dinov3_vit7b16"
# The transformers head of the demo: Depth Anything's neck and metric head, small.
DEMO_HEAD = {"neck_hidden_sizes": [16, 32, 64, 64], "fusion_hidden_size": 32, "head_hidden_size": 16,
             "reassemble_factors": [4, 2, 1, 0.5], "max_depth": 10}  # fmt: skip


def _nyu_scenes(source: Mapping) -> pd.DataFrame:
    """The reference's NYU-Depth-v2 layout: `<root>/<scene>/rgb_<n>.jpg` with `sync_depth_<n>.png` beside it
    (millimetres), scenes and images in sorted order, or the images `labels` lists (`<scene>/rgb_<n>.jpg` lines,
    the pinned sample list); sample id `<scene>-<stem>` (the reference's, without its `-wflip`)."""
    root = Path(source["root"])
    if not root.is_dir():
        raise SourceError(f"NYU-Depth-v2 folder {root} does not exist")
    if source.get("labels"):
        listing = Path(source["labels"])
        if not listing.is_file():
            raise SourceError(f"sample list {listing} does not exist (source.labels)")
        images = [root / line.strip() for line in listing.read_text().splitlines() if line.strip()]
        missing = [str(p) for p in images if not p.is_file()]
        if missing:
            raise SourceError(f"{listing} lists images that do not exist: {missing[:3]}")
    else:
        images = sorted(
            p for scene in sorted(root.iterdir()) if scene.is_dir() for p in scene.iterdir()
            if p.name.startswith("rgb_") and p.suffix.lower() in IMAGE_SUFFIXES
        )  # fmt: skip
    rows = []
    for image in images:
        depth = image.with_name(image.name.replace("rgb_", "sync_depth_", 1)).with_suffix(".png")
        if not depth.is_file():
            raise SourceError(f"NYU-Depth-v2 image {image} has no ground truth {depth}")
        rows.append({"sample_id": f"{image.parent.name}-{image.stem}", "source": str(image), "label": str(depth),
                     "text": ""})  # fmt: skip
    return pd.DataFrame(rows, columns=COLUMNS)


class NyuScenes(Source):
    kind = "nyu_scenes"
    description = "NYU-Depth-v2 test images in scene folders (rgb_<n>.jpg, sync_depth_<n>.png), as LaMoFCBench reads"
    properties = {
        "root": {"description": "Data folder, relative to the working directory or absolute.",
                 "type": ["string", "null"]},
        "labels": {"description": "nyu_scenes (optional): the pinned sample list, '<scene>/rgb_<n>.jpg' lines.",
                   "type": ["string", "null"]},
    }  # fmt: skip
    path_keys = required = ("root",)
    read = staticmethod(_nyu_scenes)


def resized_size(height: int, width: int, short: int) -> tuple[int, int]:
    """torchvision's Resize(short) output size: the short side `short`, the long side int(short * long / short)."""
    if height <= width:
        return short, int(short * width / height)
    return int(short * height / width), short


def padded_size(height: int, width: int, multiple: int) -> tuple[int, int]:
    """The size after centre padding to a multiple of the patch size (DINOv3's CenterPadding)."""
    return -(-height // multiple) * multiple, -(-width // multiple) * multiple


def depth_input(image: np.ndarray, short: int, patch: int):
    """The batch of the image and its horizontal flip: [0, 1] floats, short side `short` (bilinear, antialiased),
    ImageNet-normalized, centre-padded with zeros to a multiple of `patch`: 2 x 3 x H x W."""
    import torch
    import torch.nn.functional as F
    from torchvision.transforms.v2 import functional as TF

    from lamofc_lib.tasks.lamofc.cls import IMAGENET_MEAN, IMAGENET_STD

    x = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float() / 255.0
    size = resized_size(x.shape[1], x.shape[2], short)
    x = TF.resize(x, list(size), interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    x = TF.normalize(x, IMAGENET_MEAN, IMAGENET_STD)
    x = torch.stack([x, TF.horizontal_flip(x)])
    (h, w), (ph, pw) = size, padded_size(*size, patch)
    return F.pad(x, [(pw - w) // 2, pw - w - (pw - w) // 2, (ph - h) // 2, ph - h - (ph - h) // 2])


def release_head(repository: str | Path, dim: int, levels: int):
    """The release's DPT depth head (`dinov3_vit7b16_dd`'s decoder and its depth conversion) from the clone, with
    the release's settings for the ViT-7B/16, taking `levels` levels of `dim` channels."""
    import torch

    from lamofc_lib.tasks.lamofcbench.vision.dinov3 import release_code

    with release_code(repository, "dinov3/hub/depthers.py"):
        from dinov3.eval.depth.models import FeaturesToDepth, make_head
        from dinov3.hub.depthers import _get_depther_config

        config = _get_depther_config(BACKBONE)
        decoder = make_head([dim] * levels, n_output_channels=config.n_output_channels,
                            use_batchnorm=config.use_batchnorm, use_cls_token=config.use_cls_token,
                            head_type=config.type, **config.head_kwargs)  # fmt: skip
        to_depth = FeaturesToDepth(config.min_depth, config.max_depth, config.bins_strategy, config.norm_strategy)
    return torch.nn.ModuleDict({"decoder": decoder, "to_depth": to_depth})


def transformers_head(dim: int, patch: int, settings: Mapping):
    """The demo's head from transformers' classes: Depth Anything's neck (reassemble, fusion) and its metric depth
    head (sigmoid x max_depth), on `dim`-channel levels."""
    import torch
    from transformers import DepthAnythingConfig
    from transformers.models.depth_anything.modeling_depth_anything import (
        DepthAnythingDepthEstimationHead,
        DepthAnythingNeck,
    )

    config = DepthAnythingConfig(reassemble_hidden_size=dim, patch_size=patch, depth_estimation_type="metric",
                                 **dict(settings))  # fmt: skip
    return torch.nn.ModuleDict({"neck": DepthAnythingNeck(config), "head": DepthAnythingDepthEstimationHead(config)})


class DepthModel:
    """The backbone's final norm and a depth head over the split levels: what runs after the split."""

    def __init__(self, saved: Mapping, device: str):
        import torch

        self.kind, self.prefix, self.patch = saved["kind"], int(saved["prefix"]), int(saved["patch"])
        dim, levels = int(saved["dim"]), int(saved["levels"])
        if self.kind == "release":
            self.head = release_head(saved["repository"], dim, levels)
        else:
            self.head = transformers_head(dim, self.patch, saved["settings"])
        self.head.load_state_dict(saved["state"])
        self.norm = torch.nn.LayerNorm(dim, eps=float(saved["norm_eps"]))
        self.norm.load_state_dict(saved["norm"])
        self.head.to(device).eval()
        self.norm.to(device).eval()

    def head_forward(self, levels: Sequence, height: int, width: int):
        """Depth (B x 1 x H x W) from the split levels (each B x T x D, the block outputs before the final norm)
        of a height x width (padded) input."""
        normed = [self.norm(x) for x in levels]
        h, w = height // self.patch, width // self.patch
        if self.kind == "release":
            maps = [(x[:, self.prefix :].reshape(x.shape[0], h, w, -1).permute(0, 3, 1, 2).contiguous(), x[:, 0])
                    for x in normed]  # fmt: skip
            return self.head["to_depth"](self.head["decoder"](maps))
        tokens = [x[:, [0, *range(self.prefix, x.shape[1])]] for x in normed]  # class token and patches
        return self.head["head"](self.head["neck"](tokens, h, w), h, w)[:, None]


def merged_depth(depth, size: tuple[int, int]) -> np.ndarray:
    """The image's depth map: the flipped view's prediction flipped back and averaged with the image's, resized
    (bilinear) to `size`."""
    import torch.nn.functional as F

    merged = (depth[:1] + depth[1:2].flip(-1)) / 2
    if tuple(merged.shape[-2:]) != tuple(size):
        merged = F.interpolate(merged, size=tuple(size), mode="bilinear", align_corners=False)
    return merged[0, 0].float().cpu().numpy()


class Dinov3Depth(Task):
    """NYU-Depth-v2 depth: RMSE (m) after least-squares alignment, averaged over images; lower is better."""

    name = "dinov3_nyu"
    metric = "rmse"
    metric_label = "RMSE (m)"
    higher_is_better = False
    sources = (SkImage, NyuScenes, NyuDepthV2)
    head_checkpoint = True
    metric_options = ("eigen_crop",)
    options = {
        "eigen_crop": {
            "description": (
                "Count only the Eigen crop's pixels (rows 45:471, columns 41:601 at 480 x 640; other sizes scaled "
                "and truncated, as the reference). false: every pixel with 0.001 m < depth < 10 m."
            ),
            "type": "boolean",
            "default": True,
        },
    }
    model_options = {
        "resolution": {
            "description": "The short side the image is resized to (reference 768).",
            "type": "integer",
            "minimum": 16,
        },
        "repository": {
            "description": (
                "The user's clone of facebookresearch/dinov3: the release's DPT depth head comes from its code "
                "(with head.checkpoint, the dinov3_vit7b16 synthmix DPT head file). null: a head built from "
                "transformers' Depth Anything classes (the demo)."
            ),
            "type": ["string", "null"],
            "default": None,
        },
    }
    preload = ("transformers:DINOv3ViTModel", "torchvision.transforms")
    eigen_crop = True

    def layout(self, manifest: pd.DataFrame, model: Mapping, split) -> TensorsLayout:
        from lamofc_lib.store import TensorLayout
        from lamofc_lib.tasks.lamofcbench.vision.dinov3 import dinov3_config, split_blocks, tokens

        config = dinov3_config(model)
        short, patch = int(model.get("resolution") or RESOLUTION), int(config.patch_size)
        geometry = []
        for source in manifest["source"]:
            original = image_size(source)
            resized = resized_size(*original, short)
            geometry.append({"original": list(original), "resized": list(resized),
                             "padded": list(padded_size(*resized, patch))})  # fmt: skip
        shapes = [(1, 1, tokens(config, *g["padded"]), int(config.hidden_size)) for g in geometry]
        blocks = split_blocks(self.block, split, config)
        tensors = {
            f"layer.{b}.{view}": TensorLayout(list(shapes), "float32", {"packing": "tokens", "block": b, "view": v})
            for b in blocks
            for view, v in enumerate(("image", "hflip"))
        }
        attrs = {
            "task": self.block,
            "model": {k: v for k, v in model.items() if v is not None},
            "split": {"blocks": blocks, "where": "block output (0-based), before the final norm"},
            "extraction": {"resolution": short, "registers": int(config.num_register_tokens), "patch": patch},
            "geometry": geometry,
        }
        return TensorsLayout(tensors, attrs)

    def features(self, manifest: pd.DataFrame, model: Mapping, split) -> TensorExtraction:
        import torch

        from lamofc_lib.reinjection import batch_items, captured
        from lamofc_lib.tasks.lamofcbench.vision.dinov3 import load_dinov3, split_points

        layout = self.layout(manifest, model, split)
        net = load_dinov3(model, self.device)
        points = split_points(layout.attrs["split"]["blocks"])
        short, patch = layout.attrs["extraction"]["resolution"], layout.attrs["extraction"]["patch"]
        dtype = next(net.parameters()).dtype

        def samples():
            for source in manifest["source"]:
                pixels = depth_input(load_image(source), short, patch).to(self.device, dtype)
                with torch.no_grad(), captured(net, points) as found:
                    net(pixel_values=pixels)
                items = {}
                for name, tensor in found.items():
                    items.update(batch_items(name, tensor))
                yield {item: value.float().cpu().numpy()[:, None] for item, value in items.items()}  # (1, 1, T, D)

        return TensorExtraction(layout.tensors, samples(), layout.attrs)

    def write_head(self, model: Mapping, split, head: Mapping, head_out: Path) -> None:
        """The release's DPT head from the clone with its checkpoint (strict), or the transformers head with
        seeded random weights; with the backbone's final norm, so that scoring loads no backbone."""
        import torch

        from lamofc_lib.tasks.lamofcbench.vision.dinov3 import dinov3_config, load_dinov3

        config = dinov3_config(model)
        dim, levels = int(config.hidden_size), len(split_layers(split))
        saved = {"dim": dim, "levels": levels, "patch": int(config.patch_size),
                 "prefix": 1 + int(config.num_register_tokens)}  # fmt: skip
        if model.get("repository"):
            if not head.get("checkpoint"):
                raise ValueError(
                    f"tasks.{self.block}: model.repository gives the release's DPT head, head.checkpoint must name "
                    "its weights (dinov3_vit7b16_synthmix_dpt_head-*.pth)"
                )
            module = release_head(model["repository"], dim, levels)
            state = torch.load(head["checkpoint"], map_location="cpu", weights_only=True)
            state = state.get("model", state) if isinstance(state.get("model"), Mapping) else state
            try:
                module["decoder"].load_state_dict(state, strict=True)
            except RuntimeError as err:
                raise ValueError(f"head checkpoint {head['checkpoint']} is not the DPT head of a {dim}-wide "
                                 f"DINOv3 over {levels} levels: {str(err)[:400]}") from None  # fmt: skip
            saved.update(kind="release", repository=str(Path(model["repository"]).expanduser().resolve()))
        else:
            if head.get("checkpoint"):
                raise ValueError(
                    f"tasks.{self.block}: head.checkpoint {head['checkpoint']} is the release's DPT head, whose code "
                    "comes from your dinov3 clone: set model.repository (null runs the demo's seeded head)"
                )
            torch.manual_seed(int(head.get("seed", 0)))
            module = transformers_head(dim, int(config.patch_size), DEMO_HEAD)
            saved.update(kind="transformers", settings=dict(DEMO_HEAD))
        norm = load_dinov3(model, "cpu").norm
        saved.update(state=module.state_dict(), norm={k: v.float() for k, v in norm.state_dict().items()},
                     norm_eps=float(norm.eps))  # fmt: skip
        torch.save(saved, head_out)

    def tensor_groups(self, layouts: Mapping[str, Mapping]) -> dict[str, list[str]]:
        """A level's two views (the image and its flip) coded alone: `layer.<b>`."""
        groups: dict[str, list[str]] = {}
        for name, attrs in layouts.items():
            groups.setdefault(f"layer.{attrs['block']}", []).append(name)
        return groups

    def head_input(self, sample: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        return sample

    def import_tensors(self, name: str, tensor) -> dict:
        """A released file's level `layer.9` (2, T, D) as its views `layer.9.0` (the image), `layer.9.1` (flip)."""
        return level_items(name, tensor)

    def reference_stem(self, sample_id: str) -> str:
        return f"{sample_id}-wflip"

    def depths(self, head: Path, features: Iterable[Mapping[str, np.ndarray]], attrs: Mapping) -> list[np.ndarray]:
        """Each sample's depth map (the image's size) with its decoded tensors in the place of the levels."""
        import torch

        from lamofc_lib.reinjection import join_items

        saved = torch.load(head, map_location="cpu", weights_only=True)
        model = DepthModel(saved, self.device)
        self.head_kind = "dinov3 DPTHead" if model.kind == "release" else "transformers DepthAnything"
        out = []
        for sample, g in zip(features, attrs["geometry"], strict=True):
            levels = [join_items(f"layer.{b}", sample)[:, 0].to(self.device) for b in attrs["split"]["blocks"]]
            with torch.no_grad():
                depth = model.head_forward(levels, *g["padded"])
            out.append(merged_depth(depth, tuple(g["original"])))
        return out

    def head_outputs(self, head: Path, features: Iterable, attrs: Mapping) -> list[np.ndarray]:
        return self.depths(head, features, attrs)

    def ground_truth(self, manifest: pd.DataFrame) -> list[np.ndarray]:
        return [load_depth(path) for path in Task.ground_truth(self, manifest)]

    def compare(self, outputs: Sequence, references: Sequence) -> tuple[float, list[dict]]:
        """Per image: least-squares alignment to the reference over its valid pixels, then the ten metrics; the
        headline is the nanmean of the images' RMSE."""
        self.check_counts(outputs, references)
        rows = []
        for prediction, target in zip(outputs, references, strict=True):
            if prediction.shape != target.shape:
                raise ValueError(f"task {self.block}: depth map {prediction.shape} and reference {target.shape} differ")
            valid = benchmark_valid_mask(target, self.eigen_crop)
            aligned, scale, shift = align_least_squares(prediction, target, valid)
            rows.append({**depth_metrics(aligned, target, valid), "scale": scale, "shift": shift,
                         "valid_pixels": int(valid.sum()), "head": getattr(self, "head_kind", "")})  # fmt: skip
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a metric NaN for every image stays NaN
            self.summary = {k: float(np.nanmean([row[k] for row in rows])) for k in DEPTH_METRICS}
        return self.summary["rmse"], rows


__all__ = ["DEPTH_METRICS", "Dinov3Depth", "DepthModel", "NyuScenes"]
