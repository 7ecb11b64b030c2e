"""Multi-class segmentation (issue #3): class discovery, color masks, fit/evaluate/predict.

Fast tests use tiny random SAMs on synthetic data made here; ``slow`` tests fine-tune the real
LiteMedSAM for a few steps on CWFID and CamVid from the shared data folder. Color masks
(``class_colors``) are tested in ``test_color_masks.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from _tiny import TINY_MULTICLASS
from PIL import Image
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from autoseg import SemanticSegmentor
from autoseg.data.io import read_mask
from autoseg.data.prepare import prepare_training_data
from autoseg.data.synthetic import make_synthetic_multiclass
from autoseg.labels.masks import MaskFormatError
from autoseg.labels.problem import MaskValueCollector, Problem

VALUES = (0, 3, 7)  # non-contiguous class ids on purpose
LEGEND = ["sky", "x1", "x2", "road", "x4", "x5", "x6", "car"]  # classes.txt indexed by value
SIZE = (40, 56)


def _mask(values: list[int]) -> np.ndarray:
    return np.array(values, dtype=np.uint8).reshape(1, -1)


def _segmentor(path: Path, **kwargs) -> SemanticSegmentor:
    hyper = {**TINY_MULTICLASS, **kwargs.pop("hyperparameters", {})}
    return SemanticSegmentor(
        presets="cpu_lite", path=path, verbosity=0, hyperparameters=hyper, **kwargs
    )


def _absolute(csv: Path, rows: slice | list[int] | None = None) -> pd.DataFrame:
    """A CSV's table with absolute paths (a DataFrame resolves against the cwd otherwise)."""
    frame = pd.read_csv(csv)
    frame = frame if rows is None else frame.iloc[rows]
    root = Path(csv).parent
    return frame.assign(
        image=[str(root / p) for p in frame.image], label=[str(root / p) for p in frame.label]
    )


def _torchmetrics_scores(preds: list[np.ndarray], gts: list[np.ndarray], k: int):
    miou = MulticlassJaccardIndex(k, average="macro", ignore_index=255)
    per_class = MulticlassJaccardIndex(k, average="none", ignore_index=255)
    acc = MulticlassAccuracy(k, average="micro", ignore_index=255)
    for pred, gt in zip(preds, gts, strict=True):
        p, t = torch.from_numpy(pred.astype(np.int64)), torch.from_numpy(gt.astype(np.int64))
        for metric in (miou, per_class, acc):
            metric.update(p, t)
    return miou.compute().item(), acc.compute().item(), per_class.compute().numpy()


# ------------------------------------------------------------------ synthetic data


def test_synthetic_multiclass_values_void_and_determinism(tmp_path):
    train_a, test_a = make_synthetic_multiclass(tmp_path / "a", 5, SIZE, 3, 2, values=VALUES)
    train_b, _ = make_synthetic_multiclass(tmp_path / "b", 5, SIZE, 3, 2, values=VALUES)
    assert len(pd.read_csv(train_a)) == 3 and len(pd.read_csv(test_a)) == 2
    masks = [read_mask(tmp_path / "a" / "masks" / f"synth_{i:03d}.png") for i in range(5)]
    assert all(m.shape == SIZE and m.dtype == np.uint8 for m in masks)
    assert set(np.unique(np.stack(masks))) == {*VALUES, 255}
    assert all((m == 255).mean() < 0.05 for m in masks)  # void is a small patch
    for name in ("images", "masks"):
        a = (tmp_path / "a" / name / "synth_004.png").read_bytes()
        assert a == (tmp_path / "b" / name / "synth_004.png").read_bytes()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_classes": 1},
        {"values": (0, 3)},
        {"values": (0, 255, 3)},
        {"values": (0, 1, 2), "rgb_colors": [(0, 0, 0), (1, 1, 1), (2, 2, 2)]},
        {"rgb_colors": [(0, 0, 0), (255, 255, 255), (9, 9, 9)]},  # white is the void color
    ],
)
def test_synthetic_multiclass_rejects_bad_arguments(tmp_path, kwargs):
    with pytest.raises(ValueError):
        make_synthetic_multiclass(tmp_path, 3, SIZE, 0, 1, **kwargs)


# --------------------------------------------------------------- class discovery


@pytest.mark.parametrize(
    "masks, problem_type, classes",
    [
        ([[0, 1], [0, 0]], "binary", (0, 1)),
        ([[0, 255]], "binary", (0, 1)),
        ([[0, 1], [0, 255]], "binary", (0, 1)),  # both binary conventions mixed
        ([[0, 1, 255]], "multiclass", (0, 1)),  # 255 is ignore, so 0/1 + void is multi-class
        ([[0, 7], [3, 255]], "multiclass", (0, 3, 7)),
    ],
)
def test_auto_detection(masks, problem_type, classes):
    collector = MaskValueCollector("auto")
    assert all(collector(_mask(m)) is None for m in masks)
    problem = collector.problem()
    assert (problem.problem_type, problem.classes) == (problem_type, classes)


