"""The settings a predictor folder's ``config.yaml`` records, checked key by key.

``config.yaml`` is plain data the user can open, so it can also be edited by hand or damaged:
every key is checked for presence and type here, and every invalid value gives one
:class:`~autoseg.errors.PredictorFolderError` naming the file, the key and what to do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autoseg.config import Config
from autoseg.errors import PredictorFolderError
from autoseg.problem import Problem

RESTORE_HINT = "Restore the folder from a backup, or fit and save the predictor again."
DEFAULT_COLUMNS = {"image": "image", "label": "label"}

# key -> (type it must have, whether it may be absent)
_KEYS: dict[str, tuple[type, bool]] = {
    "preset": (str, False),
    "config": (dict, False),
    "problem": (dict, False),
    "eval_metric": (str, False),
    "backbone": (dict, False),
    "summary": (dict, True),
    "columns": (dict, True),
}


@dataclass(frozen=True)
class SavedRecord:
    """What ``config.yaml`` restores (besides the weights)."""

    config: Config
    problem: Problem
    preset: str
    eval_metric: str
    backbone: dict[str, Any]
    summary: dict[str, Any]
    columns: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_COLUMNS))


def _bad(config_path: Path, key: str, problem: str) -> PredictorFolderError:
    return PredictorFolderError(f"{config_path}: key {key!r} {problem}. {RESTORE_HINT}")


def parse_record(record: Mapping[str, Any], config_path: Path) -> SavedRecord:
    """Check every key of a parsed ``config.yaml`` and build the objects it describes.

    Raises:
        PredictorFolderError: a key is missing, has the wrong type or an invalid value.

    """
    for key, (kind, optional) in _KEYS.items():
        if key not in record:
            if optional:
                continue
            raise _bad(config_path, key, "is missing")
        if not isinstance(record[key], kind):
            raise _bad(config_path, key, f"must be a {kind.__name__}, not {record[key]!r}")
    try:
        config = Config.from_dict(record["config"])
    except Exception as error:  # every invalid value: unknown key, wrong type, out of range
        raise _bad(config_path, "config", f"holds an invalid setting ({error})") from None
    try:
        problem = Problem.from_dict(record["problem"])
        if problem.problem_type not in ("binary", "multiclass") or len(problem.classes) < 2:
            raise ValueError(f"{problem.problem_type!r} with classes {list(problem.classes)}")
    except Exception as error:  # missing sub-keys, wrong types, bad colours
        raise _bad(config_path, "problem", f"is not a valid problem ({error!r})") from None
    return SavedRecord(
        config=config,
        problem=problem,
        preset=record["preset"],
        eval_metric=record["eval_metric"],
        backbone=_backbone(record["backbone"], config_path),
        summary=dict(record.get("summary") or {}),
        columns=_columns(record.get("columns") or {}, config_path),
    )


def _backbone(values: dict[str, Any], config_path: Path) -> dict[str, Any]:
    for key in ("checkpoint_path", "checkpoint_sha256"):
        value = values.get(key)
        if value is not None and not isinstance(value, str):
            raise _bad(config_path, f"backbone.{key}", f"must be text or null, not {value!r}")
    return dict(values)


def _columns(values: dict[str, Any], config_path: Path) -> dict[str, str]:
    columns = dict(DEFAULT_COLUMNS)
    for key in DEFAULT_COLUMNS:
        value = values.get(key, columns[key])
        if not isinstance(value, str) or not value:
            raise _bad(config_path, f"columns.{key}", f"must be a column name, not {value!r}")
        columns[key] = value
    return columns
