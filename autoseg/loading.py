"""Rebuild a saved predictor: backbone from its verified checkpoint, then the adapter."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from autoseg.builder import build_model
from autoseg.config import Config
from autoseg.errors import AutosegError
from autoseg.models.segmenter import SamSegmenter
from autoseg.persistence import read_predictor_files
from autoseg.problem import Problem


class CheckpointMismatchError(AutosegError, ValueError):
    """The SAM checkpoint found now is not the file the predictor was trained on."""


@dataclass
class LoadedPredictor:
    """Everything a saved predictor folder restores."""

    model: SamSegmenter
    config: Config
    preset: str
    problem: Problem
    eval_metric: str
    backbone: dict[str, Any]
    summary: dict[str, Any]


def load_predictor_state(folder: Path) -> LoadedPredictor:
    """Read a predictor folder and rebuild its model (no pickle, no code execution)."""
    record, adapter, full_weights = read_predictor_files(folder)
    config = Config.from_dict(record["config"])
    problem = Problem.from_dict(record["problem"])
    backbone = record["backbone"]
    if full_weights is not None:
        model, _ = build_model(config, problem.num_outputs, pretrained=False)
        _load_exact(model, full_weights, folder, partial=False)
    else:
        saved_path = backbone.get("checkpoint_path")
        usable = saved_path if saved_path and Path(saved_path).is_file() else None
        model, parts = build_model(config, problem.num_outputs, checkpoint=usable)
        expected = backbone.get("checkpoint_sha256")
        if expected != parts.checkpoint_sha256:
            raise CheckpointMismatchError(
                f"{folder} was trained on {config.model.backbone} weights with sha256 "
                f"{expected}, but the checkpoint found now ({parts.checkpoint_path}) has sha256 "
                f"{parts.checkpoint_sha256}. Put the original file in place, or pass its path "
                "in hyperparameters={'model.checkpoint': ...} when fitting."
            )
        _load_exact(model, adapter, folder, partial=True)
    return LoadedPredictor(
        model=model.eval(),
        config=config,
        preset=record["preset"],
        problem=problem,
        eval_metric=record["eval_metric"],
        backbone=backbone,
        summary=record["summary"],
    )


def _load_exact(
    model: SamSegmenter, weights: dict[str, torch.Tensor], folder: Path, partial: bool
) -> None:
    """Load weights, failing loudly on any name the model does not expect."""
    result = model.load_state_dict(weights, strict=not partial)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    missing_trainable = trainable.intersection(result.missing_keys)
    if result.unexpected_keys or missing_trainable:
        raise ValueError(
            f"{folder}: the saved weights do not fit the rebuilt model (unexpected: "
            f"{result.unexpected_keys[:5]}, missing: {sorted(missing_trainable)[:5]})."
        )
