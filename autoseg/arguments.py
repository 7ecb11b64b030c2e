"""Checks of the facade's arguments, made before any folder, data set or model is touched.

``SemanticSegmentor(...).fit(...)`` calls :func:`check_fit_arguments` first, so a wrong type
or an out-of-range value ends in one :class:`~autoseg.errors.SettingsError` naming the
argument and what it accepts, instead of a crash (or a silently wrong run) minutes later.

Example:
    >>> check_fit_arguments(path=None, time_limit=60, problem_type="auto",
    ...                     eval_metric=None, hyperparameters=[None, {"optim.lr": 3e-4}])
    >>> resolve_eval_metric(Problem("binary", classes=(0, 1)), None)
    'iou'

"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from autoseg.errors import SettingsError
from autoseg.labels.problem import PROBLEM_TYPES, Problem
from autoseg.metrics import BINARY_METRICS, MULTICLASS_METRICS

METRICS_BY_PROBLEM: dict[str, tuple[str, ...]] = {
    "binary": tuple(BINARY_METRICS),
    "multiclass": tuple(MULTICLASS_METRICS),
}
"""The validation metrics (``eval_metric``) each problem type can select a model by."""

ALL_METRICS = tuple(dict.fromkeys(m for names in METRICS_BY_PROBLEM.values() for m in names))


def check_fit_arguments(
    *,
    path: Any,
    time_limit: Any,
    problem_type: Any,
    eval_metric: Any,
    hyperparameters: Sequence[Any],
    seed: Any = 0,
    verbosity: Any = 2,
) -> None:
    """Reject wrong types and out-of-range values of the arguments of a fit.

    Args:
        path: the predictor folder: ``None`` or a path that is not an existing file.
        time_limit: ``None`` or seconds > 0.
        problem_type: one of ``auto``, ``binary``, ``multiclass``.
        eval_metric: ``None`` or the name of a known metric (checked against the problem
            type later, by :func:`resolve_eval_metric`).
        hyperparameters: the constructor's and fit's ``hyperparameters``, each ``None`` or a
            mapping of dotted keys.
        seed: an int.
        verbosity: an int >= 0 (0 silent, 1 messages, 2 also progress bars).

    Raises:
        SettingsError: the first argument that is wrong, named with what it accepts.

    """
    _check_path(path)
    check_time_limit(time_limit)
    if problem_type not in PROBLEM_TYPES:
        raise SettingsError(
            f"problem_type must be one of {list(PROBLEM_TYPES)}, got {problem_type!r}."
        )
    if eval_metric is not None and eval_metric not in ALL_METRICS:
        raise SettingsError(
            f"eval_metric={eval_metric!r} is not a metric; use None (the default: iou for "
            f"binary, miou for multiclass) or one of: binary {list(BINARY_METRICS)}, "
            f"multiclass {list(MULTICLASS_METRICS)}."
        )
    for value in hyperparameters:
        if value is not None and not isinstance(value, Mapping):
            raise SettingsError(
                f"hyperparameters must be a dict of dotted keys such as "
                f"{{'optim.lr': 3e-4}} (or None), got {type(value).__name__} {value!r:.80}."
            )
    for name, value, lowest in (("seed", seed, None), ("verbosity", verbosity, 0)):
        if not _is_int(value) or (lowest is not None and value < lowest):
            allowed = "an int" if lowest is None else f"an int >= {lowest} (0 silent .. 2)"
            raise SettingsError(f"{name} must be {allowed}, got {value!r}.")


def resolve_eval_metric(problem: Problem, eval_metric: str | None) -> str:
    """The validation metric of a fit: the default for the problem if ``None``.

    Raises:
        SettingsError: ``eval_metric`` is not a metric of ``problem.problem_type``; the
            message lists the valid ones.

    Example:
        >>> resolve_eval_metric(Problem("multiclass", classes=(0, 1, 2)), "acc")
        'acc'

    """
    if eval_metric is None:
        return problem.default_metric
    valid = METRICS_BY_PROBLEM[problem.problem_type]
    if eval_metric not in valid:
        raise SettingsError(
            f"eval_metric={eval_metric!r} does not exist for a {problem.problem_type} "
            f"problem; choose one of {list(valid)} (or None for {problem.default_metric!r})."
        )
    return eval_metric


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_path(path: Any) -> None:
    if path is None:
        return
    if not isinstance(path, (str, os.PathLike)) or str(path) == "":
        raise SettingsError(
            f"path must be None or a folder path (str or pathlib.Path), got {path!r}."
        )
    if Path(path).is_file():
        raise SettingsError(
            f"path={str(path)!r} is an existing file, not a folder; autoseg saves the "
            "predictor in a folder. Pass a new folder path (or None for a timestamped one)."
        )


def check_time_limit(time_limit: Any) -> None:
    """``time_limit`` is ``None`` or a number of seconds > 0, or :class:`SettingsError`."""
    if time_limit is None:
        return
    number = isinstance(time_limit, numbers.Real) and not isinstance(time_limit, bool)
    if not number or math.isnan(time_limit) or time_limit <= 0:
        raise SettingsError(
            f"time_limit must be None (no limit) or a number of seconds > 0, got {time_limit!r}."
        )
