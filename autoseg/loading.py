"""Rebuild a saved predictor: every file checked first, then backbone, then the adapter.

The weight files are checked against the model the config describes, built on the meta
device (shapes only, no memory), so a damaged or mismatched folder fails before any real
model is built.
"""

from __future__ import annotations

from pathlib import Path

import torch

from autoseg.builder import build_model
from autoseg.errors import AutosegError, PredictorFolderError
from autoseg.folder import PredictorFolder
from autoseg.models.segmenter import SamSegmenter
from autoseg.persistence import read_record, read_tensors, tensor_shapes
from autoseg.state import RESTORE_HINT, PredictorState

SHOWN = 5


class WeightsChangedError(AutosegError, ValueError):
    """The backbone weights found now are not the file the predictor was trained on."""


def check_predictor_folder(folder: Path) -> PredictorState:
    """Check ``config.yaml`` and the weight files without building a real model.

    Returns:
        The saved state, without its model.

    Raises:
        PredictorFolderError: a file is missing, damaged, tampered with or inconsistent.

    """
    paths = PredictorFolder(folder)
    state = PredictorState.from_record(read_record(folder), paths.config)
    try:
        with torch.device("meta"):
            shape_model, _ = build_model(state.config, state.problem.num_outputs, pretrained=False)
    except Exception as error:  # e.g. an unknown backbone or an image size it cannot tile
        raise PredictorFolderError(
            f"{paths.config}: its settings describe no buildable model ({error}). {RESTORE_HINT}"
        ) from None
    trainable = {
        name: tuple(p.shape) for name, p in shape_model.named_parameters() if p.requires_grad
    }
    _check_shapes(paths.adapter, trainable)
    if paths.full_weights.is_file():
        full = {k: tuple(v.shape) for k, v in shape_model.state_dict().items()}
        _check_shapes(paths.full_weights, full)
    return state


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
            f"{path} does not fit the model {PredictorFolder.CONFIG} describes "
            f"({'; '.join(problems)}): it is damaged, tampered with or from another "
            f"predictor. {RESTORE_HINT}"
        )


def load_predictor(folder: Path) -> PredictorState:
    """Check a predictor folder, then rebuild its model (no pickle, no code execution).

    Raises:
        PredictorFolderError: as :func:`check_predictor_folder`.
        WeightsChangedError: the backbone weights found now differ from the recorded ones.

    """
    state = check_predictor_folder(folder)
    paths = PredictorFolder(folder)
    if paths.full_weights.is_file():
        model, _ = build_model(state.config, state.problem.num_outputs, pretrained=False)
        model.load_state_dict(read_tensors(paths.full_weights), strict=True)
    else:
        model = _with_recorded_backbone(state, folder)
        model.load_state_dict(read_tensors(paths.adapter), strict=False)
    return state.with_model(model)


def _with_recorded_backbone(state: PredictorState, folder: Path) -> SamSegmenter:
    """Build the model on the backbone weights recorded at fit time, checked by sha256."""
    backbone = state.backbone
    saved_path = backbone.get("checkpoint_path")
    usable = saved_path if saved_path and Path(saved_path).is_file() else None
    model, parts = build_model(state.config, state.problem.num_outputs, checkpoint=usable)
    expected = backbone.get("checkpoint_sha256")
    if expected != parts.checkpoint_sha256:
        raise WeightsChangedError(
            f"{folder} was trained on {state.config.model.backbone} weights with sha256 "
            f"{expected}, but the weights found now ({parts.checkpoint_path}) have sha256 "
            f"{parts.checkpoint_sha256}. Put the original file in place, or pass its path "
            "in hyperparameters={'model.checkpoint': ...} when fitting."
        )
    return model
