"""Task losses. Targets are (B, S, S) int64 class ids with 255 = ignore (also the padding)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from autoseg.errors import SettingsError
from autoseg.labels.masks import IGNORE_INDEX


def structure_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PraNet's structure loss: pixel-weighted BCE plus weighted IoU, over valid pixels.

    Pixels near object boundaries weigh more: ``w = 1 + 5 |avgpool31(t) - t|``. Unlike the
    widely copied original, the BCE here really is weighted per pixel (the original passes
    ``reduce='none'``, which PyTorch reads as a truthy legacy flag and averages first).

    Args:
        logits: (B, 1, S, S) raw scores.
        target: (B, S, S) with 0/1 and 255 for ignored pixels.

    """
    valid = (target != IGNORE_INDEX).unsqueeze(1).to(logits.dtype)
    mask = (target == 1).unsqueeze(1).to(logits.dtype)
    boundary = torch.abs(F.avg_pool2d(mask, kernel_size=31, stride=1, padding=15) - mask)
    weight = (1 + 5 * boundary) * valid
    bce = F.binary_cross_entropy_with_logits(logits, mask, reduction="none")
    weighted_bce = (weight * bce).sum((2, 3)) / weight.sum((2, 3)).clamp_min(1e-6)
    prob = torch.sigmoid(logits)
    inter = (prob * mask * weight).sum((2, 3))
    union = ((prob + mask) * weight).sum((2, 3))
    weighted_iou = 1 - (inter + 1) / (union - inter + 1)
    return (weighted_bce + weighted_iou).mean()


def balanced_bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE with classes re-weighted per image by the other class's share (for shadows)."""
    valid = (target != IGNORE_INDEX).unsqueeze(1).to(logits.dtype)
    mask = (target == 1).unsqueeze(1).to(logits.dtype)
    positives = (mask * valid).sum((2, 3), keepdim=True)
    total = valid.sum((2, 3), keepdim=True).clamp_min(1.0)
    pos_share = positives / total
    weight = (mask * (1 - pos_share) + (1 - mask) * pos_share) * valid
    bce = F.binary_cross_entropy_with_logits(logits, mask, reduction="none")
    return ((weight * bce).sum((2, 3)) / weight.sum((2, 3)).clamp_min(1e-6)).mean()


def cross_entropy_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy plus soft Dice over the classes, ignoring index 255.

    A batch without a single valid pixel (all 255) gives a loss of 0 with zero gradient,
    not NaN: the cross-entropy is averaged over at least one pixel.

    Args:
        logits: (B, K, S, S) raw scores.
        target: (B, S, S) class ids in 0..K-1, 255 ignored.

    """
    valid = (target != IGNORE_INDEX).unsqueeze(1).to(logits.dtype)
    ce_sum = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="sum")
    ce = ce_sum / valid.sum().clamp_min(1.0)
    prob = logits.softmax(dim=1) * valid
    onehot = F.one_hot(target.clamp_max(logits.shape[1] - 1), logits.shape[1])
    onehot = onehot.permute(0, 3, 1, 2).to(logits.dtype) * valid
    inter = (prob * onehot).sum((0, 2, 3))
    denom = prob.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    dice = (2 * inter + 1) / (denom + 1)
    return ce + (1 - dice.mean())


BINARY_LOSSES = {"structure": structure_loss, "balanced_bce": balanced_bce_loss}


def task_loss(logits: torch.Tensor, target: torch.Tensor, binary_loss: str) -> torch.Tensor:
    """Pick the loss for the problem: one logit map means binary."""
    if logits.shape[1] > 1:
        return cross_entropy_dice_loss(logits, target)
    if binary_loss not in BINARY_LOSSES:
        raise SettingsError(
            f"Unknown loss.binary {binary_loss!r}; choose from {list(BINARY_LOSSES)}"
        )
    return BINARY_LOSSES[binary_loss](logits, target)
