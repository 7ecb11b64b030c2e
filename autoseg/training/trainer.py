"""One training run: Trainer set-up (precision, clipping, accumulation, early stop, time limit)."""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from autoseg.config import Config
from autoseg.data.datamodule import SegmentationDataModule
from autoseg.data.dataset import SegmentationDataset
from autoseg.folder import PredictorFolder
from autoseg.metrics import HIGHER_IS_BETTER
from autoseg.models.prefix_cache import FrozenPrefixCache, cached_prefix
from autoseg.runtime import Runtime, resolve_runtime
from autoseg.training.callbacks import BestWeightsKeeper, TimeBudget
from autoseg.training.module import SegmentationTask
from autoseg.training.warm_start import WarmStart, warm_start_decoder


@dataclass
class TrainingResult:
    """What a training run did: epochs and steps run, best validation score, wall time."""

    epochs: int
    steps: int
    best_score: float | None
    best_epoch: int | None
    fit_time_s: float
    is_global_zero: bool = True
    warm_start: WarmStart | None = None
    prefix_cache: tuple[int, int] | None = None  # (hits, misses) of the frozen-prefix cache


def metric_mode(metric: str) -> str:
    """``max`` for scores, ``min`` for errors (mae, ber)."""
    return "max" if HIGHER_IS_BETTER.get(metric, True) else "min"


def resolve_strategy(config: Config) -> tuple[int, str]:
    """Devices per node and the Lightning strategy (DDP when more than one process).

    Conv-LoRA experts that receive no sample in a step get no gradient, so DDP must look for
    unused parameters. In notebooks, DDP runs in forked processes (Lightning's
    notebook-safe launcher) instead of re-running the script.
    """
    devices = max(1, config.env.num_gpus)
    if config.env.strategy != "auto":
        return devices, config.env.strategy
    if devices * config.env.num_nodes == 1:
        return devices, "auto"
    from lightning.fabric.utilities.imports import _IS_INTERACTIVE

    if _IS_INTERACTIVE:
        return devices, "ddp_notebook_find_unused_parameters_true"
    return devices, "ddp_find_unused_parameters_true"


def _stopping_and_saving(
    config: Config, folder: PredictorFolder, monitor: str, mode: str
) -> list[L.Callback]:
    """Early stopping on the monitored metric, and the periodic resume checkpoint."""
    # strict=False: a run that ends on max_steps mid-epoch has no last validation.
    stopper = EarlyStopping(
        monitor=monitor,
        mode=mode,
        patience=config.optim.patience,
        check_finite=False,
        strict=False,
    )
    # save_last writes ``last.ckpt``: folder.resume_checkpoint.
    resume_saver = ModelCheckpoint(
        dirpath=folder.resume_dir,
        filename="step{step}",
        save_top_k=0,
        save_last=True,
        every_n_train_steps=max(1, config.env.checkpoint_every_n_steps),
    )
    return [stopper, resume_saver]


