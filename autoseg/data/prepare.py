"""From what the user hands over to validated tables and a decided problem, before training."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from autoseg.data import traps
from autoseg.data.table import DataValidationError, check_with, load_table, validate_table
from autoseg.labels.colors import ColorTable
from autoseg.labels.problem import MaskValueCollector, Problem, read_class_names

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
    over the masks (see :class:`~autoseg.labels.problem.MaskValueCollector`).

    Args:
        train_data: DataFrame or CSV path of training images and masks.
        tuning_data: optional validation data; ``None`` splits off a seeded 10%.
        image_col: column holding image paths.
        label_col: column holding mask paths.
        problem_type: ``auto``, ``binary`` or ``multiclass``.
        class_names: names in class-id order (or a legend indexed by mask value); default
            ``classes.txt`` beside a training CSV, if there is one.
        seed: seed of the validation split.
        class_colors: for color (RGB) masks, ``{(r, g, b): name}`` (``None`` = ignore);
            see :mod:`autoseg.labels.colors`.

    Returns:
        (train table, validation table, problem).

    Raises:
        DataValidationError: Problems in the rows of either table; too few classes.
        SettingsError: Malformed ``class_colors``, inconsistent class names or problem type.

    Warns:
        AutosegWarning: Label traps (see :mod:`autoseg.data.traps`), before any model is
            built: empty or full masks, grey-level masks read as multi-class, duplicate
            rows, unlabelled validation masks, too few images.

    """
    colors = ColorTable.from_mapping(class_colors) if class_colors is not None else None
    collector = MaskValueCollector(problem_type, colors)
    tables, summaries = _load_checked((train_data, tuning_data), image_col, label_col, collector)
    names = class_names or (
        read_class_names(train_data)
        if isinstance(train_data, str | Path) and colors is None
        else None
    )
    problem = collector.problem(names)
    traps.warn_duplicates(tables[0])
    if len(tables) == 2:
        train, val = tables
        traps.warn_duplicates(val, "tuning")
        traps.warn_tuning_overlap(train, val)
    else:
        train, val = split_validation(tables[0], seed)
    _warn_label_traps(tables[0], train, val, summaries, problem, problem_type)
    return train, val, problem


def _load_checked(
    datasets: tuple[Any, Any], image_col: str, label_col: str, collector: MaskValueCollector
) -> tuple[list[pd.DataFrame], list[dict[Any, frozenset[int]]]]:
    """Load and check the given tables, summarising each passing mask; one error for all."""
    tables: list[pd.DataFrame] = []
    summaries: list[dict[Any, frozenset[int]]] = []
    problems: list[str] = []
    for data in datasets:
        if data is None:
            continue
        found: dict[Any, frozenset[int]] = {}
        try:
            table = load_table(data, image_col, label_col, require_labels=True)
            validate_table(table, True, collector, on_mask=partial(_record, collector, found))
            tables.append(table)
            summaries.append(found)
        except DataValidationError as error:
            problems.extend(error.problems)
    if problems:
        raise DataValidationError(problems)
    return tables, summaries


def _record(
    collector: MaskValueCollector, found: dict[Any, frozenset[int]], index: Any, mask: Any
) -> None:
    found[index] = collector.labels_of(mask)


def _warn_label_traps(
    table: pd.DataFrame,
    train: pd.DataFrame,
    val: pd.DataFrame,
    summaries: list[dict[Any, frozenset[int]]],
    problem: Problem,
    problem_type: str,
) -> None:
    """Warn about data that trains without error but likely not as the user meant."""
    traps.warn_few_images(train)
    if problem.is_binary:
        traps.warn_empty_or_full(table, summaries[0])
        return
    if problem.colors is None and problem_type == "auto":
        traps.warn_ignore_values(table, summaries[0], problem.classes)
    traps.warn_unlabelled_validation(val, summaries[-1])


def split_validation(table: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out a seeded 10% of the images (at least one) for validation.

    Rows are grouped by image, so an image listed twice is never on both sides. A
    single-image table validates on its training image: there is nothing else.
    """
    groups, images = pd.factorize(table["image"])
    if len(images) == 1:
        return table, table
    count = max(1, round(VALIDATION_FRACTION * len(images)))
    order = np.random.default_rng(seed).permutation(len(images))
    held_out = np.isin(groups, order[:count])
    return table[~held_out], table[held_out]


def prepare_prediction_table(
    data: Any, image_col: str = "image", label_col: str = "label"
) -> pd.DataFrame:
    """Table of images to predict, every file checked to exist and decode.

    A label column, when the data has one, is kept (unchecked) so that outputs can be kept
    off the masks too.
    """
    table = load_table(data, image_col=image_col, label_col=label_col, require_labels=False)
    validate_table(table, require_labels=False)
    return table


def prepare_evaluation_table(
    data: Any, image_col: str, label_col: str, problem: Problem
) -> pd.DataFrame:
    """Table of images with masks, masks checked against the trained problem's classes."""
    table = load_table(data, image_col, label_col, require_labels=True)
    validate_table(table, require_labels=True, check_values=check_with(problem.target))
    return table
