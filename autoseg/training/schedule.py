"""A learning-rate schedule sized to the steps a fit will really take.

Without a time limit the schedule spans ``Trainer.estimated_stepping_batches`` (the epoch and
step limits). With one, most of those steps are never reached: a CPU fit given 900 s used to
end in epoch 2 of 30 with the rate barely decayed. :class:`BudgetSchedule` therefore keeps
its horizon (the step at which the rate reaches zero) as state, and
:class:`~autoseg.training.callbacks.TimeBudget` moves that horizon to the steps that still fit
in the time left, re-estimated after every batch from the measured batch and validation times.
The horizon is part of the scheduler's state, so a resumed fit continues the same schedule.
"""

from __future__ import annotations

import math

import torch

SCHEDULES = ("budget", "epochs")
"""``optim.schedule``: ``budget`` fits the horizon to a time limit; ``epochs`` keeps it fixed."""


class BudgetSchedule(torch.optim.lr_scheduler.LRScheduler):
    """Linear warm-up over a fraction of the horizon, then linear decay to zero at it.

    Args:
        optimizer: The optimiser whose rates it scales.
        horizon: Optimiser steps until the rate reaches zero.
        warmup_fraction: Share of the horizon spent rising linearly from 0 to the base rate.

    Example:
        >>> net = torch.nn.Linear(2, 1)
        >>> schedule = BudgetSchedule(torch.optim.SGD(net.parameters(), lr=1.0), horizon=10)
        >>> [round(schedule.factor(step), 2) for step in (0, 5, 10)]
        [1.0, 0.5, 0.0]
        >>> schedule.retarget(20)
        >>> round(schedule.factor(5), 2)
        0.75

    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, horizon: int, warmup_fraction: float = 0.0
    ) -> None:
        self.horizon = max(1, int(horizon))
        self.warmup_fraction = float(warmup_fraction)
        super().__init__(optimizer)

    def factor(self, step: int) -> float:
        """The rate's multiplier at optimiser step ``step``."""
        warmup = self.warmup_fraction * self.horizon
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, 1.0 - step / self.horizon)

    def get_lr(self) -> list[float]:  # noqa: D102 - LRScheduler's hook
        return [base * self.factor(self.last_epoch) for base in self.base_lrs]

    def retarget(self, horizon: float) -> None:
        """Move the horizon (never before the next step) and apply it to the current rate."""
        self.horizon = max(self.last_epoch + 1, int(horizon))
        for group, rate in zip(self.optimizer.param_groups, self.get_lr(), strict=True):
            group["lr"] = rate
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


def reachable_steps(
    steps_done: int,
    seconds_left: float,
    batch_seconds: float,
    val_seconds: float,
    batches_per_epoch: int,
    batches_per_step: int,
) -> int:
    """Optimiser steps a fit will have taken when its time runs out.

    Each epoch costs its batches plus one validation pass, so a batch costs its own time plus
    its share of the validation.

    Example:
        >>> reachable_steps(10, seconds_left=100, batch_seconds=1.0, val_seconds=10.0,
        ...                 batches_per_epoch=10, batches_per_step=2)
        35

    """
    per_batch = batch_seconds + val_seconds / max(1, batches_per_epoch)
    if per_batch <= 0 or not math.isfinite(per_batch):
        return steps_done + 1
    batches_left = max(0.0, seconds_left) / per_batch
    return steps_done + int(batches_left // max(1, batches_per_step))
