"""``evaluate``: metrics at the original mask resolution, per image, then averaged."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from autoseg.arguments import MULTICLASS_METRICS
from autoseg.data.io import read_mask
from autoseg.data.prepare import prepare_evaluation_table
from autoseg.errors import SettingsError
from autoseg.inference import probabilities_to_ids
from autoseg.metrics import BINARY_METRICS, BinaryMetricAccumulator, MulticlassMetricAccumulator
from autoseg.problem import Problem

if TYPE_CHECKING:
    from autoseg.predictor import SemanticSegmentor


def check_metric_names(problem: Problem, metrics: Sequence[str] | None) -> None:
    """Reject metric names that do not exist for this problem type.

    Raises:
        SettingsError: ``metrics`` is a single string, empty, or names unknown metrics; the
            message lists the valid names.

    """
    if problem.problem_type == "binary":
        valid = list(BINARY_METRICS)
    else:
        names = problem.class_names or [str(k) for k in range(len(problem.classes))]
        valid = [*MULTICLASS_METRICS, *(f"iou/{name}" for name in names)]
    if isinstance(metrics, str) or (metrics is not None and not metrics):
        raise SettingsError(
            f"metrics must be None (all) or a non-empty list of names such as {valid[:2]}, "
            f"got {metrics!r}; choose from {valid}."
        )
    unknown = [m for m in metrics or [] if m not in valid]
    if unknown:
        raise SettingsError(
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
