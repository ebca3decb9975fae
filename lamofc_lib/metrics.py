"""Label metrics of the benchmark: mIoU, depth RMSE, and the accuracy drop (FID: lamofc_lib.fid).

Conventions follow the evaluations the benchmark's tasks come from:

* mIoU as mmseg computes it (the DINOv2 segmentation evaluation uses mmseg): one confusion matrix over the
  whole dataset, per-class IoU = TP / (TP + FP + FN), NaN for classes absent from both target and
  prediction, mIoU = ``np.nanmean`` over classes.
* Depth RMSE as the benchmark's reference evaluates it (DINOv2's depth evaluation, from the
  Monocular-Depth-Estimation-Toolbox): RMSE per image over its valid pixels, i.e. 0.001 m < depth < 10 m
  inside the Eigen crop (rows 45:471, columns 41:601 of the 480 x 640 NYU ground truth), then the mean over
  images (:func:`depth_valid_mask`, :class:`DepthErrors`).
"""

from __future__ import annotations

import math

import numpy as np

# The Eigen crop of NYU-Depth-v2 evaluation: rows 45:471 and columns 41:601 of the 480 x 640 ground truth.
EIGEN_SHAPE = (480, 640)
EIGEN_CROP = (45, 471, 41, 601)  # (y1, y2, x1, x2), end exclusive
MIN_DEPTH = 1e-3  # metres; valid ground truth lies strictly between the two
MAX_DEPTH = 10.0


# --------------------------------------------------------------------------------------------------------------------
# Semantic segmentation


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


# --------------------------------------------------------------------------------------------------------------------
# Depth estimation


def rmse(prediction: np.ndarray, target: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Root mean squared error over the valid pixels of one depth map.

    ``valid`` defaults to ``target > 0`` (NYU Depth v2: depth 0 marks a missing measurement; NaN targets are
    excluded too). Pass an explicit mask for range caps such as the toolbox's ``1e-3 < target < 10``.
    """
    prediction = np.asarray(prediction, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if prediction.shape != target.shape:
        raise ValueError(f"prediction shape {prediction.shape} differs from target shape {target.shape}")
    if valid is None:
        valid = target > 0
    else:
        valid = np.asarray(valid)
        if valid.dtype != np.bool_:
            raise ValueError(f"valid must be a boolean mask, got dtype {valid.dtype}")
        if valid.shape != target.shape:
            raise ValueError(f"valid shape {valid.shape} differs from target shape {target.shape}")
    n = int(valid.sum())
    if n == 0:
        raise ValueError("rmse over no valid pixels")
    err = prediction[valid] - target[valid]
    if not np.isfinite(err).all():
        raise ValueError(f"{int((~np.isfinite(err)).sum())} of {n} valid pixels have a non-finite prediction or target")
    return float(np.sqrt(np.mean(err**2)))


def eigen_crop_box(shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """The Eigen crop (y1, y2, x1, x2; end exclusive) of a depth map of `shape` (H, W).

    At 480 x 640, NYU-Depth-v2's size, it is exactly rows 45:471 and columns 41:601. Other sizes (the demo
    scores depth maps of scikit-image pictures) get the same fractions of the map, rounded half up to whole
    pixels: y1 = round(45 H / 480), y2 = round(471 H / 480), x1 = round(41 W / 640), x2 = round(601 W / 640).
    """
    h, w = (int(v) for v in shape)
    if h < 1 or w < 1:
        raise ValueError(f"eigen_crop_box of an empty shape {tuple(shape)}")
    (eh, ew), (y1, y2, x1, x2) = EIGEN_SHAPE, EIGEN_CROP

    def scaled(edge: int, size: int, full: int) -> int:  # round(edge * size / full), half up, in integers
        return (2 * edge * size + full) // (2 * full)

    return scaled(y1, h, eh), scaled(y2, h, eh), scaled(x1, w, ew), scaled(x2, w, ew)


def depth_valid_mask(
    target: np.ndarray, eigen_crop: bool = True, min_depth: float = MIN_DEPTH, max_depth: float = MAX_DEPTH
) -> np.ndarray:
    """The pixels a depth map's RMSE counts: min_depth < target < max_depth (NaN excluded), and, with
    `eigen_crop`, only inside :func:`eigen_crop_box` of the map (the reference's evaluation; without it the
    whole map counts, a documented deviation)."""
    target = np.asarray(target)
    if target.ndim != 2:
        raise ValueError(f"a depth map must be H x W, got shape {target.shape}")
    with np.errstate(invalid="ignore"):
        valid = (target > min_depth) & (target < max_depth)
    if eigen_crop:
        y1, y2, x1, x2 = eigen_crop_box(target.shape)
        crop = np.zeros(target.shape, dtype=bool)
        crop[y1:y2, x1:x2] = True
        valid &= crop
    return valid


class DepthErrors:
    """Dataset RMSE as the mean of per-image RMSEs.

    This is how the DINOv2 depth evaluation (Monocular-Depth-Estimation-Toolbox's ``metrics`` and
    ``pre_eval_to_metrics``) reports RMSE: each image's RMSE over its valid pixels, averaged over images,
    so every image weighs the same whatever its number of valid pixels. It is not the RMSE of all valid
    pixels pooled. Unlike the toolbox (which ``nanmean``s over images), an image without valid pixels is an
    error here rather than silently dropped.
    """

    def __init__(self) -> None:
        self.per_image: list[float] = []

    def update(self, prediction: np.ndarray, target: np.ndarray, valid: np.ndarray | None = None) -> float:
        """Add one image; returns its RMSE (see :func:`rmse` for ``valid``)."""
        value = rmse(prediction, target, valid)
        self.per_image.append(value)
        return value

    def merge(self, other: DepthErrors) -> DepthErrors:
        """A new accumulator holding the images of both."""
        if not isinstance(other, DepthErrors):
            raise TypeError(f"cannot merge DepthErrors with {type(other).__name__}")
        out = DepthErrors()
        out.per_image = self.per_image + other.per_image
        return out

    __add__ = merge

    def rmse(self) -> float:
        """Mean of the per-image RMSEs."""
        if not self.per_image:
            raise ValueError("dataset RMSE of no images")
        return float(np.mean(self.per_image))


# --------------------------------------------------------------------------------------------------------------------
# Comparisons with the uncompressed pipeline


def accuracy_drop(value: float, original: float, higher_is_better: bool = True) -> float:
    """Accuracy drop (AD) in percent of the metric on compressed features relative to the uncompressed one.

    Higher-is-better metrics (accuracy, mIoU): AD = (original - value) / original * 100.
    Lower-is-better metrics (RMSE, FID) are turned into higher-is-better ones by taking 1 / metric:
    AD = (1/original - 1/value) / (1/original) * 100 = (1 - original / value) * 100.
    Positive AD means the compressed pipeline is worse; negative means better.
    """
    value, original = float(value), float(original)
    if not (math.isfinite(value) and math.isfinite(original)):
        raise ValueError(f"accuracy_drop of non-finite values: value={value}, original={original}")
    if original <= 0:
        raise ValueError(f"accuracy_drop needs a positive original metric, got {original}")
    if higher_is_better:
        if value < 0:
            raise ValueError(f"accuracy_drop needs a non-negative metric, got value={value}")
        return (original - value) / original * 100.0
    if value <= 0:
        raise ValueError(f"accuracy_drop of a lower-is-better metric needs a positive value (1/value), got {value}")
    return (1.0 / original - 1.0 / value) / (1.0 / original) * 100.0