def test_noncontiguous_values_map_to_ids_and_back():
    problem = Problem("multiclass", VALUES, ("a", "b", "c"))
    np.testing.assert_array_equal(problem.target(_mask([7, 0, 255, 3])), _mask([2, 0, 255, 1]))
    np.testing.assert_array_equal(problem.to_original(_mask([2, 0, 1])), _mask([7, 0, 3]))
    with pytest.raises(MaskFormatError, match=r"\{5\}.*training masks"):
        problem.target(_mask([0, 5]))


def test_class_names_from_list_or_legend():
    collector = MaskValueCollector("auto")
    collector(_mask([0, 3, 7]))
    assert collector.problem(["a", "b", "c"]).class_names == ("a", "b", "c")
    with pytest.warns(UserWarning, match="1 \\(x1\\)"):
        legend = collector.problem(LEGEND)  # a legend declares all its classes
    assert legend.classes == tuple(range(8)) and legend.class_names == tuple(LEGEND)
    with pytest.raises(ValueError, match="2 class names for 3 classes"):
        collector.problem(["a", "b"])


def test_more_than_two_names_means_multiclass_even_if_masks_look_binary():
    collector = MaskValueCollector("auto")
    collector(_mask([0, 1]))
    with pytest.warns(UserWarning, match="weed"):
        problem = collector.problem(["soil", "crop", "weed"])
    assert problem.problem_type == "multiclass" and problem.classes == (0, 1, 2)


def test_forced_multiclass_on_binary_255_masks_explains(tmp_path):
    collector = MaskValueCollector("multiclass")
    collector(_mask([0, 255]))
    with pytest.raises(ValueError, match="problem_type='binary'"):
        collector.problem()


def test_classes_txt_beside_csv_names_classes(tmp_path):
    train_csv, _ = make_synthetic_multiclass(tmp_path, 4, SIZE, 0, 1, values=VALUES)
    (tmp_path / "classes.txt").write_text("\n".join(["bg", "ellipse", "rectangle"]) + "\n")
    train, val, problem = prepare_training_data(train_csv)
    assert problem.classes == VALUES and problem.class_names == ("bg", "ellipse", "rectangle")
    assert len(train) == 2 and len(val) == 1


def test_camvid_class_names_from_classes_txt(shared_data):
    root = shared_data / "camvid"
    _, _, problem = prepare_training_data(root / "train.csv")
    names = (root / "classes.txt").read_text().split()
    assert problem.classes == tuple(range(11)) and list(problem.class_names) == names
    assert problem.class_names[0] == "Sky" and problem.class_names[10] == "Bicyclist"


# ------------------------------------------------------------- fit on class ids


@pytest.fixture(scope="module")
def mc_data(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("mc")
    train_csv, test_csv = make_synthetic_multiclass(folder, 10, SIZE, 2, 3, values=VALUES)
    (folder / "classes.txt").write_text("\n".join(LEGEND[:1] + ["ellipse", "rectangle"]))
    return train_csv, test_csv


@pytest.fixture(scope="module")
def mc_fitted(mc_data, tmp_path_factory) -> SemanticSegmentor:
    seg = _segmentor(tmp_path_factory.mktemp("models") / "mc")
    return seg.fit(mc_data[0])


def test_fit_learns_original_classes_and_names(mc_fitted):
    assert mc_fitted.problem_type_ == "multiclass"
    assert mc_fitted.classes_ == list(VALUES)
    assert mc_fitted.class_names_ == ["sky", "ellipse", "rectangle"]
    assert mc_fitted.summary()["best_val_miou"] is not None


def test_predict_returns_original_values_and_writes_pngs(mc_fitted, mc_data, tmp_path):
    table = _absolute(mc_data[1])
    masks = mc_fitted.predict(table, save_dir=tmp_path)
    assert [m.shape for m in masks] == [SIZE] * 3
    assert all(m.dtype == np.uint8 and set(np.unique(m)) <= set(VALUES) for m in masks)
    for mask, image in zip(masks, table.image, strict=True):
        png = Image.open(tmp_path / Path(image).name)
        assert png.mode == "P"  # palette PNG: opens as colors, reads back as values
        np.testing.assert_array_equal(np.asarray(png), mask)
        overlay = Image.open(tmp_path / "overlays" / Path(image).name)
        assert overlay.mode == "RGB" and overlay.size == (SIZE[1], SIZE[0])


def test_predict_proba_is_a_distribution_at_original_size(mc_fitted, tmp_path):
    path = tmp_path / "odd.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (23, 61, 3), np.uint8)).save(path)
    (proba,) = mc_fitted.predict_proba([str(path)])
    assert proba.shape == (3, 23, 61) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(axis=0), 1.0, atol=1e-5)
    (mask,) = mc_fitted.predict([str(path)])
    np.testing.assert_array_equal(mask, np.asarray(VALUES, np.uint8)[proba.argmax(axis=0)])


