"""A fit killed mid-epoch resumes from its last checkpoint and finishes the planned run."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
import torch
from _cli import fit_command, one_thread_env
from _tiny import TINY, as_cli_settings

from autoseg.data.synthetic import make_synthetic_binary

SETTINGS = as_cli_settings(
    {
        **TINY,
        "optim.max_epochs": 3,
        "optim.patience": 100,
        "env.batch_size": 1,
        "env.effective_batch_size": 1,
        "env.checkpoint_every_n_steps": 4,
    }
)


@pytest.mark.slow
def test_killed_fit_resumes_to_the_end(tmp_path):
    # 28 training rows -> 3 validation, 25 training images -> 25 optimiser steps per epoch.
    train_csv, _ = make_synthetic_binary(
        tmp_path / "data", n_images=30, size=(40, 56), split_test=2, seed=5
    )
    out = tmp_path / "model"
    command = fit_command(train_csv, out, SETTINGS)
    checkpoint = out / "resume" / "last.ckpt"
    env = one_thread_env()

    started = time.perf_counter()
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    while not checkpoint.exists() and process.poll() is None:
        time.sleep(0.01)
    time.sleep(0.2)  # let the first checkpoint finish writing before pulling the plug
    process.kill()
    process.wait()
    killed_after = time.perf_counter() - started
    assert process.returncode != 0, "the fit finished before it could be killed"
    killed_step = torch.load(checkpoint, weights_only=True)["global_step"]
    assert 0 < killed_step < 75 and killed_step % 25 != 0, "killed mid-epoch"

    started = time.perf_counter()
    resumed = subprocess.run(
        command + ["--resume"], capture_output=True, text=True, timeout=600, env=env
    )
    resumed_after = time.perf_counter() - started
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    summary = json.loads(resumed.stdout)
    assert summary["epochs"] == 3
    assert summary["steps"] == 75
    assert summary["best_val_iou"] is not None
    assert not (out / "resume").exists()
    assert (out / "adapter.safetensors").is_file()
    print(
        f"killed at step {killed_step} after {killed_after:.1f} s; "
        f"resume finished in {resumed_after:.1f} s"
    )
