"""Dataset-level metrics for multi-class semantic segmentation (mIoU, pixel accuracy).

Scores come from one confusion matrix accumulated over all images, the usual protocol for
CamVid / Cityscapes-style benchmarks, rather than from averaging per-image scores.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MULTICLASS_METRICS = ("miou", "acc")
"""The data-set-level multi-class scores (plus ``iou/<class>`` per class)."""


def _as_int_array(ids: np.ndarray, name: str) -> np.ndarray:
    """Return ``ids`` as an int64 array, rejecting non-integer label maps."""
    array = np.asarray(ids)
    if not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
        raise ValueError(f"{name} must hold integer class ids, got dtype {array.dtype}")
    return array.astype(np.int64, copy=False)


class MulticlassMetricAccumulator:
    """Accumulates a confusion matrix over images and reports mIoU and pixel accuracy.

    Rows of :attr:`confusion_matrix` are ground-truth classes, columns predicted classes.
    Pixels whose ground truth equals ``ignore_index`` (void) are skipped entirely, whatever was
    predicted there.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        """Create an empty accumulator.

        Args:
            num_classes: Number of classes; valid ids are ``0 .. num_classes - 1``.
            ignore_index: Ground-truth id of void pixels; must not be a valid class id.

        Raises:
            ValueError: If ``num_classes < 1`` or ``ignore_index`` is a valid class id.

        """
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        if 0 <= ignore_index < num_classes:
            # A class that is both scored and ignored would get one-sided (FP-only) counts.
            raise ValueError(
                f"ignore_index {ignore_index} collides with class ids 0..{num_classes - 1}"
            )
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self._confusion = np.zeros((num_classes, num_classes), dtype=np.int64)

    @property
    def confusion_matrix(self) -> np.ndarray:
        """Copy of the ``(num_classes, num_classes)`` pixel counts, rows = ground truth."""
        return self._confusion.copy()

    def update(self, pred_ids: np.ndarray, gt_ids: np.ndarray) -> None:
        """Add one image (or a batch of images of equal size) to the confusion matrix.

        Args:
            pred_ids: Predicted class ids, shape ``(H, W)`` (any shape equal to ``gt_ids``).
            gt_ids: Ground-truth class ids, same shape; ``ignore_index`` marks void pixels.

        Raises:
            ValueError: On shape mismatch, non-integer input, or ids outside ``0..num_classes-1``
                (other than ``ignore_index`` in the ground truth).

        """
        pred = _as_int_array(pred_ids, "pred_ids")
        gt = _as_int_array(gt_ids, "gt_ids")
        if pred.shape != gt.shape:
            raise ValueError(f"pred_ids {pred.shape} and gt_ids {gt.shape} differ in shape")
        keep = gt != self.ignore_index
        gt, pred = gt[keep], pred[keep]
        if gt.size == 0:
            return
        for name, ids in (("gt_ids", gt), ("pred_ids", pred)):
            low, high = int(ids.min()), int(ids.max())
            if low < 0 or high >= self.num_classes:
                raise ValueError(
                    f"{name} has ids in [{low}, {high}], expected 0..{self.num_classes - 1}"
                    f" (or {self.ignore_index} for void ground truth)"
                )
        # One flat bincount over (gt, pred) pairs is far faster than per-class masks.
        counts = np.bincount(gt * self.num_classes + pred, minlength=self.num_classes**2)
        self._confusion += counts.reshape(self.num_classes, self.num_classes)

    def compute(self, class_names: Sequence[str] | None = None) -> dict[str, float]:
        """Dataset-level scores from everything added so far.

        Args:
            class_names: One name per class for the per-class keys; defaults to ``"0"``, ``"1"``...

        Returns:
            ``miou``: mean of the per-class IoU ``TP / (TP + FP + FN)`` over the classes present in
            the ground truth or the prediction (classes absent from both are left out, not
            counted as 0 or 1); ``acc``: fraction of non-void pixels predicted correctly;
            ``iou/<name>``: per-class IoU, NaN for classes absent from both. Every value is NaN
            when no non-void pixel has been seen.

        Raises:
            ValueError: If ``class_names`` does not have ``num_classes`` entries.

        """
        if class_names is None:
            class_names = [str(index) for index in range(self.num_classes)]
        if len(class_names) != self.num_classes:
            raise ValueError(f"expected {self.num_classes} class names, got {len(class_names)}")
        confusion = self._confusion.astype(np.float64)
        tp = np.diag(confusion)
        union = confusion.sum(axis=0) + confusion.sum(axis=1) - tp
        present = union > 0
        per_class = np.full(self.num_classes, np.nan)
        per_class[present] = tp[present] / union[present]
        total = confusion.sum()
        results = {
            "miou": float(per_class[present].mean()) if present.any() else float("nan"),
            "acc": float(tp.sum() / total) if total > 0 else float("nan"),
        }
        for name, value in zip(class_names, per_class, strict=True):
            results[f"iou/{name}"] = float(value)
        return results
