"""VOC2012 semantic segmentation with DINOv2 (task seg): a linear head on the patch tokens of the sliding
windows (lamofc_lib.tasks.lamofc.dense), mIoU over 21 classes; and the reference's selection, class_coverage.

class_coverage: VOC2012 val images in list order that give two sliding windows (the paper's 2 x 1370 x 1536;
square images give one and are skipped, reported). First pass: an image is kept when its label map holds an
object class (1-20) no kept image holds yet, until every class present in the pool is covered; then the list is
filled in order up to `samples`. Fails when `samples` cannot cover every class.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from lamofc_lib.metrics.segmentation import ConfusionMatrix
from lamofc_lib.selection import Policy, Selection, SelectionError, pick, too_few
from lamofc_lib.sources.images import VOC_CLASSES, SkImage, Voc2012, image_size, load_label_map
from lamofc_lib.tasks.base import Task
from lamofc_lib.tasks.lamofc.dense import DenseTask

if TYPE_CHECKING:
    import torch

VOC_OBJECT_CLASSES = range(1, 21)
SEG_WINDOWS = 2  # the paper's seg feature: 2 x 1 x 1370 x 1536


def select_class_coverage(
    task: str,
    candidates: pd.DataFrame,
    samples: int,
    classes_of: Callable[[str], set[int]] | None = None,
    windows_of: Callable[[str], int] | None = None,
) -> Selection:
    """seg: cover every object class of the pool first, then fill in list order (see the module docstring).
    Candidates whose image gives another number of sliding windows than SEG_WINDOWS (a square VOC image gives
    one) are skipped and reported, so every frame has the paper's 2 x 1370 x 1536 shape."""
    classes_of = classes_of or _label_classes
    windows_of = windows_of or _seg_windows
    windows = [windows_of(source) for source in candidates["source"]]
    usable = [w == SEG_WINDOWS for w in windows]
    if sum(usable) < samples:
        raise too_few(task, f"the {sum(usable)} candidates with {SEG_WINDOWS} sliding windows", sum(usable), samples)
    present = [
        classes_of(label) & set(VOC_OBJECT_CLASSES) if ok else set()
        for label, ok in zip(candidates["label"], usable, strict=True)
    ]
    pool = set().union(*present)
    missing = sorted(set(VOC_OBJECT_CLASSES) - pool)
    if missing:
        raise SelectionError(
            f"task {task}: no usable candidate holds object classes {missing}, so no selection covers all 20 "
            f"(check the label maps, or set tasks.{task}.selection.policy to first)"
        )
    covered: set[int] = set()
    kept = [False] * len(candidates)
    for i, classes in enumerate(present):
        if covered == pool:
            break
        if classes - covered:
            kept[i], covered = True, covered | classes
    if sum(kept) > samples:
        raise SelectionError(
            f"task {task}: covering the {len(pool)} object classes of the pool takes {sum(kept)} images in list "
            f"order, tasks.{task}.samples asks for {samples}"
        )
    for i in range(len(kept)):
        if sum(kept) >= samples:
            break
        kept[i] = kept[i] or usable[i]
    reasons = [
        "" if k else ("beyond samples" if ok else f"{w} sliding window(s), not {SEG_WINDOWS}")
        for k, ok, w in zip(kept, usable, windows, strict=True)
    ]
    return pick(candidates, kept, reasons)


def _label_classes(label_path: str) -> set[int]:
    return {int(c) for c in np.unique(load_label_map(label_path))}


def _seg_windows(source: str) -> int:
    from lamofc_lib.tasks.lamofc.dinov2 import seg_geometry

    return len(seg_geometry(*image_size(source))["windows"])


class ClassCoverage(Policy):
    policy = "class_coverage"
    description = "seg: VOC images with two sliding windows covering every object class first"
    kinds = ("voc2012",)

    @classmethod
    def select(cls, task, candidates, samples, source, correct):
        return select_class_coverage(task, candidates, samples)


class SegmentationTask(DenseTask):
    """VOC2012 semantic segmentation: mIoU (%) over 21 classes from an accumulated confusion matrix."""

    name = "seg"
    metric = "miou"
    metric_label = "mIoU (%)"
    sources = (SkImage, Voc2012)
    policies = (ClassCoverage,)
    reference_policy = "class_coverage"
    head_checkpoint = True
    classes = VOC_CLASSES

    def _new_head(self, dim: int, layers: int) -> torch.nn.Module:
        from lamofc_lib.tasks.lamofc import heads

        return heads.SegmentationLinearHead(dim, self.classes, layers)

    def _spec_options(self) -> dict:
        return {"classes": self.classes}

    def head_outputs(self, head: Path, features: Iterable[np.ndarray], attrs: Mapping) -> list:
        import torch
        import torch.nn.functional as F

        from lamofc_lib.tasks.lamofc.dinov2 import stitch_windows

        module = self._load_head(head)
        out = []
        for x, g in zip(features, attrs["geometry"], strict=True):
            boxes = [tuple(box) for box in g["windows"]]
            with torch.no_grad():
                logits = [
                    module(torch.from_numpy(np.ascontiguousarray(x[i : i + 1])).to(self.device), tuple(g["grid"][i]),
                           (b[1] - b[0], b[3] - b[2]))[0]
                    for i, b in enumerate(boxes)
                ]  # fmt: skip
                full = stitch_windows(logits, boxes, *g["resized"])
                full = F.interpolate(full[None], size=tuple(g["original"]), mode="bilinear", align_corners=False)
            out.append(full[0].argmax(0).to(torch.uint8).cpu().numpy())
        return out

    def ground_truth(self, manifest: pd.DataFrame) -> list:
        return [load_label_map(path) for path in Task.ground_truth(self, manifest)]

    def compare(self, outputs: Sequence, references: Sequence) -> tuple[float, list[dict]]:
        self.check_counts(outputs, references)
        total = ConfusionMatrix(self.classes)
        rows = []
        for prediction, target in zip(outputs, references, strict=True):
            if prediction.shape != target.shape:
                raise ValueError(f"task seg: prediction {prediction.shape} and label map {target.shape} differ in size")
            valid = target != total.ignore_index
            total.update(prediction, target)
            rows.append({"pixel_accuracy": 100.0 * float(np.mean(prediction[valid] == target[valid]))})
        return total.miou(), rows
