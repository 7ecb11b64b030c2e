"""The Lightning module: the training and validation loops of a SAM segmenter."""

from __future__ import annotations

import dataclasses

import lightning as L
import numpy as np
import torch

from autoseg.config import LossConfig, OptimConfig
from autoseg.metrics import BinaryMetricAccumulator, MulticlassMetricAccumulator
from autoseg.models.segmenter import SamSegmenter
from autoseg.peft import PeftConfig, balance_loss_weight
from autoseg.training.losses import task_loss
from autoseg.training.step import linear_decay, make_optimizer, training_loss


class SegmentationTask(L.LightningModule):
    """Trains the adapters and mask head; validates with the run's metric each epoch.

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
        self._accumulator: BinaryMetricAccumulator | MulticlassMetricAccumulator | None = None
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
        """Start a fresh metric accumulator."""
        if self.is_binary:
            self._accumulator = BinaryMetricAccumulator([self.eval_metric])
        else:
            self._accumulator = MulticlassMetricAccumulator(self.model.num_classes)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """Score each image on its valid (unpadded) region at the model's resolution."""
        loss, logits = self._losses(batch)
        self.log("val_loss", loss, on_epoch=True, batch_size=batch["image"].shape[0])
        logits = logits.float()
        if self.is_binary:
            scores = torch.sigmoid(logits[:, 0])
        else:
            scores = logits.argmax(dim=1)
        for score, mask, (h, w) in zip(scores, batch["mask"], batch["resized_hw"], strict=True):
            pred = score[:h, :w].cpu().numpy()
            gt = mask[:h, :w].cpu().numpy()
            if self.is_binary:
                self._accumulator.update(pred, gt == 1)
            else:
                self._accumulator.update(pred.astype(np.int64), gt)

    def on_validation_epoch_end(self) -> None:
        """Log ``val_<metric>``, the number early stopping and the best-weights keeper watch."""
        results = self._accumulator.compute()
        self.log(
            f"val_{self.eval_metric}",
            float(results[self.eval_metric]),
            prog_bar=True,
            sync_dist=True,
        )

    def configure_optimizers(self) -> dict:
        """AdamW over the trainable parameters with a linear decay of the rate to zero."""
        optimizer = make_optimizer(self.model, self.optim)
        schedule = linear_decay(optimizer, self.trainer.estimated_stepping_batches)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": schedule, "interval": "step"},
        }
