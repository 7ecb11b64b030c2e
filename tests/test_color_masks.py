"""Color (RGB) masks with ``class_colors``: lookup table, messages, fit/evaluate/load.

Tiny random SAMs on synthetic color masks made here; see ``test_multiclass.py`` for class-id
masks and the real-data runs.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from _tiny import TINY_MULTICLASS
from PIL import Image

from autoseg import SemanticSegmentor
from autoseg.data.io import read_mask
from autoseg.data.prepare import prepare_training_data
from autoseg.data.synthetic import SYNTHETIC_VOID_RGB, make_synthetic_multiclass
from autoseg.data.table import DataValidationError
from autoseg.errors import SettingsError
from autoseg.labels.colors import ColorTable, parse_color
from autoseg.labels.masks import MaskFormatError
from autoseg.labels.problem import Problem

COLORS = {(0, 255, 0): "crop", (255, 0, 0): "weed", (0, 0, 0): "background"}
VALUES = (0, 3, 7)
SIZE = (40, 56)


def _mask(values: list[int]) -> np.ndarray:
    return np.array(values, dtype=np.uint8).reshape(1, -1)


def _rgb(colors: list[tuple[int, int, int]]) -> np.ndarray:
    return np.array(colors, dtype=np.uint8).reshape(1, -1, 3)


def _segmentor(path: Path, **kwargs) -> SemanticSegmentor:
    return SemanticSegmentor(
        presets="cpu_lite", path=path, verbosity=0, hyperparameters=TINY_MULTICLASS, **kwargs
    )


def _row(csv: Path, row: int) -> pd.DataFrame:
    """One row of a CSV with absolute paths (a DataFrame resolves against the cwd)."""
    frame = pd.read_csv(csv).iloc[[row]]
    root = Path(csv).parent
    return frame.assign(
        image=[str(root / frame.image.iloc[0])], label=[str(root / frame.label.iloc[0])]
    )


# ---------------------------------------------------------------------- unit tests


def test_synthetic_multiclass_color_masks(tmp_path):
    colors = [(0, 0, 0), (0, 255, 0), (255, 0, 0), (0, 0, 255)]
    make_synthetic_multiclass(tmp_path, 3, SIZE, 0, 1, num_classes=4, rgb_colors=colors)
    mask = read_mask(tmp_path / "masks" / "synth_000.png")
    assert mask.shape == (*SIZE, 3)
    found = {tuple(c) for c in np.unique(mask.reshape(-1, 3), axis=0)}
    assert found <= {*colors, SYNTHETIC_VOID_RGB} and SYNTHETIC_VOID_RGB in found


# ------------------------------------------------------------------ color masks


def test_color_table_order_ignore_and_shared_names():
    table = ColorTable.from_mapping(
        {
            "#00FF00": "crop",
            (255, 0, 0): "weed",
            (0, 0, 0): "soil",
            (9, 9, 9): "soil",
            (255, 255, 255): None,
            (1, 2, 3): "Ignore",
        }
    )
    assert table.class_names == ("crop", "weed", "soil")  # the mapping's order, not sorted
    mask = _rgb([(0, 0, 0), (0, 255, 0), (255, 0, 0), (9, 9, 9), (255, 255, 255), (1, 2, 3)])
    np.testing.assert_array_equal(table.encode(mask), _mask([2, 0, 1, 2, 255, 255]))
    assert table.color_of(2) == (0, 0, 0) and table.color_of(0) == (0, 255, 0)
    rgba = np.concatenate([mask, np.full((*mask.shape[:2], 1), 7, np.uint8)], axis=2)
    np.testing.assert_array_equal(table.encode(rgba), table.encode(mask))


@pytest.mark.parametrize(
    "mapping, error, match",
    [
        ([((0, 0, 0), "a")], SettingsError, "must be a dict"),
        ({(0, 0, 0): "a", (0, 0, 0.5): "b"}, ValueError, "not a color"),
        ({(0, 0, 0): "a", (0, 0, 256): "b"}, ValueError, "not a color"),
        ({(0, 0, 0): "a", "#00000g": "b"}, ValueError, "not a color"),
        ({(0, 0, 0): "a", "#000000": "b"}, ValueError, "twice"),
        ({(0, 0, 0): "a", (1, 1, 1): ""}, ValueError, "class name"),
        ({(0, 0, 0): "a", (1, 1, 1): None}, ValueError, "at least 2 classes"),
    ],
)
def test_color_table_rejects_bad_mappings(mapping, error, match):
    with pytest.raises(error, match=match):
        ColorTable.from_mapping(mapping)


def test_parse_color_accepts_lists_and_numpy():
    assert parse_color([1, 2, 3]) == parse_color(np.array([1, 2, 3])) == (1, 2, 3)
    assert parse_color("#0a0B0c") == (10, 11, 12)


def test_unknown_colors_are_named_with_pixel_counts():
    table = ColorTable.from_mapping(COLORS)
    mask = _rgb([(0, 0, 0), (7, 8, 9), (7, 8, 9), (1, 1, 1)])
    with pytest.raises(
        MaskFormatError,
        match=r"2 colors not in class_colors: \(7, 8, 9\) "
        r"\(2 px\), \(1, 1, 1\) \(1 px\)",
    ):
        table.encode(mask)
    with pytest.raises(MaskFormatError, match="single-channel"):
        table.encode(_mask([0, 1]))


def test_color_masks_without_class_colors_name_the_colors(tmp_path):
    colors = [(0, 0, 0), (0, 255, 0), (255, 0, 0)]
    train_csv, _ = make_synthetic_multiclass(tmp_path, 3, SIZE, 0, 1, rgb_colors=colors)
    with pytest.raises(DataValidationError) as info:
        prepare_training_data(train_csv)
    assert len(info.value.problems) == 2  # one line per row
    line = info.value.problems[0]
    assert line.startswith("row 0") and "color mask" in line and "class_colors=" in line
    assert "(0, 255, 0)" in line and "(255, 0, 0)" in line and "(255, 255, 255)" in line


def test_color_missing_from_class_colors_is_a_per_row_error(tmp_path):
    colors = [(0, 0, 0), (0, 255, 0), (255, 0, 0)]
    train_csv, _ = make_synthetic_multiclass(tmp_path, 3, SIZE, 0, 1, rgb_colors=colors)
    with pytest.raises(DataValidationError) as info:
        prepare_training_data(train_csv, class_colors=COLORS)  # white void is not mapped
    assert [p.split(":")[0] for p in info.value.problems] == [
        "row 0 (line 2 of train.csv)",
        "row 1 (line 3 of train.csv)",
    ]
    assert all("(255, 255, 255)" in p and "not in class_colors" in p for p in info.value.problems)
    with pytest.raises(ValueError, match="multi-class"):
        prepare_training_data(train_csv, problem_type="binary", class_colors=COLORS)


def test_color_problem_round_trips_through_yaml():
    table = ColorTable.from_mapping({**COLORS, (255, 255, 255): None})
    problem = Problem("multiclass", (0, 1, 2), table.class_names, table)
    text = yaml.safe_dump(problem.to_dict())
    assert "class_colors" in text and "!!python" not in text
    assert Problem.from_dict(yaml.safe_load(text)) == problem
    assert pickle.loads(pickle.dumps(problem)) == problem  # data-loader workers get a copy
    plain = Problem("multiclass", VALUES, ("a", "b", "c"))
    assert Problem.from_dict(yaml.safe_load(yaml.safe_dump(plain.to_dict()))) == plain


# ---------------------------------------------------------- fit on color masks


@pytest.fixture(scope="module")
def color_fitted(tmp_path_factory) -> tuple[SemanticSegmentor, Path]:
    folder = tmp_path_factory.mktemp("color")
    rgb = [(0, 0, 0), (0, 255, 0), (255, 0, 0)]  # background, ellipses, rectangles
    train_csv, test_csv = make_synthetic_multiclass(folder, 8, SIZE, 5, 2, rgb_colors=rgb)
    mapping = {**COLORS, SYNTHETIC_VOID_RGB: None}
    seg = _segmentor(tmp_path_factory.mktemp("models") / "color", class_colors=mapping)
    return seg.fit(train_csv), test_csv


def test_color_fit_uses_the_mapping_order(color_fitted):
    seg, _ = color_fitted
    assert seg.classes_ == [0, 1, 2] and seg.class_names_ == ["crop", "weed", "background"]
    target = seg.problem_.target(_rgb([(0, 0, 0), (0, 255, 0), (255, 0, 0), (255, 255, 255)]))
    np.testing.assert_array_equal(target, _mask([2, 0, 1, 255]))


def test_color_fit_evaluates_predicts_and_reloads(color_fitted):
    seg, test_csv = color_fitted
    results = seg.evaluate(test_csv)
    assert set(results) == {"miou", "acc", "iou/crop", "iou/weed", "iou/background"}
    assert 0 <= results["miou"] <= 1 and 0 <= results["acc"] <= 1
    assert all(set(np.unique(m)) <= {0, 1, 2} for m in seg.predict(test_csv))
    stored = yaml.safe_load((seg.path_ / "config.yaml").read_text())["problem"]
    assert stored["class_colors"][:3] == [[0, 255, 0, 0], [255, 0, 0, 1], [0, 0, 0, 2]]
    loaded = SemanticSegmentor.load(seg.path_, verbosity=0)
    assert loaded.problem_ == seg.problem_
    assert loaded.evaluate(test_csv) == pytest.approx(results, nan_ok=True)


def test_color_evaluate_names_unknown_colors(color_fitted, tmp_path):
    seg, test_csv = color_fitted
    frame = _row(test_csv, 0)
    mask = read_mask(frame.label.iloc[0]).copy()
    mask[:2, :2] = (12, 34, 56)
    Image.fromarray(mask).save(tmp_path / "odd.png")
    with pytest.raises(DataValidationError, match=r"\(12, 34, 56\) \(4 px\)"):
        seg.evaluate(frame.assign(label=[str(tmp_path / "odd.png")]))


def test_color_predictions_are_drawn_in_the_users_colors(color_fitted, tmp_path):
    from autoseg.visualize import PALETTE, colors_by_class_id

    seg, test_csv = color_fitted
    masks = seg.predict(test_csv, save_dir=tmp_path / "pred")
    stem = Path(pd.read_csv(test_csv).image.iloc[0]).stem
    saved = Image.open(tmp_path / "pred" / f"{stem}.png")
    assert saved.mode == "P"
    np.testing.assert_array_equal(np.asarray(saved), masks[0])  # values stay class ids
    drawn = {tuple(c) for c in np.asarray(saved.convert("RGB")).reshape(-1, 3)}
    assert drawn <= set(COLORS)  # looks like the label masks: crop green, weed red
    assert (tmp_path / "pred" / "overlays" / f"{stem}.png").is_file()
    plain = Problem("multiclass", VALUES, ("a", "b", "c"))
    assert colors_by_class_id(plain) == list(PALETTE[:3])
    assert colors_by_class_id(seg.problem_) == [(0, 255, 0), (255, 0, 0), (0, 0, 0)]
