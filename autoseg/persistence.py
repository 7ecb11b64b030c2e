"""Predictor folders: ``config.yaml`` + ``adapter.safetensors``; written atomically, no pickle.

Loading only parses YAML (``safe_load``) and safetensors, so opening a predictor folder never
executes code; every damaged or tampered file gives one :class:`PredictorFolderError` naming
it. Saving builds the new folder aside; replacing an existing one moves the old folder aside
(``.<name>.autoseg-old``), renames the new one in, then deletes the old. A crash between those
renames leaves the old folder aside, and the next :func:`read_record` (``load``) or save puts
it back, so a crash at any step leaves a loadable predictor.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from autoseg.atomic import atomic_write, atomic_write_text
from autoseg.errors import AutosegWarning, OutputExistsError, PredictorFolderError
from autoseg.folder import PredictorFolder
from autoseg.model_card import EVALUATION_KEY, render_model_card
from autoseg.peft import trainable_state_dict
from autoseg.state import RESTORE_HINT, PredictorState

ASIDE_SUFFIX = ".autoseg-old"
STAGING_TAG = ".autoseg-new-"


def is_nonempty_dir(path: Path) -> bool:
    """True when ``path`` is a folder holding anything."""
    return path.is_dir() and any(path.iterdir())


def aside_path(target: Path) -> Path:
    """Where a save keeps the old folder while the new one is renamed in."""
    return target.parent / f".{target.name}{ASIDE_SUFFIX}"


def save_predictor(
    state: PredictorState,
    target: Path,
    standalone: bool = False,
    source: Path | None = None,
    overwrite: bool = False,
) -> None:
    """Save ``state`` (its record and trained weights; all weights if ``standalone``).

    Raises:
        OutputExistsError: as :func:`save_predictor_folder`.

    """
    if state.model is None:
        raise ValueError("the state holds no model to save")
    full = state.model.state_dict() if standalone else None
    adapter = trainable_state_dict(state.model)
    has_curve = source is not None and PredictorFolder(source).curve.is_file()
    card = render_model_card(state, target.name, has_curve)
    save_predictor_folder(target, state.to_record(), adapter, full, source, overwrite, card)


def save_predictor_folder(
    target: Path,
    record: dict[str, Any],
    adapter: dict[str, torch.Tensor],
    full_weights: dict[str, torch.Tensor] | None = None,
    source: Path | None = None,
    overwrite: bool = False,
    card: str | None = None,
) -> None:
    """Save a predictor into ``target`` atomically, never leaving a half-written folder.

    The whole folder is built aside (with the logs and plots of ``source``, the predictor's
    own folder, and the model ``card`` as ``README.md``) and renamed into place; an existing
    folder is moved aside first and deleted last. On any failure the old folder is put back.

    Raises:
        OutputExistsError: ``target`` is a file, or another non-empty folder and
            ``overwrite`` is False.

    """
    recover_interrupted_save(target)
    if target.exists() and not target.is_dir():
        raise OutputExistsError(f"{target} is a file; choose a folder path to save into.")
    own = source is not None and target.exists() and target.resolve() == source.resolve()
    if not own and is_nonempty_dir(target) and not overwrite:
        raise OutputExistsError(
            f"{target} already exists and is not empty; choose a new path or pass overwrite=True."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_staging_leftovers(target)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}{STAGING_TAG}", dir=target.parent))
    try:
        if source is not None and source.is_dir():
            skip = shutil.ignore_patterns(
                PredictorFolder.FULL_WEIGHTS, f"*{ASIDE_SUFFIX}", f"*{STAGING_TAG}*"
            )
            shutil.copytree(source, staging, dirs_exist_ok=True, ignore=skip)
        _write_files(staging, record, adapter, full_weights, card)
        _swap_in(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _swap_in(staging: Path, target: Path) -> None:
    """Rename ``staging`` to ``target``; an old ``target`` goes aside, then is deleted."""
    if not target.exists():
        os.replace(staging, target)
        return
    aside = aside_path(target)
    os.replace(target, aside)
    try:
        os.replace(staging, target)
    except BaseException:
        os.replace(aside, target)
        raise
    _discard(aside)


def _discard(folder: Path) -> None:
    """Delete an old copy; a failure leaves it for the next save or load to remove."""
    try:
        shutil.rmtree(folder)
    except OSError:
        pass


def recover_interrupted_save(target: Path) -> bool:
    """Finish what a save that died midway left behind; True if the old folder was restored.

    The old folder aside with no ``target`` means the process died between the two renames:
    it is renamed back. With ``target`` in place, the aside copy and any staging folders are
    leftovers and are removed.
    """
    aside = aside_path(target)
    if not aside.is_dir():
        return False
    restored = not target.exists()
    if restored:
        os.replace(aside, target)
        warnings.warn(
            f"{target}: a save was interrupted; the previous predictor was restored from "
            f"{aside.name}.",
            AutosegWarning,
            stacklevel=3,
        )
    else:
        _discard(aside)
    _remove_staging_leftovers(target)
    return restored


def _remove_staging_leftovers(target: Path) -> None:
    """Remove half-built folders a save to ``target`` that died midway left beside it."""
    prefix = f".{target.name}{STAGING_TAG}"
    if target.parent.is_dir():
        for leftover in target.parent.iterdir():
            if leftover.name.startswith(prefix) and leftover.is_dir():
                _discard(leftover)


def _write_files(
    folder: Path,
    record: dict[str, Any],
    adapter: dict[str, torch.Tensor],
    full_weights: dict[str, torch.Tensor] | None,
    card: str | None,
) -> None:
    paths = PredictorFolder(folder)
    paths.root.mkdir(parents=True, exist_ok=True)
    atomic_write(paths.adapter, lambda p: save_file(_contiguous(adapter), str(p)))
    if full_weights is not None:
        atomic_write(paths.full_weights, lambda p: save_file(_contiguous(full_weights), str(p)))
    if card is not None:
        atomic_write_text(paths.model_card, card)
    atomic_write_text(paths.config, yaml.safe_dump(record, sort_keys=False))


def refresh_model_card(state: PredictorState, folder: Path) -> None:
    """Rewrite the ``README.md`` model card of an existing predictor folder atomically."""
    paths = PredictorFolder(folder)
    card = render_model_card(state, paths.root.name, has_curve=paths.curve.is_file())
    atomic_write_text(paths.model_card, card)


def record_evaluation(
    state: PredictorState,
    folder: Path | None,
    rows: int,
    metrics: Mapping[str, float],
    say: Callable[[str], None],
) -> PredictorState:
    """The state with this evaluation in its fit summary, shown in the folder's model card.

    The card is rewritten only where the folder already has one; a folder that cannot be
    written (read-only media) is reported, not an error: the scores were still computed.
    The next ``save`` stores the evaluation in ``config.yaml`` too.
    """
    scores = {name: float(value) for name, value in metrics.items()}
    summary = {**state.fit_summary, EVALUATION_KEY: {"rows": rows, "metrics": scores}}
    updated = replace(state, fit_summary=summary)
    if folder is not None and PredictorFolder(folder).model_card.is_file():
        try:
            refresh_model_card(updated, folder)
        except OSError as error:
            say(f"autoseg: the model card in {folder} was not updated ({error}).")
    return updated


def read_record(folder: Path) -> dict[str, Any]:
    """The parsed ``config.yaml`` of a predictor folder (restoring an interrupted save first).

    The keys and the ``format_version`` are checked by :meth:`PredictorState.from_record`.

    Raises:
        PredictorFolderError: no such folder, no ``config.yaml``, or a ``config.yaml`` that is
            not a YAML mapping of plain data.

    """
    recover_interrupted_save(folder)
    if not folder.is_dir():
        what = "is a file" if folder.exists() else "does not exist"
        raise PredictorFolderError(
            f"{folder} {what}: give the predictor folder that fit() or save() wrote "
            f"(it holds {PredictorFolder.CONFIG} and {PredictorFolder.ADAPTER})."
        )
    config_path = PredictorFolder(folder).config
    if not config_path.is_file():
        raise PredictorFolderError(
            f"{folder} is not an autoseg predictor folder: {PredictorFolder.CONFIG} is "
            "missing. Give the folder that fit() or save() wrote."
        )
    try:
        record = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        problem = " ".join(str(error).split())[:300]
        raise PredictorFolderError(
            f"{config_path} is not plain autoseg YAML ({problem}); it is damaged or was "
            f"tampered with, and autoseg never runs code from it. {RESTORE_HINT}"
        ) from None
    if not isinstance(record, dict):
        what = "is empty" if record is None else f"holds a {type(record).__name__}"
        raise PredictorFolderError(
            f"{config_path} {what}, not the mapping of settings autoseg writes. {RESTORE_HINT}"
        )
    return record


def tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the tensors in a safetensors file (only its header is read).

    Raises:
        PredictorFolderError: the file is missing, truncated or not a safetensors file.

    """
    try:
        with safe_open(str(path), "pt") as handle:
            return {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as error:
        raise _damaged(path, error) from None


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file (plain data, no pickle)."""
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise _damaged(path, error) from None


def _damaged(path: Path, error: BaseException) -> PredictorFolderError:
    if not path.exists():
        return PredictorFolderError(f"{path} is missing. {RESTORE_HINT}")
    return PredictorFolderError(
        f"{path} is damaged (truncated or not a safetensors file: {error}). {RESTORE_HINT}"
    )


def read_predictor_files(
    folder: Path,
) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    """Return (record, adapter weights, full weights or None) from a predictor folder."""
    record = read_record(folder)
    paths = PredictorFolder(folder)
    adapter = read_tensors(paths.adapter)
    full = read_tensors(paths.full_weights) if paths.full_weights.is_file() else None
    return record, adapter, full


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses shared or non-contiguous storage; weights here are small copies.
    return {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
