"""Paired comparisons of two methods fitted with the same seeds: mean difference and interval."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class PairedDifference:
    """``a - b`` over paired runs: the mean and a two-sided paired Student-t interval.

    With one pair the interval is unknown (``nan``): a single seed says nothing about noise.

    Example:
        >>> d = paired_difference([0.80, 0.82, 0.81], [0.78, 0.79, 0.80])
        >>> round(d.mean, 3), d.pairs, d.low < d.mean < d.high
        (0.02, 3, True)

    """

    mean: float
    low: float
    high: float
    pairs: int
    confidence: float

    @property
    def significant(self) -> bool:
        """Whether the interval excludes zero."""
        return not (math.isnan(self.low) or self.low <= 0.0 <= self.high)

    def describe(self) -> str:
        """``+0.020 [+0.008, +0.032]`` (the interval at the stated confidence)."""
        if math.isnan(self.low):
            return f"{self.mean:+.3f} (one pair: no interval)"
        return f"{self.mean:+.3f} [{self.low:+.3f}, {self.high:+.3f}]"


def paired_difference(
    a: Sequence[float], b: Sequence[float], confidence: float = 0.95
) -> PairedDifference:
    """Mean of ``a[i] - b[i]`` with a paired t interval (``a`` and ``b`` share seed ``i``).

    Raises:
        ValueError: the sequences differ in length or are empty.

    """
    if len(a) != len(b) or not len(a):
        raise ValueError(f"paired scores need equal, non-zero lengths, got {len(a)} and {len(b)}")
    diffs = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    mean, n = float(diffs.mean()), len(diffs)
    if n < 2 or np.ptp(diffs) < 1e-12:
        # scipy gives nan for one pair; identical differences have a zero-width interval.
        spread = math.nan if n < 2 else 0.0
        return PairedDifference(mean, mean - spread, mean + spread, n, confidence)
    interval = stats.ttest_rel(a, b).confidence_interval(confidence)
    return PairedDifference(mean, float(interval.low), float(interval.high), n, confidence)
