"""The Lightning module: the training and validation loops of a SAM segmenter."""

from __future__ import annotations

import dataclasses

import lightning as L
import torch

from autoseg.config import LossConfig, OptimConfig
from autoseg.evaluation import OriginalSizeScorer
from autoseg.models.segmenter import SamSegmenter
from autoseg.peft import PeftConfig, balance_loss_weight
from autoseg.training.losses import task_loss
from autoseg.training.schedule import BudgetSchedule
from autoseg.training.step import make_optimizer, training_loss


class SegmentationTask(L.LightningModule):
    """Trains the adapters and mask head; validates with the run's metric each epoch.

    Validation scores at each image's original size, as ``evaluate`` does (see
    :class:`~autoseg.evaluation.OriginalSizeScorer`); it needs the
    :class:`~autoseg.data.datamodule.SegmentationDataModule` the Trainer runs on.

    Args:
        model: the adapted segmenter.
        optim: optimiser and schedule settings.
        loss: task loss settings.
        eval_metric: the validation metric logged as ``val_<metric>``.
        peft: the PEFT method's settings; its ``balance_weight`` (Conv-LoRA's) weighs the
            adapters' load-balancing loss. None, or a method without one: weight 0.

    Example:
        >>> from autoseg.builder import build_model
        >>> from autoseg.config import Config
        >>> config = Config().with_overrides({"model.backbone": "vit_tiny", "data.image_size": 64})
        >>> model = build_model(config, 1)[0]
        >>> task = SegmentationTask(model, config.optim, config.loss, "iou", config.peft)
        >>> task.hparams["optim"]["lr"], task.hparams["eval_metric"], task.balance_weight
        (0.0001, 'iou', 0.01)

    """

    def __init__(
        self,
        model: SamSegmenter,
        optim: OptimConfig,
        loss: LossConfig,
        eval_metric: str,
        peft: PeftConfig | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.optim = optim
        self.loss = loss
        self.balance_weight = 0.0 if peft is None else balance_loss_weight(peft)
        self.eval_metric = eval_metric
        # Plain data only: resume checkpoints are read back with weights_only=True.
        hyperparameters = {"optim": dataclasses.asdict(optim), "loss": dataclasses.asdict(loss)}
        if peft is not None:
            hyperparameters["peft"] = peft.to_dict()
        hyperparameters.update(eval_metric=eval_metric, balance_weight=self.balance_weight)
        self.save_hyperparameters(hyperparameters)
        self._scorer: OriginalSizeScorer | None = None
        # Resume checkpoints hold only the trainable weights; the frozen backbone is rebuilt.
        self.strict_loading = False

    @property
    def is_binary(self) -> bool:
        """One logit map means a binary problem."""
        return self.model.num_classes == 1

    def forward(self, images: torch.Tensor, valid_hw: torch.Tensor | None = None) -> torch.Tensor:
        """Return logits (B, K, S, S) for pixel values 0..255 (see ``SamSegmenter``)."""
        return self.model(images, valid_hw)

    def _losses(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(batch["image"], batch["resized_hw"])
        loss = task_loss(logits.float(), batch["mask"], self.loss.binary)
        return loss, logits

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Keep only trainable weights in resume checkpoints (MBs instead of GBs)."""
        trainable = {f"model.{n}" for n, p in self.model.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {
            k: v for k, v in checkpoint["state_dict"].items() if k in trainable
        }

    def on_train_epoch_start(self) -> None:
        """Put the model in train mode (the gate's noise is on only then)."""
        self.model.train()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Task loss plus the weighted Conv-LoRA load-balancing loss."""
        images, valid_hw = batch["image"], batch["resized_hw"]
        total, moe, _ = training_loss(
            self.model, images, batch["mask"], self.loss, self.balance_weight, valid_hw
        )
        size = batch["image"].shape[0]
        self.log("train_loss", total, prog_bar=True, on_step=True, on_epoch=True, batch_size=size)
        self.log("train_moe_loss", moe, on_step=False, on_epoch=True, batch_size=size)
        return total

    def on_validation_epoch_start(self) -> None:
        """Start a fresh pass of the original-size scorer (its cached masks stay)."""
        self._scorer = self._original_size_scorer()
        self._scorer.reset()

    def _original_size_scorer(self) -> OriginalSizeScorer:
        """The scorer of the validation rows; their masks come from the trainer's data module."""
        datamodule = getattr(self.trainer, "datamodule", None)
        table = getattr(datamodule, "val_table", None)
        problem = getattr(datamodule, "problem", None)
        if table is None or problem is None:
            raise TypeError(
                "SegmentationTask scores validation at each image's original size and reads "
                "the masks from the data module: pass datamodule=SegmentationDataModule(...) "
                "to the Trainer's fit/validate (it has val_table and problem)."
            )
        labels = table["label"].tolist()
        if self._scorer is not None and self._scorer.labels == labels:
            return self._scorer
        return OriginalSizeScorer(problem, labels, [self.eval_metric])

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """Loss at the model's resolution; the metric at each image's original size.

        The metric is the one ``evaluate`` reports (padding cropped, logits resized to the
        original size, scored against the original mask), so the kept epoch is the best by
        the number the user sees.
        """
        loss, logits = self._losses(batch)
        self.log("val_loss", loss, on_epoch=True, batch_size=batch["image"].shape[0])
        self._scorer.update(logits.detach(), batch["index"], batch["resized_hw"])

    def on_validation_epoch_end(self) -> None:
        """Log ``val_<metric>``, the number early stopping and the best-weights keeper watch."""
        results = self._scorer.compute()
        self.log(
            f"val_{self.eval_metric}",
            float(results[self.eval_metric]),
            prog_bar=True,
            sync_dist=True,
        )

    def configure_optimizers(self) -> dict:
        """AdamW over the trainable parameters; the rate decays linearly to zero.

        The horizon starts at the epoch and step limits; under ``optim.schedule="budget"``
        a time limit's :class:`~autoseg.training.callbacks.TimeBudget` moves it.
        """
        optimizer = make_optimizer(self.model, self.optim)
        horizon = self.trainer.estimated_stepping_batches
        schedule = BudgetSchedule(optimizer, horizon, self.optim.warmup_fraction)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": schedule, "interval": "step"},
        }
