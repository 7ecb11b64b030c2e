"""From what the user hands over to validated tables and a decided problem, before training."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from autoseg.data.colors import ColorTable
from autoseg.data.table import DataValidationError, check_with, load_table, validate_table
from autoseg.problem import MaskValueCollector, Problem, read_class_names

VALIDATION_FRACTION = 0.1


def prepare_training_data(
    train_data: Any,
    tuning_data: Any = None,
    image_col: str = "image",
    label_col: str = "label",
    problem_type: str = "auto",
    class_names: list[str] | None = None,
    seed: int = 0,
    class_colors: Mapping[Any, str | None] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, Problem]:
    """Load and check every row, decide the problem, and split off validation if needed.

    All problems of both tables are reported in one :class:`DataValidationError`, before
    anything is trained or written. The classes are discovered in the same single pass
    over the masks (see :class:`~autoseg.problem.MaskValueCollector`).

    Args:
        train_data: DataFrame or CSV path of training images and masks.
        tuning_data: optional validation data; ``None`` splits off a seeded 10%.
        image_col: column holding image paths.
        label_col: column holding mask paths.
        problem_type: ``auto``, ``binary`` or ``multiclass``.
        class_names: names in class-id order (or a legend indexed by mask value); default
            ``classes.txt`` beside a training CSV, if there is one.
        seed: seed of the validation split.
        class_colors: for colour (RGB) masks, ``{(r, g, b): name}`` (``None`` = ignore);
            see :mod:`autoseg.data.colors`.

    Returns:
        (train table, validation table, problem).

    Raises:
        DataValidationError: Problems in the rows of either table.
        ValueError, TypeError: Malformed ``class_colors`` or inconsistent class names.

    """
    colors = ColorTable.from_mapping(class_colors) if class_colors is not None else None
    collector = MaskValueCollector(problem_type, colors)
    tables, problems = [], []
    for data in (train_data, tuning_data):
        if data is None:
            continue
        try:
            table = load_table(data, image_col, label_col, require_labels=True)
            validate_table(table, require_labels=True, check_values=collector)
            tables.append(table)
        except DataValidationError as error:
            problems.extend(error.problems)
    if problems:
        raise DataValidationError(problems)
    names = class_names or (
        read_class_names(train_data)
        if isinstance(train_data, str | Path) and colors is None
        else None
    )
    problem = collector.problem(names)
    if len(tables) == 2:
        return tables[0], tables[1], problem
    train, val = split_validation(tables[0], seed)
    return train, val, problem


def split_validation(table: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out a seeded 10% (at least one image) for validation.

    A single-image table validates on its training image: there is nothing else.
    """
    if len(table) == 1:
        return table, table
    count = max(1, round(VALIDATION_FRACTION * len(table)))
    order = np.random.default_rng(seed).permutation(len(table))
    return table.iloc[np.sort(order[count:])], table.iloc[np.sort(order[:count])]


def prepare_prediction_table(data: Any, image_col: str = "image") -> pd.DataFrame:
    """Table of images to predict, every file checked to exist and decode."""
    table = load_table(data, image_col=image_col, require_labels=False)
    validate_table(table, require_labels=False)
    return table


def prepare_evaluation_table(
    data: Any, image_col: str, label_col: str, problem: Problem
) -> pd.DataFrame:
    """Table of images with masks, masks checked against the trained problem's classes."""
    table = load_table(data, image_col, label_col, require_labels=True)
    validate_table(table, require_labels=True, check_values=check_with(problem.target))
    return table
