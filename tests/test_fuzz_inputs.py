"""Property-based fuzzing of mask values and CSV shapes (hypothesis, bounded to seconds).

Whatever the input, the checks either accept it (and then training targets can be built)
or explain it in a :class:`DataValidationError` / :class:`MaskFormatError`; no other
exception escapes.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from autoseg.data.table import DataValidationError, load_table, validate_table
from autoseg.errors import AutosegWarning
from autoseg.labels.masks import MaskFormatError
from autoseg.labels.problem import MaskValueCollector

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FIX = re.compile(
    r"\b(add|check|fill|fix|give|pass|put|remove|rename|replace|re-export|re-save|save|use"
    r"|write)\b",
    re.IGNORECASE,
)

_DTYPES = st.sampled_from([np.uint8, np.uint16, np.int32, np.float32, np.float64, np.bool_])
_SHAPES = st.one_of(
    hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=6),
    st.tuples(st.integers(1, 5), st.integers(1, 5), st.sampled_from([1, 2, 3, 4])),
)


@st.composite
def masks(draw: st.DrawFn) -> np.ndarray:
    """Any small mask array: few distinct values (like real masks) or arbitrary ones."""
    dtype = np.dtype(draw(_DTYPES))
    shape = draw(_SHAPES)
    if dtype.kind == "b":
        return draw(hnp.arrays(dtype, shape))
    pool = draw(
        st.sampled_from(
            [[0, 255], [0, 1], [0, 128, 255], [0, 1, 2, 255], [255], [0], [0, 300], [-1, 0]]
        )
    )
    if dtype.kind == "f" and draw(st.booleans()):
        pool = [*pool, 0.5, float("nan")]
    if draw(st.booleans()):
        elements = st.sampled_from([v for v in pool if _fits(v, dtype)] or [0])
        return draw(hnp.arrays(dtype, shape, elements=elements))
    return draw(hnp.arrays(dtype, shape))


def _fits(value: float, dtype: np.dtype) -> bool:
    if dtype.kind == "f":
        return True
    info = np.iinfo(dtype)
    return value == int(value) and info.min <= value <= info.max


@FAST
@given(mask=masks(), problem_type=st.sampled_from(["auto", "binary", "multiclass"]))
def test_any_mask_is_accepted_and_encodable_or_explained(mask: np.ndarray, problem_type: str):
    collector = MaskValueCollector(problem_type)
    message = collector(mask)
    if message is not None:
        assert isinstance(message, str) and message
        return
    try:
        problem = collector.problem()
    except DataValidationError as error:
        assert "at least 2 classes" in str(error)
        return
    target = problem.target(mask)  # must not raise for a mask the check accepted
    assert target.shape == mask.shape[:2] and target.dtype == np.uint8
    valid = target[target != 255]
    assert valid.size == 0 or valid.max() < problem.num_outputs + (problem.num_outputs == 1)


@settings(max_examples=40, deadline=None)
@given(
    mask=masks().filter(lambda m: m.ndim == 2 or m.shape[2] in (1, 3, 4)),
    problem_type=st.sampled_from(["auto", "binary", "multiclass"]),
)
def test_mask_files_pass_or_fail_with_data_validation_error(mask: np.ndarray, problem_type: str):
    """Saved to disk (PNG where PIL can, else TIFF), a mask is checked or explained."""
    from autoseg.data.prepare import prepare_training_data

    folder = Path(tempfile.mkdtemp())
    try:
        hw = mask.shape[:2]
        Image.fromarray(np.zeros((*hw, 3), np.uint8)).save(folder / "i.png")
        mask_path = _save_mask(folder, mask)
        rows = "".join(f"i.png,{mask_path.name}\n" for _ in range(2))
        (folder / "t.csv").write_text("image,label\n" + rows)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", AutosegWarning)  # label traps are expected
                prepare_training_data(folder / "t.csv", problem_type=problem_type)
        except (DataValidationError, MaskFormatError) as error:
            assert "t.csv" in str(error) or "classes" in str(error)
    finally:
        shutil.rmtree(folder)


def _save_mask(folder: Path, mask: np.ndarray) -> Path:
    import tifffile

    if mask.dtype == np.uint8 and (mask.ndim == 2 or mask.shape[2] in (3, 4)):
        path = folder / "m.png"
        Image.fromarray(mask).save(path)
    else:
        path = folder / "m.tif"
        tifffile.imwrite(path, mask)
    return path


# ---------------------------------------------------------------------------------- CSV
_CELLS = st.sampled_from(
    ["a.png", "m.png", "missing.png", "", " ", "a b.png", "sub\\a.png", "x;y", '"q"', "é.png"]
)
_HEADERS = st.sampled_from(["image", "label", "Image", " label ", "img", "mask", "", "image.1"])


@st.composite
def csv_texts(draw: st.DrawFn) -> str:
    """CSV-ish text: random headers, ragged rows, separators, blank lines and quotes."""
    separator = draw(st.sampled_from([",", ";", "\t", ",", ","]))
    header = draw(st.lists(_HEADERS, min_size=0, max_size=4))
    lines = [separator.join(header)]
    for _ in range(draw(st.integers(0, 5))):
        cells = draw(st.lists(_CELLS, min_size=0, max_size=4))
        if draw(st.booleans()):
            cells = [f'"{c}"' for c in cells]
        lines.append(separator.join(cells))
        if draw(st.booleans()):
            lines.append(draw(st.sampled_from(["", "  ", separator, '"'])))
    return "\n".join(lines) + draw(st.sampled_from(["", "\n", "\r\n"]))


@pytest.fixture(scope="module")
def csv_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fuzz_csv")
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(folder / "a.png")
    Image.fromarray(np.zeros((4, 5), np.uint8)).save(folder / "m.png")
    return folder


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=csv_texts(), require_labels=st.booleans())
def test_any_csv_loads_or_names_the_fix(csv_folder: Path, text: str, require_labels: bool):
    path = csv_folder / "t.csv"
    path.write_text(text)
    try:
        table = load_table(path, require_labels=require_labels)
        validate_table(table, require_labels=require_labels)
    except DataValidationError as error:
        assert error.problems and FIX.search(str(error)), str(error)
        return
    assert len(table) >= 1 and table.image.str.len().min() > 0
