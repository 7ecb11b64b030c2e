"""Assemble a trainable model from a config: backbone, prompt-free head, PEFT adapters."""

from __future__ import annotations

import torch

from autoseg.config import Config
from autoseg.models.activation_checkpointing import enable_activation_checkpointing
from autoseg.models.backbones import SamParts
from autoseg.models.segmenter import SamSegmenter, build_segmenter
from autoseg.peft import adapter_parameter_counts, apply_peft


def build_model(
    config: Config, num_outputs: int, pretrained: bool = True, checkpoint: str | None = None
) -> tuple[SamSegmenter, SamParts]:
    """Build the segmenter for ``config`` with its adapters applied.

    Args:
        config: the run's configuration (backbone, input size, PEFT method and settings).
        num_outputs: logit maps: 1 for binary, K for K classes.
        pretrained: load the backbone checkpoint (False: deterministic random weights, used
            when a standalone predictor brings all its weights along).
        checkpoint: overrides ``config.model.checkpoint`` (e.g. the path a saved predictor
            recorded).

    """
    model, parts = build_segmenter(
        config.model.backbone,
        num_classes=num_outputs,
        image_size=config.data.image_size,
        checkpoint=checkpoint or config.model.checkpoint,
        # model.pretrained=False (training from scratch) never needs or reads a weights file.
        pretrained=pretrained and config.model.pretrained,
        in_channels=config.model.in_channels,
        bands=None if config.data.bands is None else tuple(config.data.bands),
    )
    apply_peft(model, config.peft)
    if config.env.activation_checkpointing:
        enable_activation_checkpointing(model)
    return model, parts


def count_parameters(config: Config, num_outputs: int = 1) -> dict[str, int]:
    """Trainable/total parameter counts for a config, built on the meta device (no memory).

    Besides :func:`~autoseg.peft.adapter_parameter_counts`' groups, ``bands`` counts the
    band projection of a model with ``model.in_channels`` above 3 (0 otherwise); it is
    trainable, so it is part of ``trainable`` too.

    Example:
        >>> cfg = Config().with_overrides({"model.backbone": "vit_h", "data.image_size": 1024})
        >>> count_parameters(cfg)["trainable"]
        4020096
        >>> count_parameters(cfg.with_overrides({"model.in_channels": 6}))["bands"]
        21

    """
    with torch.device("meta"):
        model, _ = build_model(config, num_outputs, pretrained=False)
    projection = model.band_projection
    bands = 0 if projection is None else projection.parameter_count()
    return {**adapter_parameter_counts(model), "bands": bands}
