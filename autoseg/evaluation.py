"""``evaluate``: metrics at the original mask resolution, per image, then averaged."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from autoseg.data.io import read_mask
from autoseg.data.prepare import prepare_evaluation_table
from autoseg.inference import probabilities_to_ids
from autoseg.metrics import BINARY_METRICS, BinaryMetricAccumulator, MulticlassMetricAccumulator
from autoseg.problem import Problem

if TYPE_CHECKING:
    from autoseg.predictor import SemanticSegmentor

MULTICLASS_METRICS = ("miou", "acc")


def default_metric(problem: Problem) -> str:
    """The validation metric used when none is given."""
    return "iou" if problem.problem_type == "binary" else "miou"


def check_metric_names(problem: Problem, metrics: list[str] | None) -> None:
    """Reject metric names that do not exist for this problem type."""
    valid = list(BINARY_METRICS) if problem.problem_type == "binary" else list(MULTICLASS_METRICS)
    unknown = [m for m in metrics or [] if m not in valid and not m.startswith("iou/")]
    if unknown:
        raise ValueError(
            f"Unknown metric(s) {unknown} for a {problem.problem_type} problem; "
            f"choose from {valid}."
        )


def evaluate_model(
    predictor: SemanticSegmentor, data: Any, metrics: list[str] | None = None
) -> dict[str, float]:
    """Predict every image of ``data`` and score it against its mask."""
    problem = predictor.problem_
    check_metric_names(problem, metrics)
    table = prepare_evaluation_table(data, predictor.image, predictor.label, problem)
    probabilities = predictor._iter_proba(table)
    if problem.problem_type == "binary":
        accumulator = BinaryMetricAccumulator(metrics)
        for prob, label in zip(probabilities, table["label"], strict=True):
            accumulator.update(prob, problem.target(read_mask(label)) == 1)
        return accumulator.compute()
    accumulator = MulticlassMetricAccumulator(problem.num_outputs)
    for prob, label in zip(probabilities, table["label"], strict=True):
        accumulator.update(
            probabilities_to_ids(prob).astype(np.int64), problem.target(read_mask(label))
        )
    results = accumulator.compute(class_names=list(problem.class_names))
    if metrics:
        results = {k: v for k, v in results.items() if k in metrics}
    return results
