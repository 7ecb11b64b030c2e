"""End-to-end facade tests on tiny random SAMs and synthetic data made in the test."""

from __future__ import annotations

from pathlib import Path

import _tiny
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from autoseg import NotFittedError, SemanticSegmentor
from autoseg.config import UnknownHyperparameterError
from autoseg.data.synthetic import make_synthetic_binary
from autoseg.data.table import DataValidationError

TINY = {**_tiny.TINY, "optim.max_epochs": 2}
BINARY_METRICS = ("iou", "dice", "sm", "em", "wfm", "mae", "ber")


@pytest.fixture(scope="module")
def binary_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_synthetic_binary(
        tmp_path_factory.mktemp("data"), n_images=10, size=(48, 72), split_test=3, seed=1
    )


@pytest.fixture(scope="module")
def fitted(binary_data, tmp_path_factory) -> SemanticSegmentor:
    train_csv, _ = binary_data
    path = tmp_path_factory.mktemp("models") / "seg"
    seg = SemanticSegmentor(presets="cpu_lite", hyperparameters=TINY, path=path, verbosity=0)
    assert seg.fit(train_csv) is seg
    return seg


def test_init_only_stores_arguments():
    seg = SemanticSegmentor(hyperparameters={"peft.rnak": 1}, path="/nonexistent/x")
    assert seg.hyperparameters == {"peft.rnak": 1}
    assert not hasattr(seg, "model_")


def test_unfitted_use_is_a_clear_error(binary_data):
    with pytest.raises(NotFittedError, match="not fitted"):
        SemanticSegmentor().predict(binary_data[1])


def test_fit_learns_state_and_saves(fitted):
    assert fitted.problem_type_ == "binary"
    assert fitted.classes_ == [0, 1]
    assert fitted.preset_ == "cpu_lite"
    assert (fitted.path_ / "config.yaml").is_file()
    assert (fitted.path_ / "adapter.safetensors").is_file()
    assert (fitted.path_ / "logs" / "metrics.csv").is_file()
    assert list((fitted.path_ / "logs" / "tensorboard").glob("events.out.tfevents.*"))
    assert (fitted.path_ / "training_curve.png").is_file()
    assert list((fitted.path_ / "validation_overlays" / "overlays").glob("*.png"))
    assert not (fitted.path_ / "resume").exists(), "a finished fit leaves no pickle behind"
    summary = fitted.summary()
    assert summary["backbone"] == "vit_tiny" and summary["peft_method"] == "conv_lora"
    assert summary["epochs"] == 2 and summary["trainable_parameters"] > 0
    assert summary["train_rows"] + summary["val_rows"] == 7 and summary["val_rows"] >= 1
    assert summary["best_val_iou"] is not None and 0 <= summary["best_val_iou"] <= 1


def test_predict_returns_original_sizes(fitted, tmp_path):
    sizes = [(30, 50), (70, 20), (64, 64)]
    paths = []
    for i, (h, w) in enumerate(sizes):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (h, w, 3), np.uint8)).save(path)
        paths.append(str(path))
    masks = fitted.predict(paths, save_dir=tmp_path / "out")
    assert [m.shape for m in masks] == sizes
    assert all(m.dtype == np.uint8 and set(np.unique(m)) <= {0, 1} for m in masks)
    probs = fitted.predict_proba(paths)
    assert [p.shape for p in probs] == sizes
    assert all(p.dtype == np.float32 and 0 <= p.min() and p.max() <= 1 for p in probs)
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == [
        "img0.png",
        "img1.png",
        "img2.png",
    ]
    assert len(list((tmp_path / "out" / "overlays").glob("*.png"))) == 3
    saved = np.asarray(Image.open(tmp_path / "out" / "img0.png"))
    np.testing.assert_array_equal(saved, masks[0] * 255)


def test_predict_accepts_single_path_and_dataframe(fitted, binary_data):
    table = pd.read_csv(binary_data[1])
    single = table.image[0]
    root = Path(binary_data[1]).parent
    assert len(fitted.predict(str(root / single))) == 1
    frame = pd.DataFrame({"image": [str(root / p) for p in table.image]})
    assert len(fitted.predict(frame)) == len(table)


def test_evaluate_reports_every_binary_metric(fitted, binary_data):
    results = fitted.evaluate(binary_data[1])
    assert set(results) == set(BINARY_METRICS)
    for name in ("iou", "dice", "sm", "em", "wfm", "mae"):
        assert 0.0 <= results[name] <= 1.0, name
    assert 0.0 <= results["ber"] <= 100.0
    assert set(fitted.evaluate(binary_data[1], metrics=["iou"])) == {"iou"}


