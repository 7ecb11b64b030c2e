"""The learning-rate schedule fits the steps a time limit leaves, and resumes where it was."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest
import torch
from _tiny import TINY
from lightning.pytorch.trainer.states import TrainerFn

from autoseg.builder import build_model
from autoseg.data.datamodule import LoaderSettings, SegmentationDataModule
from autoseg.data.prepare import prepare_training_data
from autoseg.data.synthetic import make_synthetic_binary
from autoseg.errors import SettingsError
from autoseg.folder import PredictorFolder
from autoseg.preset_choice import load_preset
from autoseg.training.callbacks import TimeBudget
from autoseg.training.module import SegmentationTask
from autoseg.training.schedule import BudgetSchedule, reachable_steps
from autoseg.training.trainer import build_trainer


def _schedule(horizon: int, warmup: float = 0.0, lr: float = 1.0) -> BudgetSchedule:
    optimizer = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=lr)
    return BudgetSchedule(optimizer, horizon, warmup)


def _rate(schedule: BudgetSchedule) -> float:
    return schedule.optimizer.param_groups[0]["lr"]


def test_linear_decay_reaches_zero_at_the_horizon():
    schedule = _schedule(4)
    rates = []
    for _ in range(5):
        rates.append(_rate(schedule))
        schedule.optimizer.step()
        schedule.step()
    assert rates == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])


def test_warmup_rises_then_decays_over_the_same_horizon():
    schedule = _schedule(10, warmup=0.2)
    factors = [schedule.factor(step) for step in range(11)]
    assert factors[0] < factors[1] < factors[2] and factors[2] == pytest.approx(0.8)
    assert factors[-1] == 0.0 and max(factors) <= 1.0


def test_retarget_applies_now_and_never_moves_before_the_next_step():
    schedule = _schedule(100)
    for _ in range(10):
        schedule.optimizer.step()
        schedule.step()
    schedule.retarget(20)
    assert _rate(schedule) == pytest.approx(0.5)
    schedule.retarget(3)  # already past: the rate is at its last non-zero step
    assert schedule.horizon == 11 and _rate(schedule) == pytest.approx(1 - 10 / 11)


def test_state_dict_carries_the_horizon_into_a_resumed_fit():
    first = _schedule(100, warmup=0.1)
    for _ in range(7):
        first.optimizer.step()
        first.step()
    first.retarget(30)
    resumed = _schedule(100, warmup=0.1)
    resumed.load_state_dict(first.state_dict())
    assert resumed.horizon == 30 and resumed.last_epoch == 7
    for _ in range(5):
        first.optimizer.step(), first.step()
        resumed.optimizer.step(), resumed.step()
        assert _rate(resumed) == pytest.approx(_rate(first))


def test_reachable_steps_counts_validation_and_accumulation():
    # 10 batches an epoch at 1 s plus a 10 s validation: 2 s a batch; 2 batches a step.
    assert reachable_steps(0, 100, 1.0, 10.0, 10, 2) == 25
    assert reachable_steps(5, -3, 1.0, 10.0, 10, 2) == 5
    assert reachable_steps(5, 100, 0.0, 0.0, 10, 1) == 6


class _Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def _fake_trainer(schedule: BudgetSchedule) -> SimpleNamespace:
    return SimpleNamespace(
        should_stop=False,
        sanity_checking=False,
        strategy=SimpleNamespace(broadcast=lambda value: value),
        state=SimpleNamespace(fn=TrainerFn.FITTING),
        lr_scheduler_configs=[SimpleNamespace(scheduler=schedule)],
        global_step=0,
        num_training_batches=10,
        accumulate_grad_batches=1,
        estimated_stepping_batches=3000,  # 300 epochs of 10: far beyond the time limit
    )


@pytest.mark.parametrize("fit_schedule", [True, False])
def test_time_limited_fit_ends_annealed_only_with_the_budget_schedule(fit_schedule):
    schedule = _schedule(3000)
    clock, trainer = _Clock(), _fake_trainer(schedule)
    budget = TimeBudget(200, val_images=4, batch_size=1, clock=clock, fit_schedule=fit_schedule)
    budget.on_train_start(trainer, None)
    while not trainer.should_stop:
        clock.now += 2.0
        schedule.optimizer.step()
        schedule.step()
        trainer.global_step += 1
        budget.on_train_batch_end(trainer)
        if trainer.global_step % 10 == 0 and not trainer.should_stop:
            budget.on_validation_start(trainer, None)
            clock.now += 4.0
            budget.on_validation_end(trainer, None)
    steps = trainer.global_step
    assert 60 <= steps <= 90  # 200 s at 2 s a batch and 4 s every 10 batches
    if fit_schedule:
        assert schedule.horizon <= steps + 2 and _rate(schedule) <= 2 / steps
    else:
        assert schedule.horizon == 3000 and _rate(schedule) > 0.95


def test_schedule_setting_is_checked():
    with pytest.raises(SettingsError, match="optim.schedule"):
        load_preset("cpu_lite").with_overrides({"optim.schedule": "cosine"})
    with pytest.raises(SettingsError, match="optim.warmup_fraction"):
        load_preset("cpu_lite").with_overrides({"optim.warmup_fraction": 0.9})


def test_a_real_time_limited_fit_retargets_its_schedule(tmp_path):
    """Through Lightning: the trainer's schedule horizon follows the time limit."""
    csv = make_synthetic_binary(tmp_path / "d", n_images=10, size=(40, 56), split_test=2)[0]
    config = load_preset("cpu_lite").with_overrides(
        {**TINY, "optim.max_epochs": 500, "optim.patience": 1000}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train, val, problem = prepare_training_data(csv)
        loader = LoaderSettings(batch_size=2, eval_batch_size=4)
        data = SegmentationDataModule(train, val, problem, config.data, loader, seed=0)
        model, _ = build_model(config, problem.num_outputs)
        task = SegmentationTask(model, config.optim, config.loss, "iou", config.peft)
        folder = PredictorFolder(tmp_path / "run")
        trainer, _ = build_trainer(config, folder, "val_iou", 4.0, 0, len(val))
        trainer.fit(task, data)
    schedule = trainer.lr_scheduler_configs[0].scheduler
    assert isinstance(schedule, BudgetSchedule)
    assert trainer.estimated_stepping_batches >= 500  # what the epoch limit alone would span
    assert schedule.horizon < trainer.estimated_stepping_batches / 4
    assert schedule.horizon <= trainer.global_step + 5 * max(1, trainer.global_step // 10)
