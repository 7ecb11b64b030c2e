"""The training workflow behind ``SemanticSegmentor.fit``: folder, data, model, training, report.

The facade hands over a :class:`FitRequest` (its settings and the call's arguments) and a
``say`` callback; :func:`finetune` returns a :class:`TrainedPredictor` whose state the facade
adopts and saves.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import pandas as pd
import yaml

from autoseg.arguments import check_fit_arguments, resolve_eval_metric
from autoseg.atomic import atomic_write_text
from autoseg.builder import build_model
from autoseg.config import Config
from autoseg.data.datamodule import LoaderSettings, SegmentationDataModule
from autoseg.data.prepare import prepare_training_data
from autoseg.errors import OutputExistsError, PredictorFolderError, SettingsError
from autoseg.failsafe import is_ddp_worker, keep_usable
from autoseg.folder import PredictorFolder
from autoseg.labels.problem import Problem
from autoseg.peft import adapter_parameter_counts
from autoseg.persistence import is_nonempty_dir
from autoseg.preset_choice import resolve_config
from autoseg.state import PredictorState
from autoseg.training.module import SegmentationTask
from autoseg.training.report import plot_training_curve
from autoseg.training.trainer import TrainingResult, run_training

VALIDATION_OVERLAYS = 4


@dataclass(frozen=True)
class FitRequest:
    """One ``fit`` call: its arguments and the predictor's settings.

    ``hyperparameters`` holds the constructor's, then the call's overrides (each may be
    ``None``); later ones win.

    Example:
        >>> request = FitRequest("train.csv", hyperparameters=({"optim.lr": 3e-4}, None))
        >>> request.presets, request.resume, request.path
        ('auto', False, None)

    """

    train_data: Any
    tuning_data: Any = None
    time_limit: float | None = None
    hyperparameters: tuple[Mapping[str, Any] | None, ...] = ()
    resume: bool = False
    problem_type: str = "auto"
    image: str = "image"
    label: str = "label"
    presets: str = "auto"
    eval_metric: str | None = None
    seed: int = 0
    verbosity: int = 2
    class_names: list[str] | None = None
    class_colors: Mapping[Any, str | None] | None = None
    path: str | Path | None = None

    PREDICTOR_SETTINGS: ClassVar[tuple[str, ...]] = (
        "problem_type",
        "image",
        "label",
        "presets",
        "eval_metric",
        "seed",
        "verbosity",
        "class_names",
        "class_colors",
        "path",
    )
    """The fields that come from the predictor's constructor, by the same names."""


@dataclass
class TrainedPredictor:
    """A finished training run: the state to adopt, its folder, a few validation rows."""

    state: PredictorState
    folder: PredictorFolder
    validation: pd.DataFrame
    is_global_zero: bool


def finetune(
    request: FitRequest,
    say: Callable[[str], None],
    finish: Callable[[TrainedPredictor], None],
) -> TrainedPredictor:
    """Check the arguments, claim the folder, train, then ``finish`` (save) the result.

    Everything after the folder is claimed runs under :func:`~autoseg.failsafe.keep_usable`:
    a failure (``finish`` included) leaves a resumable folder or none of autoseg's files.
    """
    check_fit_arguments(
        path=request.path,
        time_limit=request.time_limit,
        problem_type=request.problem_type,
        eval_metric=request.eval_metric,
        hyperparameters=list(request.hyperparameters),
        seed=request.seed,
        verbosity=request.verbosity,
    )
    folder = claim_folder(request.path, request.resume)
    with keep_usable(folder.root):
        trained = _train(request, folder, say)
        finish(trained)
    if trained.is_global_zero:
        # Only once the predictor is saved: a failure before this point stays resumable.
        shutil.rmtree(folder.resume_dir, ignore_errors=True)
    return trained


def claim_folder(path: str | Path | None, resume: bool) -> PredictorFolder:
    """Pick the predictor folder, refusing to overwrite anything (checked before any work)."""
    if path is None:
        if resume:
            raise SettingsError("resume=True needs the path= of the interrupted fit.")
        stamp = dt.datetime.now().strftime("%Y%m%d_%H%M%S_%f")
        return PredictorFolder(Path("autoseg_models") / f"segmentor_{stamp}")
    folder = PredictorFolder(path)
    if resume:
        if not folder.resume_checkpoint.is_file():
            raise PredictorFolderError(
                f"Nothing to resume in {folder.root}: {folder.resume_checkpoint} does not "
                "exist (a finished fit removes it). Start a new fit with a new path instead."
            )
        return folder
    if is_nonempty_dir(folder.root) and not is_ddp_worker():
        raise OutputExistsError(
            f"path={str(folder.root)!r} already exists and is not empty; autoseg never "
            "overwrites a predictor silently. Pass a new path, or delete that folder."
        )
    return folder


def _run_settings(request: FitRequest, folder: PredictorFolder) -> tuple[Config, str]:
    """The config of this run; a resumed run reuses the interrupted run's exact config."""
    if request.resume:
        saved = yaml.safe_load(folder.run_file.read_text())
        return Config.from_dict(saved["config"]), saved["preset"]
    return resolve_config(request.presets, *request.hyperparameters)


