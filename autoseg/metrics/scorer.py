"""One scorer for both problem kinds: per-image binary metrics or a dataset-level confusion."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from autoseg.metrics.binary import BinaryMetricAccumulator
from autoseg.metrics.multiclass import MulticlassMetricAccumulator


class Scorer:
    """Scores predictions against class-id targets (255 = ignore) over a data set.

    Binary problems (one output) average the per-image binary metrics; multi-class problems
    count one confusion matrix and report ``miou``, ``acc`` and ``iou/<class>``.

    Args:
        num_outputs: 1 for binary, K for K classes.
        metrics: the metrics to report (``None``: all).
        class_names: names for the per-class keys of a multi-class problem.

    Example:
        >>> scorer = Scorer(1, ["iou"])
        >>> scorer.update(np.array([[0.9, 0.2]]), np.array([[1, 0]]))
        >>> scorer.compute()
        {'iou': 1.0}

    """

    def __init__(
        self,
        num_outputs: int,
        metrics: Sequence[str] | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        self.metrics = None if metrics is None else list(metrics)
        self.class_names = None if class_names is None else list(class_names)
        self._binary = BinaryMetricAccumulator(metrics) if num_outputs == 1 else None
        self._multiclass = None if num_outputs == 1 else MulticlassMetricAccumulator(num_outputs)

    def update(self, scores: np.ndarray, target: np.ndarray) -> None:
        """Add one image.

        Args:
            scores: binary: (H, W) foreground probabilities; multi-class: (K, H, W) class
                scores (probabilities or logits: the arg-max is taken).
            target: (H, W) class ids, 255 = ignore.

        """
        if self._binary is not None:
            self._binary.update(scores, target == 1)
        else:
            self._multiclass.update(scores.argmax(axis=0).astype(np.int64), target)

    def compute(self) -> dict[str, float]:
        """The scores over every image added."""
        if self._binary is not None:
            return self._binary.compute()
        results = self._multiclass.compute(class_names=self.class_names)
        if self.metrics:
            results = {k: v for k, v in results.items() if k in self.metrics}
        return results
