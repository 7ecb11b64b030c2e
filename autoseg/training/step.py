"""The training step, defined once: loss, balance weight, optimiser and clipping.

The Lightning module and ``benchmarks/bench_train.py`` both train through these functions, so
what the benchmark times is what a fit runs.
"""

from __future__ import annotations

import torch
from torch import nn

from autoseg.config import LossConfig, OptimConfig
from autoseg.peft import balance_loss
from autoseg.training.losses import task_loss


def training_loss(
    model: nn.Module,
    images: torch.Tensor,
    target: torch.Tensor,
    loss: LossConfig,
    balance_weight: float,
    valid_hw: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Task loss plus the weighted Conv-LoRA balance loss of one forward pass.

    ``images`` are pixel values 0..255 with each image's valid ``(h, w)`` in ``valid_hw``
    (see :meth:`SamSegmenter.forward <autoseg.models.segmenter.SamSegmenter.forward>`);
    ``balance_weight`` is :func:`autoseg.peft.balance_loss_weight` of the method's config.

    Returns:
        (total loss, balance loss, logits).

    """
    logits = model(images, valid_hw)
    moe = balance_loss(model)
    total = task_loss(logits.float(), target, loss.binary) + balance_weight * moe.to(logits.device)
    return total, moe, logits


def make_optimizer(model: nn.Module, optim: OptimConfig) -> torch.optim.AdamW:
    """AdamW over the parameters that train."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=optim.lr, weight_decay=optim.weight_decay)


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    target: torch.Tensor,
    loss: LossConfig,
    optim: OptimConfig,
    balance_weight: float,
    autocast_dtype: torch.dtype | None = None,
    valid_hw: torch.Tensor | None = None,
) -> float:
    """One optimiser step without Lightning (forward, backward, clip, step); returns the loss.

    Example:
        >>> from autoseg.builder import build_model
        >>> from autoseg.config import Config
        >>> from autoseg.peft import balance_loss_weight
        >>> config = Config().with_overrides({"model.backbone": "vit_tiny", "data.image_size": 64})
        >>> model, _ = build_model(config, 1, pretrained=False)
        >>> optimizer = make_optimizer(model, config.optim)
        >>> images = torch.randint(0, 256, (1, 3, 64, 64)).float()
        >>> target = torch.zeros(1, 64, 64, dtype=torch.long)
        >>> weight = balance_loss_weight(config.peft)
        >>> step = train_step(model, optimizer, images, target, config.loss, config.optim, weight)
        >>> step > 0
        True

    """
    device_type = images.device.type
    with torch.autocast(device_type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        total, _, _ = training_loss(model, images, target, loss, balance_weight, valid_hw)
    total.backward()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    torch.nn.utils.clip_grad_norm_(params, optim.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(total.detach())