def build_trainer(
    config: Config,
    folder: PredictorFolder,
    monitor: str,
    time_limit: float | None,
    verbosity: int,
    val_images: int = 0,
    spent_seconds: float = 0.0,
) -> tuple[L.Trainer, BestWeightsKeeper]:
    """Configure a Trainer for one run and return it with its best-weights keeper."""
    mode = metric_mode(monitor.removeprefix("val_"))
    keeper = BestWeightsKeeper(monitor, mode=mode)
    callbacks = [keeper, *_stopping_and_saving(config, folder, monitor, mode)]
    if time_limit:
        fit_schedule = config.optim.schedule == "budget"
        budget = TimeBudget(
            time_limit, val_images, config.env.batch_size, fit_schedule=fit_schedule
        )
        budget.spent_before = spent_seconds  # e.g. the decoder warm start's
        callbacks.append(budget)
    devices, strategy = resolve_strategy(config)
    env = config.env
    runtime = resolve_runtime(env)
    trainer = L.Trainer(
        accelerator=runtime.accelerator,
        devices=devices,
        num_nodes=env.num_nodes,
        strategy=strategy,
        precision=runtime.precision,
        max_epochs=config.optim.max_epochs,
        max_steps=config.optim.max_steps,
        gradient_clip_val=config.optim.grad_clip,
        accumulate_grad_batches=max(1, env.effective_batch_size // env.batch_size),
        callbacks=callbacks,
        logger=[
            CSVLogger(str(folder.root), name=folder.logs.name, version=""),
            TensorBoardLogger(
                str(folder.root), name=folder.logs.name, version=folder.tensorboard.name
            ),
        ],
        enable_progress_bar=verbosity >= 2,
        enable_model_summary=verbosity >= 3,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        default_root_dir=str(folder.root),
    )
    return trainer, keeper


@contextlib.contextmanager
def _quiet_lightning(verbosity: int) -> Iterator[None]:
    """Hide Lightning's start-up chatter (device lines, tips) below verbosity 3."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    if verbosity < 3:
        for logger in loggers:
            logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def run_training(
    task: SegmentationTask,
    datamodule: SegmentationDataModule,
    config: Config,
    folder: PredictorFolder,
    time_limit: float | None = None,
    verbosity: int = 2,
    resume: bool = False,
) -> TrainingResult:
    """Train ``task`` on ``datamodule``; the best validated weights end up in the model.

    With ``resume``, training continues from the folder's last resume checkpoint (loaded
    with ``weights_only=True``: tensors and plain data only, no code). The training
    workflow removes it once the predictor is saved, so a finished predictor folder holds
    no pickle files. Torch threads, encoder compilation and the frozen-prefix cache follow
    :func:`~autoseg.runtime.resolve_runtime`; the caller's thread count is restored after,
    and the cache is removed.
    """
    runtime = resolve_runtime(config.env)
    runtime.prepare(task.model)
    monitor = f"val_{task.eval_metric}"
    start = time.perf_counter()
    task.model.train()
    with (
        runtime.threads(),
        _prefix_cache(task, runtime) as cache,
        warnings.catch_warnings(),
        _quiet_lightning(verbosity),
    ):
        # Frozen batch-norm layers stay in eval mode on purpose (see SamSegmenter.train).
        warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")
        warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*")
        warm = _warm_start(task, datamodule, config, time_limit, resume)
        trainer, keeper = build_trainer(
            config,
            folder,
            monitor,
            time_limit,
            verbosity,
            len(datamodule.val_table),
            spent_seconds=0.0 if warm is None else warm.seconds,
        )
        ckpt = folder.resume_checkpoint if resume else None
        trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
        if keeper.best_score is None:
            # Stopped (max_steps, time limit) before any validation: score the final weights
            # so the saved predictor always carries a measured validation score.
            trainer.validate(task, datamodule=datamodule, verbose=False)
        # The finished run, best weights included, stays resumable until the predictor is
        # saved: a failure while saving then loses no training.
        trainer.save_checkpoint(folder.resume_checkpoint)
    return TrainingResult(
        epochs=trainer.current_epoch,
        steps=trainer.global_step,
        best_score=keeper.best_score,
        best_epoch=keeper.best_epoch,
        fit_time_s=time.perf_counter() - start,
        is_global_zero=trainer.is_global_zero,
        warm_start=warm,
        prefix_cache=None if cache is None else (cache.hits, cache.misses),
    )


def _prefix_cache(
    task: SegmentationTask, runtime: Runtime
) -> contextlib.AbstractContextManager[FrozenPrefixCache | None]:
    """The frozen-prefix cache for a fit, where the runtime asks for it."""
    return cached_prefix(task.model) if runtime.prefix_cache else contextlib.nullcontext()


def _warm_start(
    task: SegmentationTask,
    datamodule: SegmentationDataModule,
    config: Config,
    time_limit: float | None,
    resume: bool,
) -> WarmStart | None:
    """The decoder warm-start phase, where it applies (see :mod:`autoseg.training.warm_start`).

    A resumed fit skips it: its checkpoint holds the warmed decoder. Native-scale crops
    (``data.crop_size``) skip it too: whole-image embeddings are not the crops' scale.
    """
    if config.optim.warm_start <= 0 or resume or config.data.crop_size is not None:
        return None
    images = SegmentationDataset(
        datamodule.train_table, config.data.image_size, target_fn=datamodule.problem.target
    )
    runtime = resolve_runtime(config.env)
    return warm_start_decoder(task.model, images, config, runtime, time_limit, datamodule.seed)
