"""Settings for seconds-long fits on the tiny random SAM, shared by the tests."""

from __future__ import annotations

TINY = {
    "model.backbone": "vit_tiny",
    "data.image_size": 64,
    "optim.max_epochs": 1,
    "optim.lr": 1e-3,
    "env.batch_size": 2,
    "env.eval_batch_size": 4,
    "env.num_workers": 0,
}
"""One epoch: enough for tests of what a fit writes, not of what it learns."""

TINY_MULTICLASS = {**TINY, "optim.max_epochs": 3}
"""Three epochs, for the multi-class tests."""


def as_cli_settings(hyperparameters: dict[str, object]) -> list[str]:
    """The same settings as ``autoseg fit --set key=value`` arguments."""
    return [f"{key}={value}" for key, value in hyperparameters.items()]
