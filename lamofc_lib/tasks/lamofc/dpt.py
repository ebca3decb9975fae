"""NYU-Depth-v2 depth estimation with DINOv2 (task dpt): the linear4 depth head on four blocks' tokens of the
image and its flip (lamofc_lib.tasks.lamofc.dense), RMSE in metres; and the reference's selection, scene_quota.

scene_quota: NYU-Depth-v2 test images grouped by scene category (the first folder of the rgb path, e.g.
``bathroom/rgb_00045.jpg``). Every category gets min(3, its candidates) images, then one more in turn
(categories in order of first appearance) while it has fewer than 8 and candidates left, until `samples`; inside
a category the picks are evenly spread over its list order.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from lamofc_lib.metrics.depth import DepthErrors, depth_valid_mask
from lamofc_lib.selection import Policy, Selection, SelectionError, pick, too_few
from lamofc_lib.sources.images import NyuDepthV2, SkImage, load_depth
from lamofc_lib.tasks.base import Task
from lamofc_lib.tasks.lamofc.dense import DenseTask
from lamofc_lib.tasks.lamofc.options import DINOV2_MODEL_OPTIONS

if TYPE_CHECKING:
    import torch

SCENE_MIN, SCENE_MAX = 3, 8


def scene_of(source: str, root: str | None = None) -> str:
    """The NYU scene category of an rgb path: its first folder below the data root (``bathroom/rgb_00045.jpg``)."""
    path = Path(source)
    if root is not None:
        with contextlib.suppress(ValueError):  # a source outside the root keeps its own first folder
            path = path.relative_to(root)
    return path.parts[0] if len(path.parts) > 1 else ""


def select_scene_quota(task: str, candidates: pd.DataFrame, samples: int, scenes: Sequence[str]) -> Selection:
    """dpt: 3 to 8 images per scene category, evenly spread (see the module docstring)."""
    if len(candidates) < samples:
        raise too_few(task, f"the source's {len(candidates)} candidates", len(candidates), samples)
    members: dict[str, list[int]] = {}
    for i, scene in enumerate(scenes):
        members.setdefault(scene, []).append(i)
    quota = {s: min(SCENE_MIN, len(m)) for s, m in members.items()}
    if sum(quota.values()) > samples:
        raise SelectionError(
            f"task {task}: {len(members)} scene categories need {sum(quota.values())} images at {SCENE_MIN} each, "
            f"tasks.{task}.samples asks for {samples}"
        )
    while sum(quota.values()) < samples:
        grown = False
        for s, m in members.items():
            if sum(quota.values()) < samples and quota[s] < min(SCENE_MAX, len(m)):
                quota[s] += 1
                grown = True
        if not grown:
            raise SelectionError(
                f"task {task}: at most {SCENE_MAX} images per scene over {len(members)} categories give "
                f"{sum(quota.values())} samples, tasks.{task}.samples asks for {samples}"
            )
    chosen = set()
    for s, m in members.items():
        k = quota[s]
        chosen.update(m[math.floor((j + 0.5) * len(m) / k)] for j in range(k))
    kept = [i in chosen for i in range(len(candidates))]
    selection = pick(candidates, kept, ["" if k else "scene quota" for k in kept])
    selection.notes["images_per_scene"] = dict(quota)
    below = {s: q for s, q in quota.items() if q < SCENE_MIN}
    if below:  # reported, not refused: such a scene gives all it has
        selection.notes["scenes_below_minimum"] = below
    return selection


class SceneQuota(Policy):
    policy = "scene_quota"
    description = "dpt: 3 to 8 NYU images per scene category"
    kinds = ("nyu_depth_v2",)

    @classmethod
    def select(cls, task, candidates, samples, source, correct):
        root = source.get("root")
        return select_scene_quota(task, candidates, samples, [scene_of(s, root) for s in candidates["source"]])


class DepthTask(DenseTask):
    """NYU-Depth-v2 depth estimation: RMSE (m) averaged over images, lower is better."""

    name = "dpt"
    metric = "rmse"
    higher_is_better = False
    metric_options = ("eigen_crop",)
    metric_label = "RMSE (m)"
    sources = (SkImage, NyuDepthV2)
    policies = (SceneQuota,)
    reference_policy = "scene_quota"
    model_options = {
        **DINOV2_MODEL_OPTIONS,
        "resolution": {
            "description": (
                "Height and width every image is resized to before its padding to the patch (the paper's and "
                "NYU's 480 x 640, the default). The demo's 240 x 320 gives a quarter of the tokens: its random "
                "DINOv2's features of 490 x 644 inputs, 1.24 million values an image, made dpt's K-means fit 51 s "
                "and its coding the largest of the demo's LaMoFC tasks."
            ),
            "type": "array",
            "items": {"type": "integer", "minimum": 14},
            "minItems": 2,
            "maxItems": 2,
        },
    }
    head_checkpoint = True
    eigen_crop = True  # tasks.dpt.eigen_crop
    options = {
        "eigen_crop": {
            "description": (
                "Count a depth map's pixels for its RMSE only inside the Eigen crop, as the reference does: rows "
                "45:471 and columns 41:601 of NYU-Depth-v2's 480 x 640 ground truth, and the same fractions of maps "
                "of other sizes (the demo's scikit-image pictures), rounded half up. false counts every pixel with "
                "0.001 m < depth < 10 m, a deviation from the reference."
            ),
            "type": "boolean",
            "default": True,
        }
    }

    def _new_head(self, dim: int, layers: int) -> torch.nn.Module:
        from lamofc_lib.tasks.lamofc import heads

        return heads.DepthLinear4Head(dim, layers)

    def head_outputs(self, head: Path, features: Iterable[np.ndarray], attrs: Mapping) -> list:
        import torch
        import torch.nn.functional as F

        from lamofc_lib.tasks.lamofc.dinov2 import merge_flip_views

        module = self._load_head(head)
        out = []
        for x, g in zip(features, attrs["geometry"], strict=True):
            with torch.no_grad():
                depth = module(torch.from_numpy(np.ascontiguousarray(x)).to(self.device), tuple(g["grid"][0]),
                               tuple(g["resized"]))  # fmt: skip
                depth = merge_flip_views(depth, [v == "hflip" for v in g["views"]])
                if list(g["original"]) != list(g["resized"]):
                    depth = F.interpolate(depth, size=tuple(g["original"]), mode="bilinear", align_corners=False)
            out.append(depth[0, 0].cpu().numpy().astype(np.float32))
        return out

    def ground_truth(self, manifest: pd.DataFrame) -> list:
        return [load_depth(path) for path in Task.ground_truth(self, manifest)]

    def compare(
        self, outputs: Sequence, references: Sequence, eigen_crop: bool | None = None
    ) -> tuple[float, list[dict]]:
        """Mean over images of each image's RMSE over its valid pixels (`_valid_depth`). `eigen_crop`
        (tasks.dpt.eigen_crop; None: the class default, True as in the reference) limits them to the Eigen crop."""
        self.check_counts(outputs, references)
        crop = self.eigen_crop if eigen_crop is None else bool(eigen_crop)
        errors = DepthErrors()
        rows = []
        for p, t in zip(outputs, references, strict=True):
            valid = _valid_depth(t, crop)
            rows.append({"rmse": errors.update(p, t, valid), "valid_pixels": int(valid.sum())})
        return errors.rmse(), rows


def _valid_depth(target: np.ndarray, eigen_crop: bool = True) -> np.ndarray:
    """0.001 m < depth < 10 m, inside the Eigen crop (rows 45:471, columns 41:601 at 480 x 640; the same
    fractions of other map sizes, see metrics.eigen_crop_box) unless `eigen_crop` is False."""
    from lamofc_lib.tasks.lamofc.heads import MAX_DEPTH, MIN_DEPTH

    return depth_valid_mask(target, eigen_crop, MIN_DEPTH, MAX_DEPTH)
