"""Callbacks: best adapter weights in memory (no pickles on disk); a time limit that holds."""

from __future__ import annotations

import math
import statistics
import time
from collections import deque
from collections.abc import Callable

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn

from autoseg.peft import trainable_state_dict
from autoseg.training.schedule import BudgetSchedule, reachable_steps


class BestWeightsKeeper(L.Callback):
    """Copy the trainable weights whenever the monitored validation metric improves.

    The trainable part is a few MB, so a copy in memory is cheaper and safer than a pickled
    Lightning checkpoint; ``on_fit_end`` puts the best weights back into the model.

    Example:
        >>> keeper = BestWeightsKeeper("val_iou", mode="max")
        >>> trainer = L.Trainer(callbacks=[keeper], logger=False, enable_progress_bar=False)
        >>> keeper in trainer.callbacks
        True

    """

    def __init__(self, monitor: str, mode: str = "max") -> None:
        super().__init__()
        if mode not in {"max", "min"}:
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.monitor = monitor
        self.mode = mode
        self.best_score: float | None = None
        self.best_epoch: int | None = None
        self.best_state: dict[str, torch.Tensor] | None = None

    def _improves(self, score: float) -> bool:
        if math.isnan(score):
            return False
        if self.best_score is None:
            return True
        return score > self.best_score if self.mode == "max" else score < self.best_score

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Record the weights if this epoch's score is the best so far."""
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        score = float(trainer.callback_metrics[self.monitor])
        if self._improves(score):
            self.best_score = score
            self.best_epoch = trainer.current_epoch
            self.best_state = trainable_state_dict(pl_module.model)

    def state_dict(self) -> dict:
        """Saved in resume checkpoints, so a resumed run still returns the best weights."""
        return {
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "best_state": self.best_state,
        }

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore what :meth:`state_dict` saved."""
        self.best_score = state_dict["best_score"]
        self.best_epoch = state_dict["best_epoch"]
        self.best_state = state_dict["best_state"]

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Restore the best weights seen (the last ones stay when nothing was validated)."""
        if self.best_state is not None:
            pl_module.model.load_state_dict(self.best_state, strict=False)


class TimeBudget(L.Callback):
    """Stop training early enough that the validation which follows still ends in time.

    Lightning's ``max_time`` looks at the clock after each batch only, and the validation
    that runs once training stops comes on top of the limit (a 900 s CPU fit ran 1100 s).
    This callback stops as soon as one more training batch plus one validation pass would
    not fit in the time left. A validation pass costs what the last one took; before the
    first one it is estimated from the training batches (a validation image needs a forward
    pass only, about a third of a training image's forward and backward; half is assumed).
    The time spent is saved in resume checkpoints, so a resumed fit gets what is left.
    With ``fit_schedule``, each batch also moves the
    :class:`~autoseg.training.schedule.BudgetSchedule` horizon to the steps that still fit,
    so the rate has decayed to zero when the time runs out.

    Example:
        >>> budget = TimeBudget(3600, val_images=20, batch_size=2)
        >>> trainer = L.Trainer(callbacks=[budget], logger=False, enable_progress_bar=False)
        >>> budget in trainer.callbacks
        True

    """

    VAL_IMAGE_COST = 0.5  # a validation image's time over a training image's
    RECENT_BATCHES = 64

    def __init__(
        self,
        seconds: float,
        val_images: int,
        batch_size: int,
        clock: Callable[[], float] = time.monotonic,
        fit_schedule: bool = False,
    ) -> None:
        super().__init__()
        self.seconds = float(seconds)
        self.fit_schedule = fit_schedule
        self._step_limit: int | None = None
        self.val_images = val_images
        self.batch_size = max(1, batch_size)
        self.clock = clock
        self.spent_before = 0.0
        self._started: float | None = None
        self._mark = 0.0
        self._val_started: float | None = None
        # Recent batches only: the median stays cheap on long runs and follows the machine.
        self._batch_times: deque[float] = deque(maxlen=self.RECENT_BATCHES)
        self.last_val_seconds: float | None = None

    def elapsed(self) -> float:
        """Seconds of training so far, including time spent before a resume."""
        if self._started is None:
            return self.spent_before
        return self.spent_before + self.clock() - self._started

    def reserve(self) -> float:
        """Seconds to keep free: one more training batch and one validation pass."""
        # The median ignores the first batch's one-off costs (worker start-up, allocation).
        batch = statistics.median(self._batch_times) if self._batch_times else 0.0
        return batch + self._validation_seconds(batch)

    def _stop_if_out_of_time(self, trainer: L.Trainer) -> None:
        if self.fit_schedule:
            self._retarget_schedules(trainer)
        out_of_time = self.elapsed() + self.reserve() >= self.seconds
        # Every DDP process must stop at the same batch: rank 0 decides.
        if trainer.strategy.broadcast(out_of_time):
            trainer.should_stop = True

    def _validation_seconds(self, batch: float) -> float:
        if self.last_val_seconds is not None:
            return self.last_val_seconds
        return batch / self.batch_size * self.val_images * self.VAL_IMAGE_COST

    def _retarget_schedules(self, trainer: L.Trainer) -> None:
        """Move every budget schedule's horizon to the last step the time left allows."""
        schedules = [
            config.scheduler
            for config in getattr(trainer, "lr_scheduler_configs", ())
            if isinstance(config.scheduler, BudgetSchedule)
        ]
        if not schedules or not self._batch_times:
            return
        batch = statistics.median(self._batch_times)
        validation = self._validation_seconds(batch)
        reachable = reachable_steps(
            trainer.global_step,
            self.seconds - self.elapsed() - validation,  # the last validation is reserved
            batch,
            validation,
            trainer.num_training_batches,
            trainer.accumulate_grad_batches,
        )
        horizon = min(reachable, self._step_limit or reachable)
        for schedule in schedules:
            schedule.retarget(horizon)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Start the clock; note the epoch and step limits' horizon (the schedule's ceiling)."""
        self._started = self._mark = self.clock()
        if self.fit_schedule:
            self._step_limit = int(trainer.estimated_stepping_batches)

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        """Time the batch (loading included); stop if the next one would not fit."""
        now = self.clock()
        self._batch_times.append(now - self._mark)  # includes loading the batch
        self._mark = now
        self._stop_if_out_of_time(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Time the validation pass."""
        if not trainer.sanity_checking:
            self._val_started = self.clock()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Record how long validation took; stop if another batch and pass would not fit."""
        if trainer.sanity_checking or self._val_started is None:
            return
        self._mark = self.clock()
        self.last_val_seconds = self._mark - self._val_started
        self._val_started = None
        if trainer.state.fn == TrainerFn.FITTING:
            self._stop_if_out_of_time(trainer)

    def state_dict(self) -> dict:
        """Saved in resume checkpoints: the training time already spent."""
        return {"spent_seconds": self.elapsed(), "last_val_seconds": self.last_val_seconds}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore what :meth:`state_dict` saved."""
        self.spent_before = float(state_dict["spent_seconds"])
        self.last_val_seconds = state_dict["last_val_seconds"]
