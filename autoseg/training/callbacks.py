"""Callbacks: keep the best adapter weights in memory (no pickled checkpoints on disk)."""

from __future__ import annotations

import math

import lightning as L
import torch

from autoseg.peft import trainable_state_dict


class BestWeightsKeeper(L.Callback):
    """Copy the trainable weights whenever the monitored validation metric improves.

    The trainable part is a few MB, so a copy in memory is cheaper and safer than a pickled
    Lightning checkpoint; ``on_fit_end`` puts the best weights back into the model.

    Example:
        >>> keeper = BestWeightsKeeper("val_iou", mode="max")
        >>> trainer = L.Trainer(callbacks=[keeper])  # doctest: +SKIP

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
