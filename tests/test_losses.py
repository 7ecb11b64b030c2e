"""Task losses: real per-pixel weighting, ignored pixels, multi-class CE + Dice."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from autoseg.errors import SettingsError
from autoseg.training.losses import (
    balanced_bce_loss,
    cross_entropy_dice_loss,
    structure_loss,
    task_loss,
)


def _target(size: int = 40) -> torch.Tensor:
    target = torch.zeros(1, size, size, dtype=torch.long)
    target[:, 10:25, 12:30] = 1
    return target


def test_structure_loss_weights_each_pixel():
    target = _target()
    logits = torch.randn(1, 1, 40, 40, generator=torch.Generator().manual_seed(0))
    mask = (target == 1).float().unsqueeze(1)
    weight = 1 + 5 * (F.avg_pool2d(mask, 31, stride=1, padding=15) - mask).abs()
    bce = F.binary_cross_entropy_with_logits(logits, mask, reduction="none")
    expected_bce = (weight * bce).sum() / weight.sum()
    prob = logits.sigmoid()
    inter = (prob * mask * weight).sum()
    union = ((prob + mask) * weight).sum()
    expected = expected_bce + 1 - (inter + 1) / (union - inter + 1)
    torch.testing.assert_close(structure_loss(logits, target), expected)
    # The widely copied version averages the BCE before weighting: a different number.
    unweighted = bce.mean() + 1 - (inter + 1) / (union - inter + 1)
    assert not torch.isclose(structure_loss(logits, target), unweighted)


def test_ignored_pixels_do_not_contribute():
    target = _target()
    logits = torch.randn(1, 1, 40, 40, generator=torch.Generator().manual_seed(1))
    ignored = target.clone()
    ignored[:, 35:, :] = 255
    changed = logits.clone()
    changed[:, :, 35:, :] = 100.0
    for loss in (structure_loss, balanced_bce_loss):
        assert torch.isclose(loss(logits, ignored), loss(changed, ignored))
        assert not torch.isclose(loss(logits, target), loss(changed, target))


def test_perfect_prediction_scores_lower_than_inverted():
    target = _target()
    good = (target.float() * 20 - 10).unsqueeze(1)
    for loss in (structure_loss, balanced_bce_loss):
        assert loss(good, target) < loss(-good, target)


def test_multiclass_loss_is_ce_plus_dice_and_ignores_void():
    target = torch.randint(0, 3, (2, 16, 16), generator=torch.Generator().manual_seed(2))
    target[:, :3] = 255
    logits = torch.randn(2, 3, 16, 16, requires_grad=True)
    loss = cross_entropy_dice_loss(logits, target)
    ce = F.cross_entropy(logits, target, ignore_index=255)
    assert loss > ce
    loss.backward()
    assert logits.grad[:, :, :3].abs().max() == 0
    assert torch.equal(task_loss(logits, target, "structure"), loss)


def _all_ignored(channels: int, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    logits = torch.randn(batch, channels, 24, 24, generator=torch.Generator().manual_seed(4))
    return logits.requires_grad_(), torch.full((batch, 24, 24), 255, dtype=torch.long)


def test_multiclass_loss_on_a_batch_without_valid_pixels_is_zero_with_zero_gradient():
    logits, target = _all_ignored(3)
    assert torch.isnan(F.cross_entropy(logits, target, ignore_index=255))  # the old NaN
    loss = cross_entropy_dice_loss(logits, target)
    assert torch.isfinite(loss) and loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().max() == 0


def test_multiclass_loss_still_averages_cross_entropy_over_valid_pixels():
    target = torch.randint(0, 3, (2, 16, 16), generator=torch.Generator().manual_seed(5))
    target[0] = 255  # one image of the batch fully ignored: the other one alone counts
    logits = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    ce = F.cross_entropy(logits[1:], target[1:])
    prob = logits[1:].softmax(1)
    onehot = F.one_hot(target[1:], 3).permute(0, 3, 1, 2).float()
    dice = (2 * (prob * onehot).sum((0, 2, 3)) + 1) / (
        prob.sum((0, 2, 3)) + onehot.sum((0, 2, 3)) + 1
    )
    torch.testing.assert_close(cross_entropy_dice_loss(logits, target), ce + 1 - dice.mean())


def test_binary_losses_on_an_all_ignored_target_are_zero_with_zero_gradient():
    for loss_fn in (structure_loss, balanced_bce_loss):
        logits, target = _all_ignored(1, batch=2)
        loss = loss_fn(logits, target)
        assert torch.isfinite(loss) and loss.item() == 0.0, loss_fn.__name__
        loss.backward()
        assert logits.grad.abs().max() == 0, loss_fn.__name__


def test_unknown_binary_loss_is_a_settings_error():
    with pytest.raises(SettingsError, match="structure"):
        task_loss(torch.zeros(1, 1, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long), "dice")
