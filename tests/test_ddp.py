"""Multi-process training: Lightning DDP over gloo with two CPU processes."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from _cli import fit_command, one_thread_env
from _tiny import TINY, as_cli_settings

from autoseg import SemanticSegmentor
from autoseg.data.synthetic import make_synthetic_binary


@pytest.mark.slow
def test_ddp_two_cpu_processes_give_a_loadable_predictor(tmp_path):
    train_csv, test_csv = make_synthetic_binary(
        tmp_path / "data", n_images=10, size=(40, 56), split_test=2, seed=6
    )
    out = tmp_path / "model"
    settings = as_cli_settings(
        {**TINY, "optim.max_epochs": 2, "env.accelerator": "cpu", "env.num_gpus": 2}
    )
    command = fit_command(train_csv, out, settings)
    env = one_thread_env()
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)  # only rank zero prints
    assert summary["epochs"] == 2 and summary["best_val_iou"] is not None
    # 7 training images split over 2 processes, batch 2, accumulation 2: 1 step per epoch.
    assert summary["steps"] == 2
    loaded = SemanticSegmentor.load(out, verbosity=0)
    probabilities = loaded.predict_proba(test_csv)
    assert [p.shape for p in probabilities] == [(40, 56)] * 2
    assert all(np.isfinite(p).all() for p in probabilities)
