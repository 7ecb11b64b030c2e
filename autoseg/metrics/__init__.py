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
from autoseg.metrics.multiclass import MULTICLASS_METRICS, MulticlassMetricAccumulator
from autoseg.metrics.scorer import Scorer

__all__ = [
    "BINARY_METRICS",
    "HIGHER_IS_BETTER",
    "MULTICLASS_METRICS",
    "BinaryMetricAccumulator",
    "MulticlassMetricAccumulator",
    "Scorer",
    "ber",
    "dice",
    "e_measure",
    "iou",
    "mae",
    "s_measure",
    "weighted_f_measure",
]
