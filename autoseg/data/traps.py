"""Warnings about label traps: data that trains without error but not as the user meant.

Each trap is a Python warning (:class:`~autoseg.errors.AutosegWarning`), raised whatever the
verbosity and before any model is built. Each message names the rows or files concerned (a
few, then "and N more") and says how to fix the data, or how to say that it is meant.

The mask summaries these checks read are each passing mask's distinct values (class ids for
color masks), collected during validation, keyed by row index.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from typing import Any

import pandas as pd

from autoseg.data.findings import row_name, some
from autoseg.errors import AutosegWarning
from autoseg.labels.masks import IGNORE_INDEX

MIN_TRAINING_IMAGES = 5
"""Fewer distinct training images than this draws a warning."""

Summaries = Mapping[Any, frozenset[int]]


def _warn(message: str) -> None:
    warnings.warn(message, AutosegWarning, stacklevel=4)


def _short(path: str) -> str:
    """A path relative to the current directory when it lies below it."""
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return path
    return path if relative.startswith("..") else relative


def _rows(table: pd.DataFrame, indices: list[Any]) -> str:
    return some(row_name(table, index) for index in indices)


def warn_duplicates(table: pd.DataFrame, what: str = "training") -> None:
    """Warn about rows that list an image more than once (same or different mask)."""
    repeated = table[table["image"].duplicated(keep=False)]
    if repeated.empty:
        return
    same, conflicting = [], []
    for image, group in repeated.groupby("image", sort=False):
        listed = f"{_rows(table, list(group.index))} ({_short(str(image))})"
        labels = group["label"] if "label" in group else pd.Series(dtype=object)
        (conflicting if labels.nunique() > 1 else same).append(listed)
    if same:
        _warn(
            f"the {what} data lists {len(same)} image(s) more than once with the same mask: "
            f"{some(same)}. Duplicates count twice in training; remove the repeated rows. "
            "(autoseg keeps them, and never splits one image across training and validation.)"
        )
    if conflicting:
        _warn(
            f"the {what} data lists {len(conflicting)} image(s) more than once with "
            f"different masks: {some(conflicting)}. The model gets contradicting targets; "
            "keep one row (one mask) per image"
        )


def warn_tuning_overlap(train: pd.DataFrame, val: pd.DataFrame) -> None:
    """Warn when validation (tuning_data) rows use images that are also in training."""
    shared = val[val["image"].isin(set(train["image"]))]
    if shared.empty:
        return
    files = some(_short(p) for p in dict.fromkeys(shared["image"]))
    _warn(
        f"{len(shared)} tuning_data row(s) use images that are also in the training data: "
        f"{_rows(val, list(shared.index))} ({files}). Validation scores on seen images are "
        "optimistic and pick the wrong epoch; remove them from one of the two tables"
    )


def warn_few_images(train: pd.DataFrame) -> None:
    """Warn when there are fewer than :data:`MIN_TRAINING_IMAGES` distinct training images."""
    count = train["image"].nunique()
    if count >= MIN_TRAINING_IMAGES:
        return
    files = some(_short(p) for p in dict.fromkeys(train["image"]))
    _warn(
        f"only {count} training image(s) ({files}), after holding out validation: too few to "
        f"learn from or to validate on. Give at least {MIN_TRAINING_IMAGES} (better dozens) "
        "images with masks"
    )


def warn_empty_or_full(table: pd.DataFrame, summaries: Summaries) -> None:
    """Warn when every binary training mask is all background, or all foreground."""
    values = [summaries[i] for i in table.index if i in summaries]
    if not values or len(values) != len(table):
        return
    masks = some(_short(p) for p in dict.fromkeys(table["label"]))
    if all(v <= {0} for v in values):
        _warn(
            f"every training mask is empty (all 0 = background): {masks}. The model can only "
            "learn to predict background. Check the mask export: foreground must be 255 (or 1)"
        )
    elif all(0 not in v for v in values):
        _warn(
            f"every training mask is entirely foreground (no 0 pixel): {masks}. The model "
            "can only learn to predict foreground. Check for inverted or blank masks: "
            "background must be 0"
        )


def _grey_levels(classes: tuple[int, ...]) -> bool:
    """Whether the classes and 255 are evenly spread over 0..255, like {0, 128, 255}.

    Such masks were saved as grey levels (one level per class, 255 the last), not as class
    ids with 255 = ignore.
    """
    step = IGNORE_INDEX / len(classes)
    return step > 2 and all(abs(v - k * step) <= 2 for k, v in enumerate(sorted(classes)))


def warn_ignore_values(table: pd.DataFrame, summaries: Summaries, classes: tuple[int, ...]) -> None:
    """Warn when ``auto`` made grey-level masks ({0, 128, 255}) multi-class, 255 ignored."""
    if not _grey_levels(classes):
        return  # class ids with 255 = ignore (e.g. 0..K-1): the documented convention
    holding = [i for i in table.index if IGNORE_INDEX in summaries.get(i, ())]
    if not holding:
        return
    masks = some(_short(str(table.at[i, "label"])) for i in holding)
    found = sorted(classes) + [IGNORE_INDEX]
    _warn(
        f"the masks hold values {found} (255 in {masks}): with problem_type='auto' this "
        f"is a multi-class problem with classes {list(classes)}, and 255 is treated as "
        "ignore (left out of training and scoring). If 255 is a real class, re-save the "
        "masks with class ids 0..K-1; if the masks are binary (e.g. 128 = foreground), remap "
        "them to 0/255 or 0/1; if this is meant, pass problem_type='multiclass'"
    )


def warn_unlabelled_validation(val: pd.DataFrame, summaries: Summaries) -> None:
    """Warn when no validation mask has a labelled (non-ignore) pixel."""
    values = [summaries.get(i) for i in val.index]
    if any(v is None or v - {IGNORE_INDEX} for v in values):
        return
    masks = some(_short(p) for p in dict.fromkeys(val["label"]))
    _warn(
        f"no validation mask has a labelled pixel (all are 255 = ignore): {masks}. No "
        "validation score can be computed (best_val_* stays None) and the best epoch cannot "
        "be picked. Give tuning_data with labelled masks, or fix these masks"
    )
