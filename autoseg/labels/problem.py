"""What is being predicted: binary or multi-class, which mask values, which class names."""

from __future__ import annotations

import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from autoseg.data.findings import DataValidationError
from autoseg.errors import AutosegWarning, SettingsError
from autoseg.labels.colors import ColorTable
from autoseg.labels.masks import (
    IGNORE_INDEX,
    MaskFormatError,
    as_single_channel,
    binary_target,
    distinct_values,
    encode_multiclass,
    is_binary_values,
)
from autoseg.metrics import BINARY_METRICS, MULTICLASS_METRICS, Scorer

PROBLEM_TYPES = ("auto", "binary", "multiclass")


@dataclass(frozen=True)
class Problem:
    """The label space a predictor was trained on.

    Attributes:
        problem_type: ``binary`` or ``multiclass``.
        classes: the original mask values, in class-id order (binary: ``(0, 1)``; color
            masks: ``(0, .., K-1)``, as colors do not fit a uint8 id mask).
        class_names: one readable name per class.
        colors: for color (RGB) masks, the color-to-class table from ``class_colors``.

    It owns the policy that follows from the label space: binary or not, the number of
    outputs, the default metric, the metric names and the scorer.

    Example:
        >>> problem = Problem("multiclass", classes=(0, 3, 7), class_names=("bg", "a", "b"))
        >>> problem.to_original(np.array([[0, 2]])).tolist()
        [[0, 7]]
        >>> problem.is_binary, problem.num_outputs, problem.default_metric
        (False, 3, 'miou')

    """

    problem_type: str
    classes: tuple[int, ...]
    class_names: tuple[str, ...] = field(default=())
    colors: ColorTable | None = None

    @property
    def is_binary(self) -> bool:
        """One foreground class against the background (one sigmoid output)."""
        return self.problem_type == "binary"

    @property
    def num_outputs(self) -> int:
        """Logit maps the model produces: 1 for binary (sigmoid), K for multi-class."""
        return 1 if self.is_binary else len(self.classes)

    @property
    def default_metric(self) -> str:
        """The validation metric when none is given: ``iou`` (binary) or ``miou``."""
        return "iou" if self.is_binary else "miou"

    @property
    def metric_names(self) -> tuple[str, ...]:
        """Every metric ``evaluate`` reports for this problem."""
        if self.is_binary:
            return tuple(BINARY_METRICS)
        names = self.class_names or tuple(str(k) for k in range(len(self.classes)))
        return (*MULTICLASS_METRICS, *(f"iou/{name}" for name in names))

    def new_scorer(self, metrics: Sequence[str] | None = None) -> Scorer:
        """A fresh scorer of predictions against targets for ``metrics`` (``None``: all)."""
        return Scorer(self.num_outputs, metrics, self.class_names or None)

    def target(self, raw_mask: np.ndarray) -> np.ndarray:
        """Turn a raw mask into class ids 0..K-1 with 255 = ignore."""
        if self.colors is not None:
            return self.colors.encode(raw_mask)
        if self.is_binary:
            return binary_target(raw_mask)
        return encode_multiclass(raw_mask, self.classes)

    def to_original(self, ids: np.ndarray) -> np.ndarray:
        """Map contiguous class ids back to the user's original mask values."""
        if self.is_binary:
            return ids.astype(np.uint8)
        lookup = np.asarray(self.classes, dtype=np.uint8)
        return lookup[ids]

    def to_dict(self) -> dict[str, Any]:
        """Plain data for config.yaml (colors as ``[r, g, b, class_id]`` lists)."""
        values: dict[str, Any] = {
            "problem_type": self.problem_type,
            "classes": [int(c) for c in self.classes],
            "class_names": list(self.class_names),
        }
        if self.colors is not None:
            values["class_colors"] = [list(entry) for entry in self.colors.entries]
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Problem:
        """Inverse of :meth:`to_dict`."""
        names = tuple(values["class_names"])
        colors = values.get("class_colors")
        table = ColorTable.from_entries(colors, names) if colors else None
        return cls(values["problem_type"], tuple(values["classes"]), names, table)


