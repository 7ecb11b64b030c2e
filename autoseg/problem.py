"""What is being predicted: binary or multi-class, which mask values, which class names."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from autoseg.data.masks import binary_target, encode_multiclass
from autoseg.training.losses import IGNORE_INDEX

PROBLEM_TYPES = ("auto", "binary", "multiclass")
BINARY_VALUE_SETS = ({0, 1}, {0, 255})


@dataclass(frozen=True)
class Problem:
    """The label space a predictor was trained on.

    Attributes:
        problem_type: ``binary`` or ``multiclass``.
        classes: the original mask values, in class-id order (binary: ``(0, 1)``).
        class_names: one readable name per class.

    Example:
        >>> problem = Problem("multiclass", classes=(0, 3, 7), class_names=("bg", "a", "b"))
        >>> problem.to_original(np.array([[0, 2]])).tolist()
        [[0, 7]]

    """

    problem_type: str
    classes: tuple[int, ...]
    class_names: tuple[str, ...] = field(default=())

    @property
    def num_outputs(self) -> int:
        """Logit maps the model produces: 1 for binary (sigmoid), K for multi-class."""
        return 1 if self.problem_type == "binary" else len(self.classes)

    def target(self, raw_mask: np.ndarray) -> np.ndarray:
        """Turn a raw mask into class ids 0..K-1 with 255 = ignore."""
        if self.problem_type == "binary":
            return binary_target(raw_mask)
        return encode_multiclass(raw_mask, self.classes)

    def to_original(self, ids: np.ndarray) -> np.ndarray:
        """Map contiguous class ids back to the user's original mask values."""
        if self.problem_type == "binary":
            return ids.astype(np.uint8)
        lookup = np.asarray(self.classes, dtype=np.uint8)
        return lookup[ids]

    def to_dict(self) -> dict[str, Any]:
        """Plain data for config.yaml."""
        return {
            "problem_type": self.problem_type,
            "classes": [int(c) for c in self.classes],
            "class_names": list(self.class_names),
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Problem:
        """Inverse of :meth:`to_dict`."""
        return cls(values["problem_type"], tuple(values["classes"]), tuple(values["class_names"]))


class MaskValueCollector:
    """Mask check used during validation that also records each mask's distinct values.

    Validation reads every mask once anyway; collecting the values there means class
    discovery costs no second pass over the files.
    """

    def __init__(self, problem_type: str) -> None:
        if problem_type not in PROBLEM_TYPES:
            raise ValueError(f"problem_type must be one of {PROBLEM_TYPES}, got {problem_type!r}")
        self.problem_type = problem_type
        self.values: set[int] = set()
        self.binary_sets: list[set[int]] = []
        self._lock = threading.Lock()

    def __call__(self, mask: np.ndarray) -> str | None:
        """Return a problem description for an illegal mask, else ``None``."""
        if mask.ndim == 3:
            if not (
                np.array_equal(mask[..., 0], mask[..., 1])
                and np.array_equal(mask[..., 0], mask[..., 2])
            ):
                return (
                    "is a colour (RGB) mask; save class ids as a single-channel PNG "
                    "(0..K-1, 255 = ignore) or pass class_colors"
                )
            mask = mask[..., 0]
        if mask.dtype == bool:
            mask = mask.astype(np.uint8)
        if not np.issubdtype(mask.dtype, np.integer) or mask.min() < 0 or mask.max() > 255:
            return "has values outside 0..255; use 8-bit class ids (255 = ignore)"
        values = {int(v) for v in np.flatnonzero(np.bincount(mask.ravel().astype(np.int64)))}
        if self.problem_type == "binary" and not any(values <= s for s in BINARY_VALUE_SETS):
            found = sorted(values)[:10]
            return (
                f"has values {found}, but a binary mask must hold only 0/255 or 0/1; "
                "use problem_type='multiclass' for class-id masks"
            )
        with self._lock:
            self.values |= values
            self.binary_sets.append(values)
        return None

    def problem(self, class_names: Sequence[str] | None = None) -> Problem:
        """Decide the problem from everything collected (call after validation)."""
        is_binary = all(any(v <= s for s in BINARY_VALUE_SETS) for v in self.binary_sets)
        if self.problem_type == "binary" or (self.problem_type == "auto" and is_binary):
            names = tuple(class_names) if class_names else ("background", "foreground")
            return Problem("binary", (0, 1), _check_names(names, 2))
        classes = tuple(sorted(self.values - {IGNORE_INDEX}))
        if len(classes) < 2:
            raise ValueError(
                f"Multi-class training needs at least 2 classes; masks hold {classes}."
            )
        return Problem("multiclass", classes, _names_for(classes, class_names))


def _names_for(classes: tuple[int, ...], names: Sequence[str] | None) -> tuple[str, ...]:
    """Names given per class, or a legend indexed by mask value (like ``classes.txt``)."""
    if not names:
        return tuple(str(c) for c in classes)
    if len(names) != len(classes) and max(classes) < len(names):
        return tuple(names[c] for c in classes)
    return _check_names(tuple(names), len(classes))


def _check_names(names: tuple[str, ...], expected: int) -> tuple[str, ...]:
    if len(names) != expected:
        raise ValueError(f"Got {len(names)} class names for {expected} classes: {list(names)}")
    return names


def read_class_names(csv_path: str | Path | None) -> list[str] | None:
    """Read ``classes.txt`` (one name per line, in id order) beside a CSV, if present."""
    if csv_path is None:
        return None
    candidate = Path(csv_path).parent / "classes.txt"
    if not candidate.is_file():
        return None
    return [line.strip() for line in candidate.read_text().splitlines() if line.strip()]
