"""Fine-tuning learns: short fits beat the untrained model; the best epoch is what comes back.

Every score here is the one ``evaluate`` reports (original size), on images the fit never
saw, except where a test compares the validation score itself.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from _tiny import TINY

from autoseg.builder import build_model
from autoseg.config import Config
from autoseg.data.datamodule import LoaderSettings, SegmentationDataModule
from autoseg.data.io import read_mask
from autoseg.data.prepare import prepare_training_data
from autoseg.data.synthetic import make_synthetic_binary, make_synthetic_multiclass
from autoseg.evaluation import evaluate_model
from autoseg.folder import PredictorFolder
from autoseg.labels.problem import Problem
from autoseg.peft import PEFT_METHODS
from autoseg.peft.apply import trainable_state_dict
from autoseg.runtime import resolve_runtime
from autoseg.training import module
from autoseg.training.module import SegmentationTask
from autoseg.training.trainer import TrainingResult, run_training

MARGIN = 0.1
"""IoU / mIoU a short fit must add over the untrained model and over any constant answer."""

LEARN = {
    **TINY,
    "optim.max_epochs": 10,
    "optim.lr": 1e-2,
    "optim.patience": 100,
    "env.batch_size": 4,
    "env.eval_batch_size": 8,
}
# Multi-class objects are small: 128 px gives the tiny decoder's 32x32 masks room for them.
IMAGE_SIZE = {"binary": 64, "multiclass": 128}
METRIC = {"binary": "iou", "multiclass": "miou"}
EPOCHS = {"binary": 10, "multiclass": 20}
"""Three classes from a frozen random encoder take the decoder alone longer to separate."""


@dataclass(frozen=True)
class Split:
    """16 training, 4 validation and 8 test images of one synthetic data set."""

    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    problem: Problem


def _split(make, root: Path, problem_type: str) -> Split:
    train_csv, test_csv = make(root, n_images=28, size=(48, 64), split_test=8, seed=3)
    table = pd.read_csv(train_csv).map(lambda path: str(root / path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small data sets warn by design
        train, val, problem = prepare_training_data(
            table.iloc[:16], table.iloc[16:], problem_type=problem_type
        )
        _, test, _ = prepare_training_data(table.iloc[:16], test_csv)
    return Split(train, val, test, problem)


@pytest.fixture(scope="module")
def splits(tmp_path_factory) -> dict[str, Split]:
    return {
        "binary": _split(make_synthetic_binary, tmp_path_factory.mktemp("b"), "binary"),
        "multiclass": _split(make_synthetic_multiclass, tmp_path_factory.mktemp("m"), "multiclass"),
    }


@pytest.fixture(autouse=True)
def quiet_lightning():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        yield


def _config(problem_type: str, method: str, **overrides) -> Config:
    settings = {
        **LEARN,
        "data.image_size": IMAGE_SIZE[problem_type],
        "optim.max_epochs": EPOCHS[problem_type],
        "peft.method": method,
    }
    return Config().with_overrides({**settings, **overrides})


def _score(model, split: Split, metric: str, config: Config) -> float:
    runtime = resolve_runtime(config.env, inference=True)
    return evaluate_model(model, split.problem, split.test, [metric], runtime, batch_size=8)[metric]


def _best_constant_score(split: Split, metric: str) -> float:
    """The best score of an answer that ignores the image (one class everywhere)."""
    targets = [split.problem.target(read_mask(path)) for path in split.test["label"]]
    outputs = split.problem.num_outputs
    candidates = [np.ones((1,))] if outputs == 1 else list(np.eye(outputs))
    best = 0.0
    for constant in candidates:
        scorer = split.problem.new_scorer([metric])
        for target in targets:
            if outputs == 1:
                scorer.update(np.full(target.shape, 1.0), target)
            else:
                scorer.update(
                    np.broadcast_to(constant[:, None, None], (outputs, *target.shape)), target
                )
        best = max(best, scorer.compute()[metric])
    return best


def _fit(
    split: Split, config: Config, folder: Path
) -> tuple[float, float, TrainingResult, torch.nn.Module]:
    """Test score of the seeded untrained model, then of the same model after a fit."""
    metric = METRIC[split.problem.problem_type]
    L.seed_everything(0, verbose=False)
    model, _ = build_model(config, split.problem.num_outputs)
    before = _score(model, split, metric, config)
    loader = LoaderSettings(config.env.batch_size, config.env.eval_batch_size)
    datamodule = SegmentationDataModule(
        split.train, split.val, split.problem, config.data, loader, seed=0
    )
    task = SegmentationTask(model, config.optim, config.loss, metric, config.peft)
    result = run_training(task, datamodule, config, PredictorFolder(folder), verbosity=0)
    return before, _score(model, split, metric, config), result, model


def _no_op_optimizer(model: torch.nn.Module, optim) -> torch.optim.AdamW:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=0.0, weight_decay=optim.weight_decay)


@pytest.mark.parametrize("method", PEFT_METHODS)
@pytest.mark.parametrize("problem_type", ["binary", "multiclass"])
def test_short_fit_beats_the_untrained_model(problem_type, method, splits, tmp_path):
    split = splits[problem_type]
    before, after, _, _ = _fit(split, _config(problem_type, method), tmp_path)
    constant = _best_constant_score(split, METRIC[problem_type])
    assert after >= max(before, constant) + MARGIN, (before, constant, after)


def test_a_no_op_optimiser_fails_the_learning_criterion(splits, tmp_path, monkeypatch):
    monkeypatch.setattr(module, "make_optimizer", _no_op_optimizer)
    before, after, _, _ = _fit(splits["binary"], _config("binary", "lora"), tmp_path)
    assert after == before
    assert after < before + MARGIN


def _scripted_validation(monkeypatch, scores: list[float]) -> list[dict[str, torch.Tensor]]:
    """Make validation report ``scores[epoch]``; return the weights each validation saw."""
    seen: list[dict[str, torch.Tensor]] = []

    def scripted(self: SegmentationTask) -> None:
        seen.append({k: v.detach().clone() for k, v in trainable_state_dict(self.model).items()})
        self.log(f"val_{self.eval_metric}", scores[self.trainer.current_epoch])

    monkeypatch.setattr(SegmentationTask, "on_validation_epoch_end", scripted)
    return seen


def test_the_best_validated_weights_come_back_not_the_last(splits, tmp_path, monkeypatch):
    seen = _scripted_validation(monkeypatch, [0.2, 0.9, 0.1, 0.3])
    config = _config("binary", "lora", **{"optim.max_epochs": 4})
    _, _, result, model = _fit(splits["binary"], config, tmp_path)
    assert (result.best_epoch, result.best_score, len(seen)) == (1, pytest.approx(0.9), 4)
    model_state = trainable_state_dict(model)
    best, last = seen[1], seen[3]
    assert any(not torch.equal(best[k], last[k]) for k in best)  # the weights did move
    assert all(torch.equal(model_state[k], best[k]) for k in best)


def test_early_stopping_ends_the_fit_after_patience_epochs_without_gain(
    splits, tmp_path, monkeypatch
):
    seen = _scripted_validation(monkeypatch, [0.9, 0.5, 0.4, 0.3, 0.2, 0.1] + [0.0] * 14)
    config = _config("binary", "lora", **{"optim.max_epochs": 20, "optim.patience": 2})
    _, _, result, _ = _fit(splits["binary"], config, tmp_path)
    assert len(seen) == 3 and result.best_epoch == 0  # epoch 0, then two without gain
