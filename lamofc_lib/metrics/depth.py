"""Depth RMSE as the benchmark's reference evaluates it (DINOv2's depth evaluation, from the
Monocular-Depth-Estimation-Toolbox): RMSE per image over its valid pixels, i.e. 0.001 m < depth < 10 m inside the
Eigen crop (rows 45:471, columns 41:601 of the 480 x 640 NYU ground truth), then the mean over images
(:func:`depth_valid_mask`, :class:`DepthErrors`).
"""

from __future__ import annotations

import numpy as np

# The Eigen crop of NYU-Depth-v2 evaluation: rows 45:471 and columns 41:601 of the 480 x 640 ground truth.
EIGEN_SHAPE = (480, 640)
EIGEN_CROP = (45, 471, 41, 601)  # (y1, y2, x1, x2), end exclusive
MIN_DEPTH = 1e-3  # metres; valid ground truth lies strictly between the two
MAX_DEPTH = 10.0


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
    target: np.ndarray,
    eigen_crop: bool = True,
    min_depth: float = MIN_DEPTH,
    max_depth: float = MAX_DEPTH,
    crop_box=None,
) -> np.ndarray:
    """The pixels a depth map's RMSE counts: min_depth < target < max_depth (NaN excluded), and, with
    `eigen_crop`, only inside the Eigen crop of the map, `crop_box(shape)` (default :func:`eigen_crop_box`; the
    reference's evaluation; without it the whole map counts, a documented deviation)."""
    target = np.asarray(target)
    if target.ndim != 2:
        raise ValueError(f"a depth map must be H x W, got shape {target.shape}")
    with np.errstate(invalid="ignore"):
        valid = (target > min_depth) & (target < max_depth)
    if eigen_crop:
        y1, y2, x1, x2 = (crop_box or eigen_crop_box)(target.shape)
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


# LaMoFCBench's depth scenario (DINOv3's depth evaluation, as machine/cvu/dinov3dep.py runs it): each image's
# prediction aligned to its ground truth by least squares, then ten metrics per image, averaged over images with
# nanmean. The order is DINOv3's DEPTH_METRICS.
DEPTH_METRICS = ("a1", "a2", "a3", "abs_rel", "rmse", "log_10", "rmse_log", "silog", "sq_rel", "mae")


def eigen_crop_floor(shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """The Eigen crop (y1, y2, x1, x2) of a map of `shape` as LaMoFCBench's depth evaluation scales it: each edge
    int(edge / 480 * H) or int(edge / 640 * W), truncated (rows 45:471, columns 41:601 at 480 x 640)."""
    h, w = (int(v) for v in shape)
    (eh, ew), (y1, y2, x1, x2) = EIGEN_SHAPE, EIGEN_CROP
    return int(y1 / eh * h), int(y2 / eh * h), int(x1 / ew * w), int(x2 / ew * w)


def benchmark_valid_mask(target: np.ndarray, eigen_crop: bool = True) -> np.ndarray:
    """LaMoFCBench's valid pixels of a ground-truth map: min < depth < max (depths at or beyond either limit are
    set to 0 and 0 is ignored), inside `eigen_crop_floor` unless `eigen_crop` is False."""
    return depth_valid_mask(target, eigen_crop, crop_box=eigen_crop_floor)


def align_least_squares(
    prediction: np.ndarray, target: np.ndarray, valid: np.ndarray
) -> tuple[np.ndarray, float, float]:
    """The prediction scaled and shifted to the target: (scale, shift) minimise the squared error over the valid
    pixels (an ordinary least-squares fit of target = scale * prediction + shift, as Marigold's and DINOv3's
    `align_depth_least_square`). Returns the aligned map (float64), scale and shift."""
    prediction = np.asarray(prediction, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if prediction.shape != target.shape or valid.shape != target.shape:
        raise ValueError(f"prediction {prediction.shape}, target {target.shape} and mask {valid.shape} differ")
    if not valid.any():
        raise ValueError("least-squares alignment over no valid pixels")
    design = np.stack([prediction[valid], np.ones(int(valid.sum()))], axis=1)
    (scale, shift), *_ = np.linalg.lstsq(design, target[valid], rcond=None)
    return prediction * scale + shift, float(scale), float(shift)


def depth_metrics(prediction: np.ndarray, target: np.ndarray, valid: np.ndarray) -> dict[str, float]:
    """The ten depth metrics of one image over its valid pixels (DINOv3's formulas): threshold accuracies a1-a3
    (max(t/p, p/t) below 1.25, 1.25^2, 1.25^3), abs_rel, sq_rel, rmse, rmse_log, silog (x 100), log_10, mae.
    A negative aligned prediction makes the log metrics NaN and silog 0, as in the reference (which averages
    images with nanmean). Computed in float64 (the reference: float32 torch)."""
    p = np.asarray(prediction, dtype=np.float64)[valid]
    t = np.asarray(target, dtype=np.float64)[valid]
    if not t.size:
        raise ValueError("depth metrics over no valid pixels")
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.maximum(t / p, p / t)
        error = t - p
        log_error = np.log(t) - np.log(p)
        silog = np.sqrt(np.mean(log_error**2) - np.mean(log_error) ** 2) * 100
        values = {
            "a1": np.mean(ratio < 1.25),
            "a2": np.mean(ratio < 1.25**2),
            "a3": np.mean(ratio < 1.25**3),
            "abs_rel": np.mean(np.abs(error) / t),
            "rmse": np.sqrt(np.mean(error**2)),
            "log_10": np.mean(np.abs(np.log10(t) - np.log10(p))),
            "rmse_log": np.sqrt(np.mean(log_error**2)),
            "silog": 0.0 if np.isnan(silog) else silog,  # as the reference: NaN (a negative p) counts 0
            "sq_rel": np.mean(error**2 / t),
            "mae": np.mean(np.abs(error)),
        }
    return {k: float(values[k]) for k in DEPTH_METRICS}
