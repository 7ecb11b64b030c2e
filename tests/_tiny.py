"""Settings for a seconds-long fit on the tiny random SAM, shared by the multi-class tests."""

from __future__ import annotations

TINY_MULTICLASS = {
    "model.backbone": "vit_tiny",
    "data.image_size": 64,
    "optim.max_epochs": 3,
    "optim.lr": 1e-3,
    "env.batch_size": 2,
    "env.eval_batch_size": 4,
    "env.num_workers": 0,
}
