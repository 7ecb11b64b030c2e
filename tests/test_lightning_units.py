"""The Lightning layer on its own: SegmentationTask and SegmentationDataModule with fast_dev_run."""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
from _tiny import TINY

from autoseg.builder import build_model
from autoseg.config import Config
from autoseg.data.datamodule import LoaderSettings, SegmentationDataModule
from autoseg.data.prepare import prepare_training_data
from autoseg.data.synthetic import make_synthetic_binary, make_synthetic_multiclass
from autoseg.training.module import SegmentationTask


def _datamodule(csv: Path, config: Config, **prepare) -> SegmentationDataModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small data sets warn by design
        train, val, problem = prepare_training_data(csv, **prepare)
    loader = LoaderSettings(batch_size=2, eval_batch_size=3)
    return SegmentationDataModule(train, val, problem, config.data, loader, seed=0)


@pytest.fixture(autouse=True)
def quiet_frozen_modules_warning():
    with warnings.catch_warnings():
        # frozen batch-norm and encoder modules stay in eval mode on purpose
        warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")
        yield


def _trainer(**kwargs) -> L.Trainer:
    settings = dict(
        accelerator="cpu",
        fast_dev_run=True,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    settings.update(kwargs)
    return L.Trainer(**settings)


@pytest.fixture(scope="module")
def binary_csv(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("b")
    return make_synthetic_binary(root, n_images=10, size=(40, 56), split_test=2)[0]


@pytest.fixture(scope="module")
def multiclass_csv(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("m")
    return make_synthetic_multiclass(root, n_images=10, size=(40, 56), split_test=2)[0]


def test_datamodule_serves_padded_batches_with_targets(binary_csv):
    config = Config().with_overrides(TINY)
    dm = _datamodule(binary_csv, config)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 3, 64, 64) and batch["mask"].shape == (2, 64, 64)
    assert set(batch["mask"].unique().tolist()) <= {0, 1, 255}
    assert (batch["mask"][:, 46:, :] == 255).all(), "padding below the 40x56 image is ignored"
    val = next(iter(dm.val_dataloader()))
    assert val["image"].shape[0] == min(3, len(dm.val_table))


@pytest.mark.parametrize(("problem", "method"), [("binary", "conv_lora"), ("multiclass", "lora")])
def test_task_trains_and_validates_one_batch(problem, method, binary_csv, multiclass_csv):
    config = Config().with_overrides({**TINY, "peft.method": method})
    csv = binary_csv if problem == "binary" else multiclass_csv
    dm = _datamodule(csv, config, problem_type=problem)
    model, _ = build_model(config, dm.problem.num_outputs)
    metric = "iou" if problem == "binary" else "miou"
    task = SegmentationTask(model, config.optim, config.loss, metric, config.peft)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trainer = _trainer()
    trainer.fit(task, datamodule=dm)
    logged = trainer.callback_metrics
    assert f"val_{metric}" in logged and torch.isfinite(logged[f"val_{metric}"])
    assert torch.isfinite(logged["train_loss"])
    after = dict(model.named_parameters())
    assert any(not torch.equal(before[n], after[n]) for n in before), "no trainable weight moved"
    assert all(torch.equal(frozen[n], after[n]) for n in frozen), "a frozen weight moved"


def test_task_optimiser_decays_linearly_to_zero(binary_csv):
    config = Config().with_overrides({**TINY, "optim.max_steps": 4})
    dm = _datamodule(binary_csv, config)
    task = SegmentationTask(build_model(config, 1)[0], config.optim, config.loss, "iou")
    trainer = _trainer(fast_dev_run=False, max_steps=4, limit_val_batches=0)
    trainer.fit(task, datamodule=dm)
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert scheduler.get_last_lr()[0] == pytest.approx(0.0, abs=1e-12)
    assert trainer.optimizers[0].defaults["weight_decay"] == config.optim.weight_decay


def test_resume_checkpoints_hold_trainable_weights_and_plain_hyperparameters(binary_csv, tmp_path):
    config = Config().with_overrides(TINY)
    dm = _datamodule(binary_csv, config)
    model = build_model(config, 1)[0]
    task = SegmentationTask(model, config.optim, config.loss, "iou", config.peft)
    trainer = _trainer()
    trainer.fit(task, datamodule=dm)
    path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(path)
    saved = torch.load(path, weights_only=True)  # no pickled objects
    trainable = {f"model.{n}" for n, p in model.named_parameters() if p.requires_grad}
    assert set(saved["state_dict"]) == trainable
    assert saved["hyper_parameters"]["optim"]["lr"] == config.optim.lr
    assert saved["hyper_parameters"]["peft"] == config.peft.to_dict()
    assert saved["hyper_parameters"]["balance_weight"] == 0.01
