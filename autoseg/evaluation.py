"""``evaluate``: metrics at the original mask resolution, per image, then averaged."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from autoseg.data.io import read_mask
from autoseg.errors import SettingsError
from autoseg.inference import iter_probabilities
from autoseg.labels.problem import Problem
from autoseg.models.segmenter import SamSegmenter
from autoseg.runtime import Runtime


def check_metric_names(problem: Problem, metrics: Sequence[str] | None) -> None:
    """Reject metric names that do not exist for this problem type.

    Raises:
        SettingsError: ``metrics`` is a single string, empty, or names unknown metrics; the
            message lists the valid names.

    """
    valid = list(problem.metric_names)
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
    model: SamSegmenter,
    problem: Problem,
    table: pd.DataFrame,
    metrics: Sequence[str] | None,
    runtime: Runtime,
    *,
    batch_size: int = 4,
) -> dict[str, float]:
    """Predict every image of ``table`` (columns ``image``, ``label``) and score it.

    Args:
        model: the trained segmenter.
        problem: its label space (it converts the masks and makes the scorer).
        table: the prepared evaluation table.
        metrics: metric names (checked with :func:`check_metric_names`); ``None``: all.
        runtime: where and at which precision to run (see :func:`iter_probabilities`).
        batch_size: images per forward pass.

    Returns:
        Each metric averaged over the images.

    """
    check_metric_names(problem, metrics)
    probabilities = iter_probabilities(model, table, runtime, batch_size=batch_size)
    scorer = problem.new_scorer(metrics)
    for prob, label in zip(probabilities, table["label"], strict=True):
        scorer.update(prob, problem.target(read_mask(label)))
    return scorer.compute()