def _keep_run_settings(folder: PredictorFolder, config: Config, preset: str, resume: bool) -> None:
    """Write the run's settings beside the resume checkpoint, for ``fit(resume=True)``."""
    folder.resume_dir.mkdir(parents=True, exist_ok=True)
    if not resume and not is_ddp_worker():
        run = {"preset": preset, "config": config.to_dict()}
        atomic_write_text(folder.run_file, yaml.safe_dump(run, sort_keys=False))


def _train(
    request: FitRequest, folder: PredictorFolder, say: Callable[[str], None]
) -> TrainedPredictor:
    """Validate the data, build the model, train, and draw the training curve."""
    config, preset = _run_settings(request, folder)
    train, val, problem = prepare_training_data(
        request.train_data,
        request.tuning_data,
        image_col=request.image,
        label_col=request.label,
        problem_type=request.problem_type,
        class_names=request.class_names,
        seed=request.seed,
        class_colors=request.class_colors,
    )
    eval_metric = resolve_eval_metric(problem, request.eval_metric)
    L.seed_everything(request.seed, verbose=False)
    model, parts = build_model(config, problem.num_outputs)
    counts = adapter_parameter_counts(model)
    say(_start_message(preset, config, counts, problem, len(train), len(val), folder, request))
    _keep_run_settings(folder, config, preset, request.resume)
    datamodule = _datamodule(config, train, val, problem, request.seed)
    task = SegmentationTask(model, config.optim, config.loss, eval_metric, config.peft)
    result = run_training(
        task, datamodule, config, folder, request.time_limit, request.verbosity, request.resume
    )
    if result.is_global_zero:
        plot_training_curve(folder.metrics_csv, folder.curve, eval_metric)
    state = PredictorState(
        config=config,
        preset=preset,
        problem=problem,
        eval_metric=eval_metric,
        backbone={
            "name": config.model.backbone,
            "checkpoint_path": parts.checkpoint_path,
            "checkpoint_sha256": parts.checkpoint_sha256,
        },
        fit_summary=_summary(result, counts, eval_metric, rows=(len(train), len(val))),
        columns={"image": request.image, "label": request.label},
    )
    validation = val.head(VALIDATION_OVERLAYS)
    return TrainedPredictor(state.with_model(model), folder, validation, result.is_global_zero)


def _datamodule(
    config: Config, train: pd.DataFrame, val: pd.DataFrame, problem: Problem, seed: int
) -> SegmentationDataModule:
    loader = LoaderSettings.for_training(config.env)
    channels = config.model.in_channels
    return SegmentationDataModule(train, val, problem, config.data, loader, seed, channels)


def _start_message(
    preset: str,
    config: Config,
    counts: dict[str, int],
    problem: Problem,
    n_train: int,
    n_val: int,
    folder: PredictorFolder,
    request: FitRequest,
) -> str:
    return (
        f"autoseg: preset {preset!r}, backbone {config.model.backbone} at "
        f"{config.data.image_size} px, {config.peft.method}: {counts['trainable']:,} "
        f"trainable of {counts['total']:,} parameters "
        f"({100 * counts['trainable'] / counts['total']:.2f}%); {problem.problem_type}, "
        f"{n_train} training / {n_val} validation images; saving to {folder.root}"
        + (" (resuming)" if request.resume else "")
    )


def done_message(trained: TrainedPredictor) -> str:
    """What ``fit`` tells the user at the end: time, best score, folder, how to load it."""
    summary, metric, root = trained.state.fit_summary, trained.state.eval_metric, trained.folder
    return (
        f"autoseg: done in {summary['fit_time_s']:.0f} s; best validation "
        f"{metric} {summary[f'best_val_{metric}']}.\n"
        f"  folder: {root.root} ({root.CONFIG}, {root.ADAPTER}, logs/metrics.csv, "
        "TensorBoard logs in logs/tensorboard, training_curve.png, validation_overlays/)\n"
        f"  load it with: SemanticSegmentor.load({str(root.root)!r})"
    )


def _summary(
    result: TrainingResult, counts: dict[str, int], eval_metric: str, rows: tuple[int, int]
) -> dict[str, Any]:
    """The fit summary saved in ``config.yaml`` (``rows``: training and validation images)."""
    return {
        "train_rows": rows[0],
        "val_rows": rows[1],
        **_warm_start_summary(result),
        **_prefix_cache_summary(result),
        "epochs": result.epochs,
        "steps": result.steps,
        "best_epoch": result.best_epoch,
        f"best_val_{eval_metric}": result.best_score,
        "fit_time_s": round(result.fit_time_s, 1),
        "trainable_parameters": counts["trainable"],
        "total_parameters": counts["total"],
    }


def _warm_start_summary(result: TrainingResult) -> dict[str, Any]:
    """The decoder warm start's steps, cached variants and time (nothing when it did not run)."""
    warm = result.warm_start
    if warm is None:
        return {}
    return {
        "warm_start_steps": warm.steps,
        "warm_start_variants": warm.variants,
        "warm_start_s": round(warm.seconds, 1),
    }


def _prefix_cache_summary(result: TrainingResult) -> dict[str, Any]:
    """The frozen-prefix cache's hits and misses (nothing when it was off)."""
    if result.prefix_cache is None:
        return {}
    hits, misses = result.prefix_cache
    return {"prefix_cache_hits": hits, "prefix_cache_misses": misses}
