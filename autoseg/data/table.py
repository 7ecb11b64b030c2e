"""Loading and validating the table that lists image (and mask) files.

A table is a pandas DataFrame with an ``image`` column and, for training and evaluation, a
``label`` column, both holding absolute path strings. :func:`load_table` builds one from a
CSV, a DataFrame, a list of images or a folder (:mod:`autoseg.data.sources`);
:func:`validate_table` checks every row (:mod:`autoseg.data.checks`) and reports all
problems at once, so users fix their data in one pass.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from autoseg.data.checks import (
    MaskCheck,
    RowCheck,
    check_mask_values,
    check_with,
    row_problems,
)
from autoseg.data.findings import DataValidationError, base_hint, fail, row_name
from autoseg.data.sources import load_table, missing_columns_error

__all__ = [
    "DataValidationError",
    "MaskCheck",
    "check_mask_values",
    "check_with",
    "load_table",
    "validate_table",
]


def _cell(value: Any) -> str:
    """Return a path cell as a string; missing values (NaN, None) become ``""``."""
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)


def default_workers() -> int:
    """Threads for reading files: decoders release the GIL, so threads run in parallel."""
    return min(8, (os.cpu_count() or 1) + 2)


def validate_table(
    table: pd.DataFrame,
    require_labels: bool = True,
    check_values: MaskCheck | None = None,
    max_workers: int | None = None,
    on_mask: Callable[[Any, np.ndarray], None] | None = None,
) -> None:
    """Check every row of a table and raise one error listing all problems.

    Per row: the files exist and are not empty; the image decodes completely (truncated
    and over-large files are found here, not during training); the mask decodes, has the
    image's size, and passes ``check_values``.

    Args:
        table: Output of :func:`load_table`.
        require_labels: Whether a ``label`` column must be present and checked.
        check_values: Returns None for a usable mask, else a message; defaults to
            :func:`check_mask_values`. With ``require_labels=False`` masks are not checked
            at all (prediction only needs the images).
        max_workers: Threads for reading files; defaults to ``min(8, cpu_count + 2)``.
        on_mask: Called as ``on_mask(index, mask)`` with each raw mask that passed every
            check (from the worker threads), e.g. to summarise the labels.

    Raises:
        DataValidationError: One line per problem, ``row <index>: <path>: <problem>``.

    """
    needed = ["image", "label"] if require_labels else ["image"]
    missing = [name for name in needed if name not in table.columns]
    if missing:
        raise missing_columns_error(table, missing)
    if len(table) == 0:
        raise fail("the table has no rows. Add one row per image")
    rules = RowCheck(check_values or check_mask_values, base_hint(table))
    labels = table["label"] if require_labels else [None] * len(table)
    rows = [
        (index, _cell(img), None if lab is None else _cell(lab))
        for index, img, lab in zip(table.index, table["image"], labels, strict=True)
    ]

    def check(row: tuple[Any, str, str | None]) -> list[tuple[str, str]]:
        index, image, label = row
        report = None if on_mask is None else partial(on_mask, index)
        return row_problems(image, label, rules, report)

    with ThreadPoolExecutor(max_workers=max_workers or default_workers()) as pool:
        results = list(pool.map(check, rows))
    problems = [
        f"{row_name(table, index)}: {path}: {message}"
        for (index, _, _), found in zip(rows, results, strict=True)
        for path, message in found
    ]
    if problems:
        raise DataValidationError(problems)