def test_save_load_gives_identical_predictions(fitted, binary_data, tmp_path):
    target = fitted.save(tmp_path / "copy")
    loaded = SemanticSegmentor.load(target, verbosity=0)
    assert loaded.classes_ == fitted.classes_ and loaded.preset_ == fitted.preset_
    for a, b in zip(
        fitted.predict_proba(binary_data[1]), loaded.predict_proba(binary_data[1]), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    assert loaded.summary()["epochs"] == fitted.summary()["epochs"]


def test_saved_adapter_holds_only_trainable_weights(fitted):
    from safetensors.torch import load_file

    saved = load_file(str(fitted.path_ / "adapter.safetensors"))
    trainable = {n for n, p in fitted.model_.named_parameters() if p.requires_grad}
    assert set(saved) == trainable


def test_standalone_save_loads(fitted, binary_data, tmp_path):
    target = fitted.save(tmp_path / "standalone", standalone=True)
    assert (target / "model.safetensors").is_file()
    loaded = SemanticSegmentor.load(target, verbosity=0)
    np.testing.assert_array_equal(
        loaded.predict_proba(binary_data[1])[0], fitted.predict_proba(binary_data[1])[0]
    )


def test_save_never_overwrites_silently(fitted, tmp_path):
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="not empty"):
        fitted.save(occupied)
    assert (occupied / "notes.txt").read_text() == "precious"


def test_fit_refuses_nonempty_path_before_training(binary_data, tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    seg = SemanticSegmentor(presets="cpu_lite", hyperparameters=TINY, path=tmp_path, verbosity=0)
    with pytest.raises(FileExistsError, match="never"):
        seg.fit(binary_data[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_unknown_hyperparameter_names_close_matches(binary_data, tmp_path):
    seg = SemanticSegmentor(hyperparameters={"peft.rnak": 2}, path=tmp_path / "m", verbosity=0)
    with pytest.raises(UnknownHyperparameterError, match="peft.rank"):
        seg.fit(binary_data[0])


def test_bad_rows_are_all_reported_before_training(binary_data, tmp_path):
    train_csv = Path(binary_data[0])
    table = pd.read_csv(train_csv)
    table.loc[1, "image"] = "images/missing.png"
    bad_mask = tmp_path / "bad_mask.png"
    Image.fromarray(np.full((48, 72), 7, np.uint8)).save(bad_mask)
    table.loc[2, "label"] = str(bad_mask)
    bad_csv = train_csv.parent / "bad.csv"
    table.to_csv(bad_csv, index=False)
    seg = SemanticSegmentor(
        problem_type="binary",
        presets="cpu_lite",
        hyperparameters=TINY,
        path=tmp_path / "never",
        verbosity=0,
    )
    with pytest.raises(DataValidationError) as info:
        seg.fit(bad_csv)
    message = str(info.value)
    assert "row 1" in message and "missing.png" in message
    assert "row 2" in message and "bad_mask.png" in message
    assert not (tmp_path / "never").exists()


def test_time_limit_stops_training_early(binary_data, tmp_path):
    hyper = {**TINY, "optim.max_epochs": 10_000, "optim.patience": 10_000}
    seg = SemanticSegmentor(
        presets="cpu_lite", hyperparameters=hyper, path=tmp_path / "m", verbosity=0
    )
    seg.fit(binary_data[0], time_limit=4)
    assert seg.summary()["epochs"] < 10_000
    assert seg.summary()["fit_time_s"] < 60


def test_tuning_data_is_used_for_validation(binary_data, tmp_path):
    seg = SemanticSegmentor(
        presets="cpu_lite",
        hyperparameters={**TINY, "optim.max_epochs": 1},
        path=tmp_path / "m",
        verbosity=0,
    )
    seg.fit(binary_data[0], tuning_data=binary_data[1])
    assert seg.summary()["best_val_iou"] is not None


def test_training_mode_keeps_frozen_batchnorm_statistics():
    import torch

    from autoseg.models.segmenter import build_segmenter

    model, _ = build_segmenter("lite_tiny", num_classes=1)
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    assert before, "lite_tiny should have batch-norm layers"
    model.train()
    assert model.mask_head.training
    model(torch.randn(2, 3, 64, 64))
    after = {k: v for k, v in model.state_dict().items() if "running" in k}
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_max_steps_ending_mid_epoch_still_validates(binary_data, tmp_path):
    # 6 training images, batch 2, accumulation 2 -> 2 optimiser steps per epoch; stop after 1.
    hyper = {**TINY, "optim.max_steps": 1, "optim.max_epochs": 5}
    seg = SemanticSegmentor(
        presets="cpu_lite", hyperparameters=hyper, path=tmp_path / "m", verbosity=0
    )
    seg.fit(binary_data[0])
    assert seg.summary()["steps"] == 1
    assert seg.summary()["best_val_iou"] is not None
