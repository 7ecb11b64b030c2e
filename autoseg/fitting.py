"""The fit workflow behind ``SemanticSegmentor.fit``: folder, data, model, training, report."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import pandas as pd
import yaml

from autoseg.arguments import check_fit_arguments, resolve_eval_metric
from autoseg.atomic import atomic_write_text
from autoseg.builder import build_model, normalization_for
from autoseg.config import Config, resolve_config
from autoseg.data.datamodule import LoaderSettings, SegmentationDataModule
from autoseg.data.prepare import prepare_training_data
from autoseg.errors import OutputExistsError, PredictorFolderError, SettingsError
from autoseg.fit_guard import RUN_FILE, is_ddp_worker, keep_usable
from autoseg.models.backbones import SamParts
from autoseg.models.segmenter import SamSegmenter
from autoseg.peft import adapter_parameter_counts
from autoseg.persistence import is_nonempty_dir
from autoseg.problem import Problem
from autoseg.runtime import resolve_runtime
from autoseg.training.fit import RESUME_DIR, FitResult, resume_checkpoint, run_fit
from autoseg.training.module import SegmentationTask
from autoseg.training.report import plot_training_curve

if TYPE_CHECKING:
    from autoseg.predictor import SemanticSegmentor

VALIDATION_OVERLAYS = 4


@dataclass
class FitOutcome:
    """Everything a finished fit hands back to the facade."""

    model: SamSegmenter
    parts: SamParts
    config: Config
    preset: str
    problem: Problem
    eval_metric: str
    folder: Path
    summary: dict[str, Any]
    validation: pd.DataFrame
    is_global_zero: bool


def claim_folder(path: str | Path | None, resume: bool) -> Path:
    """Pick the predictor folder, refusing to overwrite anything (checked before any work)."""
    if path is None:
        if resume:
            raise SettingsError("resume=True needs the path= of the interrupted fit.")
        stamp = dt.datetime.now().strftime("%Y%m%d_%H%M%S_%f")
        return Path("autoseg_models") / f"segmentor_{stamp}"
    folder = Path(path)
    if resume:
        if not resume_checkpoint(folder).is_file():
            raise PredictorFolderError(
                f"Nothing to resume in {folder}: {resume_checkpoint(folder)} does not exist "
                "(a finished fit removes it). Start a new fit with a new path instead."
            )
        return folder
    if is_nonempty_dir(folder) and not is_ddp_worker():
        raise OutputExistsError(
            f"path={str(folder)!r} already exists and is not empty; autoseg never "
            "overwrites a predictor silently. Pass a new path, or delete that folder."
        )
    return folder


def _run_settings(
    seg: SemanticSegmentor, folder: Path, resume: bool, hyperparameters: dict[str, Any] | None
) -> tuple[Config, str]:
    """The config of this run; a resumed run reuses the interrupted run's exact config."""
    run_file = folder / RESUME_DIR / RUN_FILE
    if resume:
        saved = yaml.safe_load(run_file.read_text())
        return Config.from_dict(saved["config"]), saved["preset"]
    return resolve_config(seg.presets, seg.hyperparameters, hyperparameters)


def fit_segmentor(
    seg: SemanticSegmentor,
    train_data: Any,
    tuning_data: Any = None,
    time_limit: float | None = None,
    hyperparameters: dict[str, Any] | None = None,
    resume: bool = False,
    finish: Callable[[FitOutcome], None] | None = None,
) -> FitOutcome:
    """Check the arguments, claim the folder, train, then ``finish`` (save) the outcome.

    Everything after the folder is claimed runs under :func:`~autoseg.fit_guard.keep_usable`:
    a failure (``finish`` included) leaves a resumable folder or none of autoseg's files.
    """
    check_fit_arguments(
        path=seg.path,
        time_limit=time_limit,
        problem_type=seg.problem_type,
        eval_metric=seg.eval_metric,
        hyperparameters=[seg.hyperparameters, hyperparameters],
        seed=seg.seed,
        verbosity=seg.verbosity,
    )
    folder = claim_folder(seg.path, resume)
    with keep_usable(folder):
        outcome = _train(seg, folder, train_data, tuning_data, time_limit, hyperparameters, resume)
        if finish is not None:
            finish(outcome)
    return outcome


def _train(
    seg: SemanticSegmentor,
    folder: Path,
    train_data: Any,
    tuning_data: Any,
    time_limit: float | None,
    hyperparameters: dict[str, Any] | None,
    resume: bool,
) -> FitOutcome:
    """Validate the data, build the model, train, and draw the training curve."""
    config, preset = _run_settings(seg, folder, resume, hyperparameters)
    train, val, problem = prepare_training_data(
        train_data,
        tuning_data,
        image_col=seg.image,
        label_col=seg.label,
        problem_type=seg.problem_type,
        class_names=seg.class_names,
        seed=seg.seed,
        class_colors=seg.class_colors,
    )
    eval_metric = resolve_eval_metric(problem, seg.eval_metric)
    L.seed_everything(seg.seed, verbose=False)
    model, parts = build_model(config, problem.num_outputs)
    counts = adapter_parameter_counts(model)
    seg._say(
        f"autoseg: preset {preset!r}, backbone {config.model.backbone} at "
        f"{config.data.image_size} px, {config.peft.method}: {counts['trainable']:,} "
        f"trainable of {counts['total']:,} parameters "
        f"({100 * counts['trainable'] / counts['total']:.2f}%); {problem.problem_type}, "
        f"{len(train)} training / {len(val)} validation images; saving to {folder}"
        + (" (resuming)" if resume else "")
    )
    (folder / RESUME_DIR).mkdir(parents=True, exist_ok=True)
    if not resume and not is_ddp_worker():
        run = {"preset": preset, "config": config.to_dict()}
        atomic_write_text(folder / RESUME_DIR / RUN_FILE, yaml.safe_dump(run, sort_keys=False))
    env = config.env
    loader = LoaderSettings(
        env.batch_size, env.eval_batch_size, env.num_workers, resolve_runtime(env).pin_memory
    )
    normalization = normalization_for(config.model.backbone)
    datamodule = SegmentationDataModule(
        train, val, problem, config.data, loader, normalization, seg.seed
    )
    task = SegmentationTask(
        model, config.optim, config.loss, eval_metric, config.peft.balance_weight
    )
    result = run_fit(task, datamodule, config, folder, time_limit, seg.verbosity, resume=resume)
    if result.is_global_zero:
        plot_training_curve(folder, eval_metric)
    summary = _summary(result, counts, eval_metric)
    return FitOutcome(
        model,
        parts,
        config,
        preset,
        problem,
        eval_metric,
        folder,
        summary,
        val.head(VALIDATION_OVERLAYS),
        result.is_global_zero,
    )


def _summary(result: FitResult, counts: dict[str, int], eval_metric: str) -> dict[str, Any]:
    """The fit summary saved in ``config.yaml``."""
    return {
        "epochs": result.epochs,
        "steps": result.steps,
        "best_epoch": result.best_epoch,
        f"best_val_{eval_metric}": result.best_score,
        "fit_time_s": round(result.fit_time_s, 1),
        "trainable_parameters": counts["trainable"],
        "total_parameters": counts["total"],
    }
