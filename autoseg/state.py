"""What a fitted predictor is: one :class:`PredictorState`, saved as ``config.yaml``.

``config.yaml`` is plain data the user can open, so it can also be edited by hand or damaged:
:meth:`PredictorState.from_record` checks every key for presence and type, and every invalid
value gives one :class:`~autoseg.errors.PredictorFolderError` naming the file, the key and
what to do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoseg import __version__
from autoseg.config import Config
from autoseg.errors import PredictorFolderError
from autoseg.labels.problem import Problem

if TYPE_CHECKING:
    from autoseg.models.segmenter import SamSegmenter

FORMAT_VERSION = 1
"""The ``config.yaml`` format :meth:`PredictorState.to_record` writes and ``from_record`` reads."""

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
class PredictorState:
    """Everything a fitted predictor holds; ``model`` is ``None`` until the weights are loaded.

    Example:
        >>> state = PredictorState(
        ...     config=Config(), preset="cpu_lite", problem=Problem("binary", classes=(0, 1)),
        ...     eval_metric="iou", backbone={"name": "vit_tiny"})
        >>> record = state.to_record()
        >>> record["format_version"], record["columns"]
        (1, {'image': 'image', 'label': 'label'})
        >>> PredictorState.from_record(record, Path("config.yaml")) == state
        True

    """

    config: Config
    preset: str
    problem: Problem
    eval_metric: str
    backbone: dict[str, Any]
    fit_summary: dict[str, Any] = field(default_factory=dict)
    columns: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_COLUMNS))
    model: SamSegmenter | None = field(default=None, compare=False, repr=False)

    def with_model(self, model: SamSegmenter) -> PredictorState:
        """The same state holding ``model`` (in eval mode)."""
        return replace(self, model=model.eval())

    def to_record(self) -> dict[str, Any]:
        """The plain data saved as ``config.yaml`` (the weights are saved apart)."""
        return {
            "format_version": FORMAT_VERSION,
            "autoseg_version": __version__,
            "preset": self.preset,
            "config": self.config.to_dict(),
            "problem": self.problem.to_dict(),
            "eval_metric": self.eval_metric,
            "backbone": dict(self.backbone),
            "summary": dict(self.fit_summary),
            "columns": dict(self.columns),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any], config_path: Path) -> PredictorState:
        """Check every key of a parsed ``config.yaml`` and build the state it describes.

        Raises:
            PredictorFolderError: another ``format_version``, or a key is missing, has the
                wrong type or an invalid value.

        """
        _check_version(record, config_path)
        for key, (kind, optional) in _KEYS.items():
            if key not in record:
                if optional:
                    continue
                raise _bad(config_path, key, "is missing")
            if not isinstance(record[key], kind):
                raise _bad(config_path, key, f"must be a {kind.__name__}, not {record[key]!r}")
        return cls(
            config=_config(record["config"], config_path),
            preset=record["preset"],
            problem=_problem(record["problem"], config_path),
            eval_metric=record["eval_metric"],
            backbone=_backbone(record["backbone"], config_path),
            fit_summary=dict(record.get("summary") or {}),
            columns=_columns(record.get("columns") or {}, config_path),
        )


def _bad(config_path: Path, key: str, problem: str) -> PredictorFolderError:
    return PredictorFolderError(f"{config_path}: key {key!r} {problem}. {RESTORE_HINT}")


def _check_version(record: Mapping[str, Any], config_path: Path) -> None:
    version = record.get("format_version")
    if version is None:
        raise PredictorFolderError(
            f"{config_path} has no format_version, which every autoseg predictor records: it "
            f"is damaged or was not written by autoseg. {RESTORE_HINT}"
        )
    if version != FORMAT_VERSION:
        raise PredictorFolderError(
            f"{config_path} has format_version {version!r}; this autoseg reads version "
            f"{FORMAT_VERSION}. Load it with the autoseg version that wrote it "
            f"({record.get('autoseg_version', 'unknown')}), or fit it again."
        )


def _config(values: dict[str, Any], config_path: Path) -> Config:
    try:
        return Config.from_dict(values)
    except Exception as error:  # every invalid value: unknown key, wrong type, out of range
        raise _bad(config_path, "config", f"holds an invalid setting ({error})") from None


def _problem(values: dict[str, Any], config_path: Path) -> Problem:
    try:
        problem = Problem.from_dict(values)
        if problem.problem_type not in ("binary", "multiclass") or len(problem.classes) < 2:
            raise ValueError(f"{problem.problem_type!r} with classes {list(problem.classes)}")
    except Exception as error:  # missing sub-keys, wrong types, bad colors
        raise _bad(config_path, "problem", f"is not a valid problem ({error!r})") from None
    return problem


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
