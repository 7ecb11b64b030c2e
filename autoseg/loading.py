"""Rebuild a saved predictor: every file checked first, then backbone, then the adapter.

The weight files are checked against the model the config describes, built on the meta
device (shapes only, no memory), so a damaged or mismatched folder fails before any real
model is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from autoseg.builder import build_model
from autoseg.config import Config
from autoseg.errors import AutosegError, PredictorFolderError
from autoseg.models.segmenter import SamSegmenter
from autoseg.persistence import (
    ADAPTER_FILE,
    CONFIG_FILE,
    FULL_WEIGHTS_FILE,
    RESTORE_HINT,
    read_record,
    read_tensors,
    tensor_shapes,
)
from autoseg.problem import Problem
from autoseg.saved_record import SavedRecord, parse_record

SHOWN = 5


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
    columns: dict[str, str]


def check_predictor_folder(folder: Path) -> SavedRecord:
    """Check ``config.yaml`` and the weight files without building a real model.

    Raises:
        PredictorFolderError: a file is missing, damaged, tampered with or inconsistent.

    """
    saved = parse_record(read_record(folder), folder / CONFIG_FILE)
    try:
        with torch.device("meta"):
            shape_model, _ = build_model(saved.config, saved.problem.num_outputs, pretrained=False)
    except Exception as error:  # e.g. an unknown backbone or an image size it cannot tile
        raise PredictorFolderError(
            f"{folder / CONFIG_FILE}: its settings describe no buildable model ({error}). "
            f"{RESTORE_HINT}"
        ) from None
    trainable = {
        name: tuple(p.shape) for name, p in shape_model.named_parameters() if p.requires_grad
    }
    _check_shapes(folder / ADAPTER_FILE, trainable)
    full_path = folder / FULL_WEIGHTS_FILE
    if full_path.is_file():
        _check_shapes(full_path, {k: tuple(v.shape) for k, v in shape_model.state_dict().items()})
    return saved


def _check_shapes(path: Path, expected: dict[str, tuple[int, ...]]) -> None:
    """The file holds exactly the tensors ``expected`` names, with those shapes."""
    found = tensor_shapes(path)
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    wrong = [
        f"{n} {found[n]} (expected {expected[n]})"
        for n in found
        if n in expected and found[n] != expected[n]
    ]
    problems = [
        f"{label}: {', '.join(names[:SHOWN])}{' ...' if len(names) > SHOWN else ''}"
        for label, names in (("missing", missing), ("unexpected", extra), ("wrong shape", wrong))
        if names
    ]
    if problems:
        raise PredictorFolderError(
            f"{path} does not fit the model {CONFIG_FILE} describes ({'; '.join(problems)}): "
            f"it is damaged, tampered with or from another predictor. {RESTORE_HINT}"
        )


def load_predictor_state(folder: Path) -> LoadedPredictor:
    """Check a predictor folder, then rebuild its model (no pickle, no code execution)."""
    saved = check_predictor_folder(folder)
    config, problem, backbone = saved.config, saved.problem, saved.backbone
    full_path = folder / FULL_WEIGHTS_FILE
    if full_path.is_file():
        model, _ = build_model(config, problem.num_outputs, pretrained=False)
        model.load_state_dict(read_tensors(full_path), strict=True)
    else:
        adapter = read_tensors(folder / ADAPTER_FILE)
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
        model.load_state_dict(adapter, strict=False)
    return LoadedPredictor(
        model=model.eval(),
        config=config,
        preset=saved.preset,
        problem=problem,
        eval_metric=saved.eval_metric,
        backbone=backbone,
        summary=saved.summary,
        columns=saved.columns,
    )
