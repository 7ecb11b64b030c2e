"""Per-image metrics for binary (foreground / background) segmentation.

Every function takes ``pred``, a float map of foreground probabilities in ``[0, 1]``
with shape ``(H, W)``, and ``gt``, a boolean mask of the same shape, and returns a
Python ``float`` for that one image. Dataset scores are means over images (see
:class:`BinaryMetricAccumulator`), which is how the salient-object / medical
segmentation literature (and the Conv-LoRA paper) reports them.

The structure measure, the mean E-measure and the weighted F-measure follow the
reference MATLAB code of their authors as re-implemented by ``pysodmetrics``
(``normalize=False`` mode); the test-suite checks agreement to 1e-6.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import ndimage

# The reference MATLAB implementations add MATLAB's ``eps`` (2.2e-16) to denominators; using the
# same constant keeps our scores identical to theirs, not merely close.
_EPS = float(np.spacing(1))


def _check_inputs(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Convert ``pred`` to float64 and ``gt`` to bool, validating shape and range.

    Args:
        pred: Foreground probabilities, shape ``(H, W)``, values in ``[0, 1]``.
        gt: Ground-truth mask, shape ``(H, W)``; any non-zero value is foreground.

    Returns:
        The converted ``(pred, gt)`` pair.

    Raises:
        ValueError: If the shapes differ, are not 2-D, are empty, or ``pred`` leaves ``[0, 1]``.

    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt).astype(bool, copy=False)
    if pred.ndim != 2 or pred.shape != gt.shape:
        raise ValueError(
            f"pred and gt must be 2-D with equal shapes, got {pred.shape} and {gt.shape}"
        )
    if pred.size == 0:
        raise ValueError("pred and gt must not be empty")
    # Phrased so that NaN fails too: logits or raw scores would silently skew every metric.
    if not (pred.min() >= 0.0 and pred.max() <= 1.0):
        raise ValueError("pred must hold probabilities in [0, 1] (apply a sigmoid to logits first)")
    return pred, gt


def _confusion(pred: np.ndarray, gt: np.ndarray, threshold: float) -> tuple[int, int, int, int]:
    """Return ``(tp, fp, fn, tn)`` pixel counts of ``pred >= threshold`` against ``gt``."""
    pred, gt = _check_inputs(pred, gt)
    binary = pred >= threshold
    tp = int(np.count_nonzero(binary & gt))
    fp = int(np.count_nonzero(binary & ~gt))
    fn = int(np.count_nonzero(~binary & gt))
    tn = gt.size - tp - fp - fn
    return tp, fp, fn, tn


def iou(pred: np.ndarray, gt: np.ndarray, threshold: float = 0.5) -> float:
    """Intersection over union ``TP / (TP + FP + FN)`` of ``pred >= threshold``.

    1.0 when mask and prediction are both empty: correctly predicting nothing is perfect.
    """
    tp, fp, fn, _ = _confusion(pred, gt, threshold)
    union = tp + fp + fn
    return 1.0 if union == 0 else tp / union


def dice(pred: np.ndarray, gt: np.ndarray, threshold: float = 0.5) -> float:
    """Dice (F1) ``2 TP / (2 TP + FP + FN)`` of ``pred >= threshold``; 1.0 when both are empty."""
    tp, fp, fn, _ = _confusion(pred, gt, threshold)
    denominator = 2 * tp + fp + fn
    return 1.0 if denominator == 0 else 2 * tp / denominator


def ber(pred: np.ndarray, gt: np.ndarray, threshold: float = 0.5) -> float:
    """Balanced error rate of the thresholded prediction, in percent (lower is better).

    ``BER = 100 * (1 - (TP / N_pos + TN / N_neg) / 2)``. When the image has no positive pixels
    the true-positive rate is undefined, so only the true-negative rate is used
    (``100 * (1 - TN / N_neg)``), and symmetrically when it has no negative pixels. A perfect
    prediction therefore always scores 0. (``pysodmetrics``' ``BERHandler`` instead counts the
    undefined rate as 0, which puts every empty-mask image at 50% or worse.)
    """
    tp, fp, fn, tn = _confusion(pred, gt, threshold)
    n_pos, n_neg = tp + fn, tn + fp
    rates = []
    if n_pos:
        rates.append(tp / n_pos)
    if n_neg:
        rates.append(tn / n_neg)
    return 100.0 * (1.0 - sum(rates) / len(rates))


def mae(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean absolute error ``mean(|pred - gt|)`` of the probability map, in ``[0, 1]``."""
    pred, gt = _check_inputs(pred, gt)
    return float(np.mean(np.abs(pred - gt)))


