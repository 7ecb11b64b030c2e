"""TimeBudget: training stops early enough that the validation after it ends in time."""

from types import SimpleNamespace

import pytest
from lightning.pytorch.trainer.states import TrainerFn

from autoseg.training.callbacks import TimeBudget


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fake_trainer(fn: TrainerFn = TrainerFn.FITTING) -> SimpleNamespace:
    return SimpleNamespace(
        should_stop=False,
        sanity_checking=False,
        strategy=SimpleNamespace(broadcast=lambda value: value),
        state=SimpleNamespace(fn=fn),
    )


def started(seconds, val_images, clock=None):
    """A budget (batches of one image) whose training has just started, its trainer and clock."""
    clock, trainer = clock or FakeClock(), fake_trainer()
    budget = TimeBudget(seconds, val_images=val_images, batch_size=1, clock=clock)
    budget.on_train_start(trainer, None)
    return budget, trainer, clock


def train(budget, trainer, clock, batches, seconds_per_batch=10.0):
    for _ in range(batches):
        clock.now += seconds_per_batch
        budget.on_train_batch_end(trainer)


def run_batches(budget, trainer, clock, seconds_per_batch, max_batches=1000):
    """Advance the clock batch by batch until the budget stops training; return batches run."""
    for done in range(1, max_batches + 1):
        clock.now += seconds_per_batch
        budget.on_train_batch_end(trainer)
        if trainer.should_stop:
            return done
    raise AssertionError("the budget never stopped training")


def validate(budget, trainer, clock, seconds):
    budget.on_validation_start(trainer, None)
    clock.now += seconds
    budget.on_validation_end(trainer, None)


def test_stops_before_the_estimated_validation_would_pass_the_limit():
    # 10 s per batch of 1; 5 validation images at half a training image's cost: 25 s.
    budget, trainer, clock = started(100, val_images=5)
    batches = run_batches(budget, trainer, clock, 10.0)
    # At 60 s, 60 + 10 (next batch) + 25 (validation) < 100 goes on; at 70 s it stops.
    assert batches == 7
    assert budget.reserve() == pytest.approx(35.0)
    validate(budget, trainer, clock, 25.0)
    assert budget.elapsed() <= 100


def test_measured_validation_time_replaces_the_estimate():
    budget, trainer, clock = started(200, val_images=5)
    train(budget, trainer, clock, 3)
    validate(budget, trainer, clock, 60.0)  # epoch-end validation: slower than estimated
    assert budget.last_val_seconds == 60.0 and not trainer.should_stop
    batches = run_batches(budget, trainer, clock, 10.0)
    # 90 s spent; the next batch and a 60 s validation fit until 130 s: 4 more batches.
    assert batches == 4
    validate(budget, trainer, clock, 60.0)
    assert budget.elapsed() <= 200


def test_epoch_end_validation_stops_when_nothing_more_fits():
    budget, trainer, clock = started(100, val_images=2)
    train(budget, trainer, clock, 1)
    assert not trainer.should_stop
    validate(budget, trainer, clock, 70.0)  # 80 s spent; a batch and a pass need 80 more
    assert trainer.should_stop


def test_validation_outside_fit_and_sanity_checks_are_ignored():
    clock = FakeClock()
    budget = TimeBudget(10, val_images=2, batch_size=1, clock=clock)
    trainer = fake_trainer(TrainerFn.VALIDATING)
    budget.on_train_start(trainer, None)
    validate(budget, trainer, clock, 50.0)
    assert not trainer.should_stop and budget.last_val_seconds == 50.0
    sanity = fake_trainer()
    sanity.sanity_checking = True
    validate(budget, sanity, clock, 30.0)
    assert budget.last_val_seconds == 50.0


def test_rank_zero_decides_for_every_process():
    budget, trainer, clock = started(1, val_images=1)
    trainer.strategy.broadcast = lambda value: False  # rank 0 still has time
    train(budget, trainer, clock, 1, seconds_per_batch=5.0)
    assert not trainer.should_stop


def test_resumed_fit_gets_the_time_that_is_left():
    first, trainer, clock = started(100, val_images=5)
    train(first, trainer, clock, 4)
    saved = first.state_dict()
    assert saved["spent_seconds"] == pytest.approx(40.0)

    resumed = TimeBudget(100, val_images=5, batch_size=1, clock=clock)
    resumed.load_state_dict(saved)
    resumed.on_train_start(trainer, None)
    # 40 s already spent: 3 more batches (to 70 s) instead of 7.
    assert run_batches(resumed, trainer, clock, 10.0) == 3
