"""Label traps warn (AutosegWarning) from prepare_training_data; good data stays silent."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from autoseg.data.prepare import prepare_training_data, split_validation
from autoseg.errors import AutosegWarning

HW = (12, 16)


def _write(root: Path, n: int, mask_of, name: str = "train.csv") -> Path:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    rows = []
    for i in range(n):
        rng = np.random.default_rng(i)
        Image.fromarray(rng.integers(0, 256, (*HW, 3), dtype=np.uint8)).save(
            root / "images" / f"{i}.png"
        )
        Image.fromarray(mask_of(i)).save(root / "masks" / f"{name}_{i}.png")
        rows.append({"image": f"images/{i}.png", "label": f"masks/{name}_{i}.png"})
    pd.DataFrame(rows).to_csv(root / name, index=False)
    return root / name


def _half(values: tuple[int, ...]):
    def make(i: int) -> np.ndarray:
        mask = np.full(HW, values[0], np.uint8)
        mask[:, (i % 5) + 3 :] = values[1]
        if len(values) > 2:
            mask[: HW[0] // 2, :4] = values[2]
        if len(values) > 3:
            mask[HW[0] // 2 :, :2] = values[3]
        return mask

    return make


def _messages(*args, **kwargs) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prepare_training_data(*args, **kwargs)
    return [str(w.message) for w in caught if issubclass(w.category, AutosegWarning)]


def test_good_data_is_silent(tmp_path: Path) -> None:
    assert _messages(_write(tmp_path, 8, _half((0, 255)))) == []
    assert _messages(_write(tmp_path, 8, _half((0, 1, 2)), "mc.csv")) == []  # ids, no 255
    assert _messages(_write(tmp_path, 8, _half((0, 1, 255)), "ign.csv")) == []  # ids + ignore


def test_empty_and_full_masks(tmp_path: Path) -> None:
    (empty,) = _messages(_write(tmp_path, 8, lambda i: np.zeros(HW, np.uint8)))
    assert "every training mask is empty" in empty and "and 5 more" in empty
    (full,) = _messages(_write(tmp_path, 8, lambda i: np.full(HW, 1, np.uint8), "f.csv"))
    assert "entirely foreground" in full and "background must be 0" in full
    one_foreground = _write(tmp_path, 8, lambda i: np.full(HW, 255 * (i == 3), np.uint8), "o.csv")
    assert _messages(one_foreground) == []


@pytest.mark.parametrize("values", [(0, 128, 255), (0, 85, 170)])
def test_grey_level_masks(tmp_path: Path, values: tuple[int, ...]) -> None:
    levels = (*values, 255) if 255 not in values else values
    (message,) = _messages(_write(tmp_path, 8, _half(levels)))
    assert "treated as ignore" in message and "re-save the masks with class ids" in message
    assert "problem_type='multiclass'" in message
    assert _messages(_write(tmp_path, 8, _half(levels)), problem_type="multiclass") == []


def test_duplicates_warn_and_never_straddle_the_split(tmp_path: Path) -> None:
    csv = _write(tmp_path, 12, _half((0, 255)))
    frame = pd.read_csv(csv)
    doubled = pd.concat([frame, frame.iloc[[2, 2, 5]]], ignore_index=True)
    doubled.to_csv(tmp_path / "dup.csv", index=False)
    (message,) = _messages(tmp_path / "dup.csv")
    assert "more than once with the same mask" in message
    assert "row 2 (line 4 of dup.csv), row 12 (line 14" in message
    table = pd.DataFrame({"image": doubled.image, "label": doubled.label})
    for seed in range(30):
        train, val = split_validation(table, seed)
        assert not set(train.image) & set(val.image)
        assert len(train) + len(val) == len(table)


def test_split_without_duplicates_is_unchanged() -> None:
    table = pd.DataFrame({"image": [f"{i}.png" for i in range(25)], "label": "m.png"})
    for seed in range(5):
        order = np.random.default_rng(seed).permutation(25)  # the former rule
        train, val = split_validation(table, seed)
        assert list(val.index) == sorted(order[:2]) and list(train.index) == sorted(order[2:])


def test_conflicting_masks_and_tuning_overlap(tmp_path: Path) -> None:
    csv = _write(tmp_path, 8, _half((0, 255)))
    frame = pd.read_csv(csv)
    extra = pd.DataFrame({"image": [frame.image[1]], "label": [frame.label[4]]})
    pd.concat([frame, extra]).to_csv(tmp_path / "conflict.csv", index=False)
    (message,) = _messages(tmp_path / "conflict.csv")
    assert "different masks" in message and "1.png" in message
    frame.iloc[[0, 3]].to_csv(tmp_path / "tuning.csv", index=False)
    (overlap,) = _messages(csv, tuning_data=tmp_path / "tuning.csv")
    assert "also in the training data" in overlap and "row 1 (line 3 of tuning.csv)" in overlap


def test_unlabelled_validation(tmp_path: Path) -> None:
    train = _write(tmp_path, 8, _half((0, 1, 2)))
    void = _write(tmp_path / "v", 2, lambda i: np.full(HW, 255, np.uint8), "void.csv")
    (message,) = _messages(train, tuning_data=void)
    assert "no validation mask has a labelled pixel" in message and "best_val_*" in message


def test_few_images(tmp_path: Path) -> None:
    (message,) = _messages(_write(tmp_path, 3, _half((0, 255))))
    assert "only 2 training image(s)" in message and "at least 5" in message
