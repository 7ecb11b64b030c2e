"""Predictor folders: ``config.yaml`` + ``adapter.safetensors``; written atomically, no pickle.

Loading only parses YAML (``safe_load``) and safetensors, so opening a predictor folder never
executes code. The backbone is rebuilt from its checkpoint, whose sha256 must match the one
recorded at fit time.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file, save_file

CONFIG_FILE = "config.yaml"
ADAPTER_FILE = "adapter.safetensors"
FULL_WEIGHTS_FILE = "model.safetensors"
FORMAT_VERSION = 1


def is_nonempty_dir(path: Path) -> bool:
    """True when ``path`` is a folder holding anything."""
    return path.is_dir() and any(path.iterdir())


def save_predictor_folder(
    target: Path,
    record: dict[str, Any],
    adapter: dict[str, torch.Tensor],
    full_weights: dict[str, torch.Tensor] | None = None,
    source: Path | None = None,
    overwrite: bool = False,
) -> None:
    """Save a predictor into ``target``, never leaving a half-written folder behind.

    Saving into the predictor's own folder (``source``) replaces its files one by one, each
    written aside and renamed. Saving elsewhere builds the whole folder aside (copying the
    logs and plots of ``source``) and renames it into place.

    Raises:
        FileExistsError: ``target`` is another non-empty folder and ``overwrite`` is False.

    """
    if source is not None and target.exists() and target.resolve() == source.resolve():
        _write_files(target, record, adapter, full_weights)
        return
    if is_nonempty_dir(target) and not overwrite:
        raise FileExistsError(
            f"{target} already exists and is not empty; choose a new path or pass overwrite=True."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        if source is not None and source.is_dir():
            shutil.copytree(
                source,
                staging,
                dirs_exist_ok=True,
                ignore=shutil.ignore_patterns(FULL_WEIGHTS_FILE),
            )
        _write_files(staging, record, adapter, full_weights)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _write_files(
    folder: Path,
    record: dict[str, Any],
    adapter: dict[str, torch.Tensor],
    full_weights: dict[str, torch.Tensor] | None,
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    record = {"format_version": FORMAT_VERSION, **record}
    _atomic_write(folder / ADAPTER_FILE, lambda p: save_file(_contiguous(adapter), str(p)))
    if full_weights is not None:
        _atomic_write(
            folder / FULL_WEIGHTS_FILE, lambda p: save_file(_contiguous(full_weights), str(p))
        )
    text = yaml.safe_dump(record, sort_keys=False)
    _atomic_write(folder / CONFIG_FILE, lambda p: p.write_text(text))


def read_predictor_files(
    folder: Path,
) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    """Return (record, adapter weights, full weights or None) from a predictor folder."""
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(
            f"{folder} is not an autoseg predictor folder: {CONFIG_FILE} is missing."
        )
    record = yaml.safe_load(config_path.read_text())
    if record.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{config_path} has format_version {record.get('format_version')!r}; this autoseg "
            f"reads version {FORMAT_VERSION}."
        )
    adapter = load_file(str(folder / ADAPTER_FILE))
    full_path = folder / FULL_WEIGHTS_FILE
    full = load_file(str(full_path)) if full_path.is_file() else None
    return record, adapter, full


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses shared or non-contiguous storage; weights here are small copies.
    return {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}


def _atomic_write(path: Path, write) -> None:
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
