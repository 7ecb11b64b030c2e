"""Segmentation metrics: per-image binary metrics and dataset-level multi-class metrics."""

from autoseg.metrics.binary import (
    BINARY_METRICS,
    HIGHER_IS_BETTER,
    BinaryMetricAccumulator,
    ber,
    dice,
    e_measure,
    iou,
    mae,
    s_measure,
    weighted_f_measure,
)
from autoseg.metrics.multiclass import MulticlassMetricAccumulator

__all__ = [
    "BINARY_METRICS",
    "HIGHER_IS_BETTER",
    "BinaryMetricAccumulator",
    "MulticlassMetricAccumulator",
    "ber",
    "dice",
    "e_measure",
    "iou",
    "mae",
    "s_measure",
    "weighted_f_measure",
]
