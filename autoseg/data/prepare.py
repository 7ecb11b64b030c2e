"""From what the user hands over to validated tables and a decided problem, before training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

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
) -> tuple[pd.DataFrame, pd.DataFrame, Problem]:
    """Load and check every row, decide the problem, and split off validation if needed.

    All problems of both tables are reported in one :class:`DataValidationError`, before
    anything is trained or written.

    Returns:
        (train table, validation table, problem).

    """
    collector = MaskValueCollector(problem_type)
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
        read_class_names(train_data) if isinstance(train_data, str | Path) else None
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