def _object_similarity(values: np.ndarray) -> float:
    """Object-level similarity of one region's values to an ideal all-ones region."""
    mean = float(np.mean(values))
    # The sample std of a single pixel is undefined; the reference code treats it as 0.
    std = float(np.std(values, ddof=1)) if values.size > 1 else 0.0
    return 2.0 * mean / (mean**2 + 1.0 + std + _EPS)


def _ssim(pred: np.ndarray, gt: np.ndarray) -> float:
    """Single-window SSIM variant used by the S-measure's region term."""
    n = pred.size
    mean_p, mean_g = np.mean(pred), np.mean(gt)
    # Unbiased (co)variances as in the authors' code; EPS keeps one-pixel regions finite.
    var_p = np.sum((pred - mean_p) ** 2) / (n - 1 + _EPS)
    var_g = np.sum((gt - mean_g) ** 2) / (n - 1 + _EPS)
    cov = np.sum((pred - mean_p) * (gt - mean_g)) / (n - 1 + _EPS)
    numerator = 4 * mean_p * mean_g * cov
    denominator = (mean_p**2 + mean_g**2) * (var_p + var_g)
    if numerator != 0:
        return float(numerator / (denominator + _EPS))
    # 0/0 means two identical constant regions, which are perfectly similar.
    return 1.0 if denominator == 0 else 0.0


def _region_score(pred: np.ndarray, gt: np.ndarray) -> float:
    """Area-weighted SSIM over the four quadrants around the foreground centroid."""
    h, w = gt.shape
    rows, cols = np.nonzero(gt)
    # np.round rounds halves to even; pysodmetrics does the same, MATLAB's round does not. The +1
    # reproduces MATLAB's inclusive 1-based ``1:X`` split.
    cy = int(np.round(rows.mean())) + 1
    cx = int(np.round(cols.mean())) + 1
    score = 0.0
    for row_slice in (slice(0, cy), slice(cy, h)):
        for col_slice in (slice(0, cx), slice(cx, w)):
            part = pred[row_slice, col_slice]
            # A quadrant is empty when the centroid lies on the last row/column; it has no weight.
            if part.size:
                score += _ssim(part, gt[row_slice, col_slice]) * part.size / gt.size
    return score


def s_measure(pred: np.ndarray, gt: np.ndarray, alpha: float = 0.5) -> float:
    """Structure measure S_alpha (Fan et al., ICCV 2017) of the continuous map.

    Args:
        pred: Foreground probabilities, shape ``(H, W)``, in ``[0, 1]``.
        gt: Boolean ground-truth mask, shape ``(H, W)``.
        alpha: Weight of the object-aware term; ``1 - alpha`` weights the region-aware term.

    Returns:
        The score in ``[0, 1]`` (higher is better). With an empty mask it is ``1 - mean(pred)``,
        with an all-foreground mask ``mean(pred)``, as in the reference implementation.

    """
    pred, gt = _check_inputs(pred, gt)
    fg_ratio = float(np.mean(gt))
    if fg_ratio == 0:
        return float(1.0 - np.mean(pred))
    if fg_ratio == 1:
        return float(np.mean(pred))
    fg_term = fg_ratio * _object_similarity(pred[gt])
    bg_term = (1 - fg_ratio) * _object_similarity(1.0 - pred[~gt])
    object_score = fg_term + bg_term
    score = alpha * object_score + (1 - alpha) * _region_score(pred, gt)
    return float(max(0.0, score))