class MaskValueCollector:
    """Mask check used during validation that also records each mask's distinct values.

    Validation reads every mask once anyway; collecting the values there means class
    discovery costs no second pass over the files.

    Args:
        problem_type: ``auto``, ``binary`` or ``multiclass``.
        colors: the checked ``class_colors`` table for color (RGB) masks, or ``None``.

    """

    def __init__(self, problem_type: str, colors: ColorTable | None = None) -> None:
        if problem_type not in PROBLEM_TYPES:
            raise SettingsError(
                f"problem_type must be one of {PROBLEM_TYPES}, got {problem_type!r}"
            )
        if colors is not None and problem_type == "binary":
            raise SettingsError(
                "class_colors describes a multi-class problem (one output per class); use "
                "problem_type='auto' or 'multiclass' with it"
            )
        self.problem_type = problem_type
        self.colors = colors
        self.values: set[int] = set()
        self.binary_sets: list[set[int]] = []
        self._lock = threading.Lock()

    def __call__(self, mask: np.ndarray) -> str | None:
        """Return a problem description for an illegal mask, else ``None``."""
        try:
            if self.colors is not None:
                self.colors.encode(mask)  # names any color missing from class_colors
                return None
            # names the colors of a real color mask, and non-integer float values
            values = distinct_values(as_single_channel(mask))
        except MaskFormatError as err:
            return str(err)
        bad = sorted(v for v in values if not 0 <= v <= IGNORE_INDEX)
        if bad:
            return (
                f"has values {bad[:10]} outside 0..255; masks must hold 8-bit class ids "
                "(0..254, 255 = ignore), or 0/1 or 0/255 for binary tasks"
            )
        if self.problem_type == "binary" and not is_binary_values(values):
            found = sorted(values)[:10]
            return (
                f"has values {found}, but a binary mask must hold only 0/255 or 0/1; "
                "use problem_type='multiclass' for class-id masks"
            )
        with self._lock:
            self.values |= values
            self.binary_sets.append(values)
        return None

    def labels_of(self, mask: np.ndarray) -> frozenset[int]:
        """Distinct values of a mask that passed the check (color masks: class ids)."""
        if self.colors is not None:
            return frozenset(int(v) for v in np.unique(self.colors.encode(mask)))
        return frozenset(distinct_values(as_single_channel(mask)))

    def problem(self, class_names: Sequence[str] | None = None) -> Problem:
        """Decide the problem from everything collected (call after validation)."""
        if self.colors is not None:
            names = self.colors.class_names
            if class_names and tuple(class_names) != names:
                raise SettingsError(
                    f"class_names {list(class_names)} differ from the names in class_colors "
                    f"{list(names)}; with class_colors, name the classes there only"
                )
            return Problem("multiclass", tuple(range(len(names))), names, self.colors)
        is_binary = all(is_binary_values(v) for v in self.binary_sets)
        # more than two names (e.g. classes.txt) says multi-class even if a subset looks binary
        is_binary = is_binary and not (class_names and len(class_names) > 2)
        if self.problem_type == "binary" or (self.problem_type == "auto" and is_binary):
            names = tuple(class_names) if class_names else ("background", "foreground")
            return Problem("binary", (0, 1), _check_names(names, 2))
        classes = tuple(sorted(self.values - {IGNORE_INDEX}))
        if len(classes) < 2:
            why = (
                f" (multi-class because {len(class_names)} class names were given; give two "
                "names for a binary task)"
                if class_names and self.problem_type == "auto"
                else ""
            )
            raise DataValidationError(
                [
                    f"multi-class training needs at least 2 classes; the masks hold only "
                    f"{list(classes)} (255 = ignore){why}. Check that the masks hold their "
                    "classes, or for 0/255 foreground masks use problem_type='binary' or 'auto'"
                ],
                header="The masks cannot be used:",
            )
        classes, names = _classes_and_names(classes, class_names)
        return Problem("multiclass", classes, names)


def _classes_and_names(
    found: tuple[int, ...], names: Sequence[str] | None
) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """Classes and their names from the values found and the names given, if any.

    Names are either one per found value (in sorted-value order), or a legend indexed by mask
    value (``classes.txt`` style: line ``k`` names value ``k``). A legend declares the whole
    label space, so its classes are ``0..N-1`` even when some never occur in the training
    masks: test masks that hold them must still be scorable.
    """
    if not names:
        return found, tuple(str(c) for c in found)
    if len(names) > len(found) and max(found) < len(names) <= IGNORE_INDEX:
        unseen = [f"{k} ({names[k]})" for k in range(len(names)) if k not in found]
        warnings.warn(
            f"no training mask holds {', '.join(unseen)}, named in the class names; the "
            "model cannot learn to predict what it never saw. Add training images that show "
            "them, or drop their names",
            AutosegWarning,
            stacklevel=3,
        )
        return tuple(range(len(names))), tuple(names)
    return found, _check_names(tuple(names), len(found))


def _check_names(names: tuple[str, ...], expected: int) -> tuple[str, ...]:
    if len(names) != expected:
        raise SettingsError(
            f"got {len(names)} class names for {expected} classes: {list(names)}. Give one "
            "name per class, in class-id order (or fix classes.txt beside the CSV)"
        )
    return names


def read_class_names(csv_path: str | Path | None) -> list[str] | None:
    """Read ``classes.txt`` (one name per line, in id order) beside a CSV, if present."""
    if csv_path is None:
        return None
    candidate = Path(csv_path).parent / "classes.txt"
    if not candidate.is_file():
        return None
    return [line.strip() for line in candidate.read_text().splitlines() if line.strip()]
