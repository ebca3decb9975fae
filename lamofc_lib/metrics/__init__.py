"""The metrics of the benchmark, one module each: segmentation (mIoU), depth (RMSE), fid (FID); here, the accuracy
drop, which compares a metric on compressed features with the uncompressed pipeline's.

Conventions follow the evaluations the benchmark's tasks come from (see each module).
"""

from __future__ import annotations

import math


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