def _enhanced_alignment_sum(tp: np.ndarray, fp: np.ndarray, n_gt_fg: int, n: int) -> np.ndarray:
    """Sum of the enhanced-alignment matrix for binary maps, one value per threshold.

    For binary maps the matrix takes one value per (prediction, ground truth) pixel class, so the
    sum is four values weighted by the four confusion counts.
    """
    n_pred_fg = tp + fp
    fn = n_gt_fg - tp
    tn = n - n_pred_fg - fn
    pred_mean = n_pred_fg / n
    gt_mean = n_gt_fg / n
    total = np.zeros(tp.shape, dtype=np.float64)
    for pred_value, gt_value, count in ((1, 1, tp), (1, 0, fp), (0, 1, fn), (0, 0, tn)):
        a = pred_value - pred_mean
        b = gt_value - gt_mean
        alignment = 2 * a * b / (a**2 + b**2 + _EPS)
        total += (alignment + 1) ** 2 / 4 * count
    return total


def e_measure(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean enhanced-alignment measure E_phi (Fan et al., IJCAI 2018) over 256 thresholds.

    The map is quantised to levels ``floor(255 * pred)`` and binarised at every level
    ``t = 0..255`` (``level >= t``); the returned value is the mean of the 256 E-measures
    (pysodmetrics' ``get_results()["em"]["curve"].mean()``).

    Args:
        pred: Foreground probabilities, shape ``(H, W)``, in ``[0, 1]``.
        gt: Boolean ground-truth mask, shape ``(H, W)``.

    Returns:
        The mean E-measure (higher is better); the reference divides by ``H*W - 1``, so a
        perfect map can exceed 1 by ``1 / (H*W - 1)``. With an empty mask each threshold scores
        the fraction of predicted background, with a full mask the fraction of predicted
        foreground.

    """
    pred, gt = _check_inputs(pred, gt)
    levels = (pred * 255).astype(np.uint8)  # truncation, exactly as the reference quantises
    n = gt.size
    n_gt_fg = int(np.count_nonzero(gt))
    # Reversed cumulative histograms give, for every t at once, the pixel counts with level >= t.
    tp = np.cumsum(np.bincount(levels[gt], minlength=256)[::-1])[::-1]
    fp = np.cumsum(np.bincount(levels[~gt], minlength=256)[::-1])[::-1]
    if n_gt_fg == 0:
        total = n - (tp + fp)
    elif n_gt_fg == n:
        total = tp + fp
    else:
        total = _enhanced_alignment_sum(tp, fp, n_gt_fg, n)
    return float(np.mean(total / (n - 1 + _EPS)))


def _gaussian_kernel(size: int, sigma: float) -> np.ndarray:
    """Normalised square Gaussian kernel, like MATLAB's ``fspecial('gaussian', size, sigma)``."""
    half = (size - 1) / 2
    y, x = np.mgrid[-half : half + 1, -half : half + 1]
    kernel = np.exp(-(x**2 + y**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def weighted_f_measure(pred: np.ndarray, gt: np.ndarray, beta2: float = 0.3) -> float:
    """Weighted F-measure F^w_beta (Margolin et al., CVPR 2014) of the continuous map.

    Args:
        pred: Foreground probabilities, shape ``(H, W)``, in ``[0, 1]``.
        gt: Boolean ground-truth mask, shape ``(H, W)``.
        beta2: ``beta**2``, the weight of precision relative to recall (0.3 as in the
            Conv-LoRA tables; pysodmetrics' ``WeightedFmeasure(beta=...)`` also means beta^2).

    Returns:
        The score in ``[0, 1]`` (higher is better); 0.0 when the mask is empty, as in the
        reference implementation (weighted recall is undefined there).

    """
    pred, gt = _check_inputs(pred, gt)
    if not gt.any():
        return 0.0
    dist, (near_y, near_x) = ndimage.distance_transform_edt(~gt, return_indices=True)
    error = np.abs(pred - gt)
    # Pixel dependency: a background pixel takes the error of its nearest foreground pixel so
    # that the blur below does not smear errors across the object boundary.
    dependent = error[near_y, near_x]
    smoothed = ndimage.convolve(dependent, _gaussian_kernel(7, 5.0), mode="constant", cval=0.0)
    error_min = np.where(gt & (smoothed < error), smoothed, error)
    # Pixel importance: background errors count more the farther they are from the object.
    importance = np.where(gt, 1.0, 2.0 - np.exp(np.log(0.5) / 5.0 * dist))
    weighted = error_min * importance
    recall = 1.0 - np.mean(weighted[gt])
    tp = np.count_nonzero(gt) - np.sum(weighted[gt])
    precision = tp / (tp + np.sum(weighted[~gt]) + _EPS)
    return float((1 + beta2) * recall * precision / (recall + beta2 * precision + _EPS))


BINARY_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "iou": iou,
    "dice": dice,
    "sm": s_measure,
    "em": e_measure,
    "wfm": weighted_f_measure,
    "mae": mae,
    "ber": ber,
}
"""Metric name -> per-image function, each called as ``fn(pred, gt)`` with default options."""

HIGHER_IS_BETTER: dict[str, bool] = {
    "iou": True,
    "dice": True,
    "sm": True,
    "em": True,
    "wfm": True,
    "mae": False,
    "ber": False,
}
"""Metric name -> whether a larger value is better (for model selection and reports)."""


class BinaryMetricAccumulator:
    """Averages per-image binary metrics over a dataset.

    Example:
        >>> acc = BinaryMetricAccumulator(["iou", "dice"])
        >>> gt = np.array([[1, 1, 0, 0]] * 4, bool)
        >>> acc.update(np.array([[0.9, 0.8, 0.2, 0.1]] * 4), gt)
        {'iou': 1.0, 'dice': 1.0}
        >>> acc.update(np.array([[0.9, 0.3, 0.7, 0.1]] * 4), gt)
        {'iou': 0.3333333333333333, 'dice': 0.5}
        >>> acc.compute()
        {'iou': 0.6666666666666666, 'dice': 0.75}

    """

    def __init__(self, metrics: Sequence[str] | None = None) -> None:
        """Choose the metrics to track.

        Args:
            metrics: Names from :data:`BINARY_METRICS`; ``None`` tracks all seven.

        Raises:
            ValueError: If ``metrics`` is empty or a name is not in :data:`BINARY_METRICS`.

        """
        names = list(BINARY_METRICS) if metrics is None else list(dict.fromkeys(metrics))
        if not names:
            raise ValueError(f"no metrics requested; valid names are {list(BINARY_METRICS)}")
        unknown = [name for name in names if name not in BINARY_METRICS]
        if unknown:
            raise ValueError(
                f"unknown binary metric(s) {unknown}; valid names are {list(BINARY_METRICS)}"
            )
        self.metrics: tuple[str, ...] = tuple(names)
        self.values: dict[str, list[float]] = {name: [] for name in self.metrics}

    def __len__(self) -> int:
        """Return the number of images seen so far."""
        return len(self.values[self.metrics[0]])

    def update(self, pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
        """Score one image and remember the scores.

        Args:
            pred: Foreground probabilities, shape ``(H, W)``, in ``[0, 1]``.
            gt: Boolean ground-truth mask, shape ``(H, W)``.

        Returns:
            This image's score for every tracked metric.

        """
        scores = {name: float(BINARY_METRICS[name](pred, gt)) for name in self.metrics}
        for name, value in scores.items():
            self.values[name].append(value)
        return scores

    def compute(self) -> dict[str, float]:
        """Mean of every tracked metric over the images seen so far.

        Returns:
            Metric name -> mean score.

        Raises:
            RuntimeError: If no image has been added yet.

        """
        if len(self) == 0:
            raise RuntimeError("BinaryMetricAccumulator.compute() called before any update()")
        return {name: float(np.mean(values)) for name, values in self.values.items()}
