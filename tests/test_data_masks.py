from __future__ import annotations

import numpy as np
import pytest

from autoseg.data.findings import DataValidationError
from autoseg.labels.masks import (
    MaskFormatError,
    binary_target,
    distinct_values,
    encode_multiclass,
)
from autoseg.labels.problem import MaskValueCollector


def _mask(values: list[int], dtype: type = np.uint8) -> np.ndarray:
    return np.array(values, dtype=dtype).reshape(1, -1)


def test_distinct_values_fast_and_general_paths() -> None:
    assert distinct_values(_mask([0, 3, 3, 255])) == {0, 3, 255}
    assert distinct_values(_mask([0, 1000], np.uint16)) == {0, 1000}
    assert distinct_values(np.array([[True, False]])) == {0, 1}
    assert distinct_values(_mask([0, 2], np.float32)) == {0, 2}
    with pytest.raises(MaskFormatError, match="non-integer"):
        distinct_values(np.array([[0.5, 1.0]]))


@pytest.mark.parametrize(
    "mask, expected",
    [
        (_mask([0, 1, 1]), [0, 1, 1]),
        (_mask([0, 255, 255]), [0, 1, 1]),
        (_mask([0, 0]), [0, 0]),
        (_mask([255, 255]), [1, 1]),
        (np.array([[True, False]]), [1, 0]),
        (_mask([0, 1], np.int64), [0, 1]),
    ],
)
def test_binary_target_rules(mask: np.ndarray, expected: list[int]) -> None:
    target = binary_target(mask)
    assert target.dtype == np.uint8
    assert target.ravel().tolist() == expected


def test_binary_target_rejects_other_values_and_names_them() -> None:
    with pytest.raises(MaskFormatError, match=r"\{0, 1, 2\}.*only 0 and 1, or only 0 and 255"):
        binary_target(_mask([0, 1, 2]))
    with pytest.raises(MaskFormatError, match=r"\{0, 128, 255\}"):
        binary_target(_mask([0, 128, 255]))


def test_grey_rgb_mask_is_accepted_and_color_mask_rejected() -> None:
    grey = np.repeat(_mask([0, 255])[..., None], 3, axis=2)
    assert binary_target(grey).ravel().tolist() == [0, 1]
    color = grey.copy()
    color[0, 0, 0] = 255
    with pytest.raises(MaskFormatError, match="color mask.*class_colors"):
        binary_target(color)


def _decide(masks):
    collector = MaskValueCollector("auto")
    assert all(collector(mask) is None for mask in masks)
    problem = collector.problem()
    return problem.problem_type, list(problem.classes)


def test_problem_is_binary_even_when_mixing_conventions() -> None:
    masks = [_mask([0, 1]), _mask([0, 255]), _mask([0, 0])]
    assert _decide(masks) == ("binary", [0, 1])


def test_problem_multiclass() -> None:
    masks = [_mask([0, 1, 255]), _mask([3, 0]), _mask([7])]
    assert _decide(masks) == ("multiclass", [0, 1, 3, 7])
    # one mask mixing 0/1 and 255 is not binary: 255 there means ignore
    assert _decide([_mask([0, 1, 255])]) == ("multiclass", [0, 1])
    with pytest.raises(DataValidationError, match="at least 2 classes"):
        _decide([_mask([1, 1, 255])])


def test_values_outside_0_255_are_reported() -> None:
    assert "0..255" in MaskValueCollector("auto")(_mask([0, 2, 300], np.uint16))


def test_encode_multiclass_lookup_keeps_ignore() -> None:
    mask = _mask([10, 20, 255, 30, 10])
    encoded = encode_multiclass(mask, [10, 20, 30])
    assert encoded.dtype == np.uint8
    assert encoded.ravel().tolist() == [0, 1, 255, 2, 0]
    wide = _mask([10, 30, 255], np.int32)
    assert encode_multiclass(wide, [30, 10]).ravel().tolist() == [1, 0, 255]


def test_encode_multiclass_names_unknown_values() -> None:
    with pytest.raises(MaskFormatError, match=r"\{4, 9\}"):
        encode_multiclass(_mask([0, 4, 9, 1]), [0, 1])
    with pytest.raises(MaskFormatError, match="1000"):
        encode_multiclass(_mask([0, 1000], np.uint16), [0, 1])
    with pytest.raises(ValueError, match="duplicates"):
        encode_multiclass(_mask([0]), [0, 0])
    with pytest.raises(ValueError, match="0..254"):
        encode_multiclass(_mask([0]), [0, 255])
