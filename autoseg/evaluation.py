"""``evaluate``: metrics at the original mask resolution, per image, then averaged.

Validation during a fit scores the same way (see :class:`OriginalSizeScorer`), so the epoch
that is kept is the best one by the number ``evaluate`` reports.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from autoseg.data.io import read_mask
from autoseg.data.transforms import ResizeInfo, restored_probabilities
from autoseg.errors import SettingsError
from autoseg.inference import iter_probabilities
from autoseg.labels.problem import Problem
from autoseg.models.segmenter import SamSegmenter
from autoseg.runtime import Runtime
from autoseg.tiling import TileSettings


def check_metric_names(problem: Problem, metrics: Sequence[str] | None) -> None:
    """Reject metric names that do not exist for this problem type.

    Raises:
        SettingsError: ``metrics`` is a single string, empty, or names unknown metrics; the
            message lists the valid names.

    """
    valid = list(problem.metric_names)
    if isinstance(metrics, str) or (metrics is not None and not metrics):
        raise SettingsError(
            f"metrics must be None (all) or a non-empty list of names such as {valid[:2]}, "
            f"got {metrics!r}; choose from {valid}."
        )
    unknown = [m for m in metrics or [] if m not in valid]
    if unknown:
        raise SettingsError(
            f"Unknown metric(s) {unknown} for a {problem.problem_type} problem; "
            f"choose from {valid}."
        )


def evaluate_model(
    model: SamSegmenter,
    problem: Problem,
    table: pd.DataFrame,
    metrics: Sequence[str] | None,
    runtime: Runtime,
    *,
    batch_size: int = 4,
    tiling: TileSettings | None = None,
    say: Callable[[str], None] | None = None,
) -> dict[str, float]:
    """Predict every image of ``table`` (columns ``image``, ``label``) and score it.

    Args:
        model: the trained segmenter.
        problem: its label space (it converts the masks and makes the scorer).
        table: the prepared evaluation table.
        metrics: metric names (checked with :func:`check_metric_names`); ``None``: all.
        runtime: where and at which precision to run (see :func:`iter_probabilities`).
        batch_size: images (or windows, when tiled) per forward pass.
        tiling: predict in overlapping windows (see :class:`~autoseg.tiling.TileSettings`).
        say: where ``tile="auto"`` tells how many images it tiles.

    Returns:
        Each metric averaged over the images.

    """
    check_metric_names(problem, metrics)
    probabilities = iter_probabilities(
        model, table, runtime, batch_size=batch_size, tiling=tiling, say=say
    )
    scorer = problem.new_scorer(metrics)
    for prob, label in zip(probabilities, table["label"], strict=True):
        scorer.update(prob, problem.target(read_mask(label)))
    return scorer.compute()


class OriginalSizeScorer:
    """Scores model-resolution logits of table rows at each row's original mask size.

    The logits of each image are mapped back to its original size (padding cropped, then
    bilinear resizing, as :func:`~autoseg.inference.iter_probabilities` does), turned into
    probabilities and scored against the original mask by the problem's scorer, exactly as
    :func:`evaluate_model` does. Targets read from disk are kept in memory up to
    ``cache_bytes``, so later validation passes do not read them again.

    Args:
        problem: the label space (it converts the masks and makes the scorer).
        labels: the mask path of each table row, by row position.
        metrics: metric names for the scorer (``None``: all).
        cache_bytes: cap on the targets kept in memory; 0 reads them every time.

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> mask = np.zeros((30, 40), np.uint8)
        >>> mask[:, :20] = 255  # the left half is foreground
        >>> path = f"{tempfile.mkdtemp()}/mask.png"
        >>> Image.fromarray(mask).save(path)
        >>> scorer = OriginalSizeScorer(Problem("binary", (0, 1)), [path], ["iou"])
        >>> logits = torch.full((1, 1, 64, 64), -5.0)  # a 30x40 image padded to 64x64
        >>> logits[..., :32] = 5.0  # foreground on the left half of the resized 48x64
        >>> scorer.update(logits, torch.tensor([0]), torch.tensor([[48, 64]]))
        >>> scorer.compute()
        {'iou': 1.0}

    """

    def __init__(
        self,
        problem: Problem,
        labels: Sequence[str],
        metrics: Sequence[str] | None = None,
        cache_bytes: int = 256 << 20,
    ) -> None:
        self.problem = problem
        self.labels = [str(label) for label in labels]
        self.metrics = None if metrics is None else list(metrics)
        self.cache_bytes = int(cache_bytes)
        self._targets: dict[int, np.ndarray] = {}
        self._cached_bytes = 0
        self._scorer = problem.new_scorer(self.metrics)

    def reset(self) -> None:
        """Start a new pass (the cached targets stay)."""
        self._scorer = self.problem.new_scorer(self.metrics)

    def target(self, index: int) -> np.ndarray:
        """Class ids (255 = ignore) of row ``index`` at its original size."""
        target = self._targets.get(index)
        if target is None:
            target = self.problem.target(read_mask(self.labels[index]))
            if self._cached_bytes + target.nbytes <= self.cache_bytes:
                self._targets[index] = target
                self._cached_bytes += target.nbytes
        return target

    def update(self, logits: torch.Tensor, indices: torch.Tensor, resized_hw: torch.Tensor) -> None:
        """Add a batch: logits (B, K, S, S), table rows (B,), valid sizes (B, 2)."""
        size = int(logits.shape[-1])
        for item_logits, index, resized in zip(logits, indices, resized_hw, strict=True):
            target = self.target(int(index))
            info = ResizeInfo(target.shape[:2], tuple(resized.tolist()), size)
            self._scorer.update(restored_probabilities(item_logits, info), target)

    def compute(self) -> dict[str, float]:
        """The scores over every image added since the last :meth:`reset`."""
        return self._scorer.compute()