def test_evaluate_matches_torchmetrics_on_returned_predictions(mc_fitted, mc_data):
    results = mc_fitted.evaluate(mc_data[1])
    names = ["sky", "ellipse", "rectangle"]
    assert set(results) == {"miou", "acc", *(f"iou/{n}" for n in names)}
    to_ids = np.zeros(256, np.uint8)
    to_ids[list(VALUES)] = np.arange(3)
    table = _absolute(mc_data[1])
    preds = [to_ids[m] for m in mc_fitted.predict(table)]
    gts = [mc_fitted.problem_.target(read_mask(p)) for p in table.label]
    assert any((gt == 255).any() for gt in gts)
    miou, acc, per_class = _torchmetrics_scores(preds, gts, 3)
    assert results["miou"] == pytest.approx(miou, abs=1e-6)
    assert results["acc"] == pytest.approx(acc, abs=1e-6)
    for k, name in enumerate(names):
        if not np.isnan(results[f"iou/{name}"]):
            assert results[f"iou/{name}"] == pytest.approx(per_class[k], abs=1e-6)
    assert set(mc_fitted.evaluate(mc_data[1], metrics=["miou"])) == {"miou"}


def test_save_load_keeps_classes_and_predictions(mc_fitted, mc_data, tmp_path):
    loaded = SemanticSegmentor.load(mc_fitted.save(tmp_path / "copy"), verbosity=0)
    assert loaded.classes_ == list(VALUES) and loaded.class_names_ == mc_fitted.class_names_
    for a, b in zip(mc_fitted.predict(mc_data[1]), loaded.predict(mc_data[1]), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("backbone, method", [("lite_tiny", "lora"), ("vit_tiny", "decoder_only")])
def test_multiclass_fit_with_other_backbones_and_methods(mc_data, tmp_path, backbone, method):
    seg = _segmentor(
        tmp_path / "m",
        hyperparameters={"model.backbone": backbone, "peft.method": method, "optim.max_epochs": 1},
    )
    seg.fit(mc_data[0], tuning_data=mc_data[1])
    summary = seg.summary()
    assert (summary["backbone"], summary["peft_method"]) == (backbone, method)
    assert summary["trainable_parameters"] > 0 and summary["steps"] >= 1
    (proba,) = seg.predict_proba(_absolute(mc_data[1], [0]))
    assert proba.shape == (3, *SIZE)
    np.testing.assert_allclose(proba.sum(axis=0), 1.0, atol=1e-5)


# ------------------------------------------------------------------- real data
# Budget: real LiteMedSAM at 64 px, one epoch of exactly 2 optimiser steps (6 training images,
# batch 2, effective batch 4): max_steps never cuts an epoch short, so validation runs.


def _lite() -> dict:
    return {
        **TINY_MULTICLASS,
        "model.backbone": "lite",
        "optim.max_steps": 2,
        "optim.max_epochs": 1,
        "optim.lr": 3e-4,
    }


def _check_real(seg: SemanticSegmentor, test: pd.DataFrame, names: list[str]) -> None:
    results = seg.evaluate(test)
    assert set(results) == {"miou", "acc", *(f"iou/{n}" for n in names)}
    assert 0 <= results["miou"] <= 1 and 0 < results["acc"] <= 1
    assert all(np.isnan(v) or 0 <= v <= 1 for v in results.values())
    test = test.iloc[:2]
    probas, masks = seg.predict_proba(test), seg.predict(test)
    for proba, mask, path in zip(probas, masks, test.image, strict=True):
        width, height = Image.open(path).size
        assert mask.shape == (height, width) and proba.shape == (len(names), height, width)
        assert set(np.unique(mask)) <= set(seg.classes_)


@pytest.mark.slow
def test_cwfid_end_to_end(shared_data, tmp_path):
    root = shared_data / "cwfid"
    train = _absolute(root / "train.csv")
    names = ["soil", "crop", "weed"]
    seg = SemanticSegmentor(
        path=tmp_path / "m",
        verbosity=0,
        presets="cpu_lite",
        hyperparameters=_lite(),
        class_names=names,
    )
    seg.fit(train.iloc[:6], tuning_data=train.iloc[6:8])
    assert seg.summary()["backbone"] == "lite" and seg.summary()["steps"] == 2
    assert seg.problem_type_ == "multiclass" and seg.classes_ == [0, 1, 2]
    assert seg.class_names_ == names
    _check_real(seg, _absolute(root / "test.csv", slice(0, 3)), names)


@pytest.mark.slow
def test_camvid_end_to_end_with_a_class_missing_from_training(shared_data, tmp_path):
    root = shared_data / "camvid"
    names = (root / "classes.txt").read_text().split()
    train_csv = tmp_path / "train.csv"  # a CSV beside classes.txt, so the names are read
    (tmp_path / "classes.txt").write_text("\n".join(names))
    _absolute(root / "train.csv", slice(0, 7)).to_csv(train_csv, index=False)
    seg = SemanticSegmentor(
        path=tmp_path / "m", verbosity=0, presets="cpu_lite", hyperparameters=_lite()
    )
    with pytest.warns(UserWarning, match=r"7 \(Fence\)"):
        seg.fit(train_csv)  # the first training images hold no Fence (7)
    assert seg.classes_ == list(range(11)) and seg.class_names_ == names
    _check_real(seg, _absolute(root / "test.csv", slice(0, 3)), names)
