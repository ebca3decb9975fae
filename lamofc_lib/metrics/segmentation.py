"""mIoU as mmseg computes it (the DINOv2 segmentation evaluation uses mmseg): one confusion matrix over the whole
dataset, per-class IoU = TP / (TP + FP + FN), NaN for classes absent from both target and prediction,
mIoU = ``np.nanmean`` over classes.
"""

from __future__ import annotations

import numpy as np


class ConfusionMatrix:
    """Pixel confusion matrix of a segmentation task (rows = target class, columns = predicted class).

    Accumulate one dataset with :meth:`update`, or build one matrix per sample and combine them with
    :meth:`merge` / ``+``; both give the same counts.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        if 0 <= ignore_index < num_classes:
            raise ValueError(f"ignore_index {ignore_index} is one of the {num_classes} class labels")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, prediction: np.ndarray, target: np.ndarray) -> None:
        """Count the pixels of one label map; pixels whose target is ``ignore_index`` are skipped.

        Targets must lie in [0, num_classes) or equal ``ignore_index``; predictions at counted pixels must lie
        in [0, num_classes).
        """
        prediction, target = np.asarray(prediction), np.asarray(target)
        if prediction.shape != target.shape:
            raise ValueError(f"prediction shape {prediction.shape} differs from target shape {target.shape}")
        for name, array in (("prediction", prediction), ("target", target)):
            if not np.issubdtype(array.dtype, np.integer):
                raise ValueError(f"{name} must hold integer labels, got dtype {array.dtype}")
        target = target.astype(np.int64).ravel()
        prediction = prediction.astype(np.int64).ravel()
        counted = target != self.ignore_index
        target, prediction = target[counted], prediction[counted]
        for name, labels in (("target", target), ("prediction", prediction)):
            bad = labels[(labels < 0) | (labels >= self.num_classes)]
            if bad.size:
                raise ValueError(
                    f"{name} has labels outside [0, {self.num_classes}) (ignore_index {self.ignore_index}): "
                    f"{np.unique(bad)[:10].tolist()}"
                )
        counts = np.bincount(target * self.num_classes + prediction, minlength=self.num_classes**2)
        self.matrix += counts.reshape(self.num_classes, self.num_classes)

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """A new matrix holding the counts of both."""
        if not isinstance(other, ConfusionMatrix):
            raise TypeError(f"cannot merge a ConfusionMatrix with {type(other).__name__}")
        if (other.num_classes, other.ignore_index) != (self.num_classes, self.ignore_index):
            raise ValueError(
                f"cannot merge a matrix of {other.num_classes} classes (ignore {other.ignore_index}) into one of "
                f"{self.num_classes} classes (ignore {self.ignore_index})"
            )
        out = ConfusionMatrix(self.num_classes, self.ignore_index)
        out.matrix = self.matrix + other.matrix
        return out

    __add__ = merge

    def iou(self) -> np.ndarray:
        """Per-class IoU = TP / (TP + FP + FN) in [0, 1]; NaN for a class in neither target nor prediction."""
        tp = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(axis=0) + self.matrix.sum(axis=1) - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)

    def miou(self) -> float:
        """Mean IoU in percent over the classes whose IoU is defined (``np.nanmean``, as mmseg does)."""
        if self.matrix.sum() == 0:
            raise ValueError("mIoU of an empty confusion matrix (no counted pixels)")
        return float(np.nanmean(self.iou()) * 100.0)


def reduce_zero_label(label: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """ADE20K's label shift (mmseg's and DINOv3's reduce_zero_label): class 0 ("other") becomes ignored and every
    other class k becomes k - 1, so 150 classes are 0 .. 149; ignored pixels stay ignored."""
    label = np.asarray(label)
    if not np.issubdtype(label.dtype, np.integer):
        raise ValueError(f"a label map must hold integer labels, got dtype {label.dtype}")
    shifted = label.astype(np.int64) - 1
    shifted[(label == 0) | (label == ignore_index)] = ignore_index
    return shifted


def segmentation_scores(matrix: ConfusionMatrix) -> dict[str, float]:
    """DINOv3's segmentation metrics (dinov3.eval.segmentation.metrics) from a data set's confusion matrix, in
    percent: mIoU (intersection / union), dice (2 intersection / (predicted + labelled area)) and fscore (F1 of the
    class's precision and recall), each the nanmean over classes of the per-class values (NaN where undefined, as
    0 / 0), and aAcc (correct pixels / labelled pixels)."""
    m = matrix.matrix.astype(np.float64)
    if m.sum() == 0:
        raise ValueError("segmentation scores of an empty confusion matrix (no counted pixels)")
    intersect, predicted, labelled = np.diag(m), m.sum(axis=0), m.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = intersect / (predicted + labelled - intersect)
        dice = 2 * intersect / (predicted + labelled)
        precision, recall = intersect / predicted, intersect / labelled
        fscore = 2 * precision * recall / (precision + recall)
        return {
            "miou": 100 * float(np.nanmean(iou)),
            "dice": 100 * float(np.nanmean(dice)),
            "fscore": 100 * float(np.nanmean(fscore)),
            "aacc": 100 * float(intersect.sum() / labelled.sum()),
        }
