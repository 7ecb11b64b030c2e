"""Loading and validating the table that lists image (and mask) files.

A table is a pandas DataFrame with an ``image`` column and, for training and evaluation, a
``label`` column, both holding absolute path strings. :func:`load_table` builds one from a
CSV, a DataFrame, a list of images or a folder; :func:`validate_table` checks every row and
reports all problems at once, so users fix their data in one pass.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import UnidentifiedImageError

from autoseg.data.io import IMAGE_EXTENSIONS, PathLike, image_size, list_images, read_mask
from autoseg.data.masks import MaskFormatError, as_single_channel, distinct_values
from autoseg.errors import AutosegError

MaskCheck = Callable[[np.ndarray], str | None]
_READ_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError)
_JPEG_SUFFIXES = (".jpg", ".jpeg")


class DataValidationError(AutosegError, ValueError):
    """Problems found in the user's data, listed one per line after a count.

    Attributes:
        problems: One line per problem, ``row <index>: <path>: <what>. <how to fix>`` for
            per-row problems.

    Example:
        >>> try:
        ...     validate_table(load_table("train.csv"))
        ... except DataValidationError as err:
        ...     print(len(err.problems))

    """

    def __init__(self, problems: Sequence[str], header: str | None = None) -> None:
        self.problems: list[str] = list(problems)
        count = len(self.problems)
        header = header or f"{count} problem{'s' if count != 1 else ''} found in the data:"
        super().__init__("\n".join([header, *self.problems]))


def _fail(problem: str) -> DataValidationError:
    return DataValidationError([problem], header="The data table cannot be used:")


def _find_column(frame: pd.DataFrame, wanted: str) -> Any | None:
    """Find the column called ``wanted``, tolerating case and stray spaces in CSV headers."""
    if wanted in frame.columns:
        return wanted
    matches = [c for c in frame.columns if str(c).strip().lower() == wanted.strip().lower()]
    return matches[0] if len(matches) == 1 else None


def _missing_columns_error(frame: pd.DataFrame, missing: list[str]) -> DataValidationError:
    have = ", ".join(repr(str(c)) for c in frame.columns) or "none"
    names = " and ".join(repr(m) for m in missing)
    return _fail(
        f"the table has no column{'s' if len(missing) > 1 else ''} {names} (its columns are: "
        f"{have}). Pass image='<column>' "
        "and label='<column>' to say which columns hold the image and mask paths, or "
        "rename the columns to 'image' and 'label'"
    )


def _absolute(value: Any, base: Path) -> str:
    """Absolute path string for a table cell; empty string for an empty cell."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    text = str(value).strip()
    if not text:
        return ""
    path = Path(text).expanduser()
    return os.path.normpath(path if path.is_absolute() else base / path)


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",")
    except pd.errors.EmptyDataError as err:
        message = f"{path}: the CSV file is empty. Add a header line and one row per image"
        raise _fail(message) from err
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise _fail(f"{path}: cannot be read as a CSV file ({err}). Check its format") from err


def _from_path(
    path: Path, image_col: str, require_labels: bool
) -> tuple[pd.DataFrame, Path, Path | None]:
    """Return table, base folder and CSV path for a CSV, a folder or a single image path."""
    if path.is_dir():
        if require_labels:
            raise _fail(
                f"{path}: is a folder of images, but masks are needed here. Give a CSV file "
                "with columns image,label (one row per image and its mask)"
            )
        images = list_images(path)
        if not images:
            raise _fail(f"{path}: the folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        return pd.DataFrame({image_col: [str(p) for p in images]}), path, None
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        if require_labels:
            raise _fail(f"{path}: a single image has no mask. Give a CSV with columns image,label")
        return pd.DataFrame({image_col: [str(path)]}), Path.cwd(), None
    if not path.is_file():
        raise _fail(f"{path}: file not found. Check the path")
    return _read_csv(path), path.parent, path


def load_table(
    data: pd.DataFrame | PathLike | Sequence[PathLike],
    image_col: str = "image",
    label_col: str = "label",
    require_labels: bool = True,
) -> pd.DataFrame:
    """Build a table of absolute image (and mask) paths from what the user has.

    Args:
        data: A DataFrame; a CSV path; or, when ``require_labels`` is False, a list of image
            paths, one image path, or a folder (all its images, sorted by name). Relative
            paths resolve against the CSV's folder, or the current folder otherwise.
        image_col: Column holding image paths.
        label_col: Column holding mask paths.
        require_labels: Whether a label column is required (training, evaluation).

    Returns:
        A new DataFrame with columns ``image`` and, if present, ``label`` (absolute path
        strings; empty cells become ``""``) and the original index. For CSVs the index is
        the 0-based data row and ``attrs["csv"]`` records the file, so messages can give
        line numbers.

    Raises:
        DataValidationError: Missing file or columns, empty table, labels required but not
            available.
        TypeError: ``data`` is of an unsupported type.

    """
    csv_path: Path | None = None
    if isinstance(data, pd.DataFrame):
        frame, base = data, Path.cwd()
    elif isinstance(data, str | os.PathLike):
        frame, base, csv_path = _from_path(Path(data).expanduser(), image_col, require_labels)
    elif isinstance(data, Sequence):
        if require_labels:
            raise _fail("a list of image paths has no masks. Give a CSV with columns image,label")
        frame, base = pd.DataFrame({image_col: [str(p) for p in data]}), Path.cwd()
    else:
        raise TypeError(
            f"expected a DataFrame, a CSV/folder/image path or a list of paths, "
            f"got {type(data).__name__}"
        )
    image_key, label_key = _find_column(frame, image_col), _find_column(frame, label_col)
    missing = [
        name
        for name, key in ((image_col, image_key), (label_col, label_key))
        if key is None and (name == image_col or require_labels)
    ]
    if missing:
        raise _missing_columns_error(frame, missing)
    if len(frame) == 0:
        where = f"{csv_path}: " if csv_path else ""
        raise _fail(f"{where}the table has no rows. Add one row per image")
    columns = {"image": [_absolute(v, base) for v in frame[image_key]]}
    if label_key is not None:
        columns["label"] = [_absolute(v, base) for v in frame[label_key]]
    table = pd.DataFrame(columns, index=frame.index.copy())
    if csv_path is not None:
        table.attrs["csv"] = str(csv_path)
    return table


def check_mask_values(mask: np.ndarray) -> str | None:
    """Default mask check: whole-number class ids within 0..255 in a single channel.

    RGB masks pass only when their three channels are equal.

    Args:
        mask: Raw mask from :func:`autoseg.data.read_mask`.

    Returns:
        None when the mask is usable, else what is wrong and how to fix it.

    """
    try:
        values = distinct_values(as_single_channel(mask))
    except MaskFormatError as err:
        return str(err)
    bad = sorted(v for v in values if v < 0 or v > 255)
    if bad:
        shown = ", ".join(str(v) for v in bad[:10])
        return (
            f"found values {{{shown}}} outside 0..255. Masks must hold class ids 0..254 "
            "(255 = ignore), or 0/1 or 0/255 for binary tasks"
        )
    return None


def check_with(target_fn: Callable[[np.ndarray], np.ndarray]) -> MaskCheck:
    """Turn a target function that raises :class:`MaskFormatError` into a mask check.

    Args:
        target_fn: E.g. :func:`autoseg.data.binary_target`.

    Returns:
        A ``check_values`` callable for :func:`validate_table`.

    """

    def check(mask: np.ndarray) -> str | None:
        try:
            target_fn(mask)
        except MaskFormatError as err:
            return str(err)
        return None

    return check


def _file_problem(path: str, what: str) -> str | None:
    if not path:
        return f"no {what} path given (empty cell). Fill it in or remove the row"
    if not os.path.exists(path):
        return "file not found. Check the path (paths in a CSV are relative to its folder)"
    if os.path.isdir(path):
        return f"is a folder, not a{'n' if what == 'image' else ''} {what} file. Fix the path"
    return None


def _mask_problems(label: str, image_hw: tuple[int, int] | None, check: MaskCheck) -> list[str]:
    try:
        mask = read_mask(label)
    except _READ_ERRORS as err:
        return [f"cannot be read as a mask image ({type(err).__name__}). Save it as a PNG"]
    found: list[str] = []
    if image_hw is not None and tuple(mask.shape[:2]) != image_hw:
        found.append(
            f"mask size {mask.shape[0]}x{mask.shape[1]} (HxW) differs from its image "
            f"size {image_hw[0]}x{image_hw[1]}. Masks must match their image pixel "
            "for pixel"
        )
    message = check(mask)
    jpeg = label.lower().endswith(_JPEG_SUFFIXES)
    if message is None and jpeg and mask.ndim == 2:
        values = distinct_values(mask)
        if not (values <= {0, 1} or values <= {0, 255}):
            message = f"JPEG mask holds {len(values)} distinct values"
    if message is not None:
        hint = ". JPEG compression changes mask values: save masks as PNG" if jpeg else ""
        found.append(message.rstrip(".") + hint)
    return found


def _row_problems(image: str, label: str | None, check: MaskCheck) -> list[tuple[str, str]]:
    """All problems of one row as ``(path, message)`` pairs."""
    found: list[tuple[str, str]] = []
    image_hw: tuple[int, int] | None = None
    problem = _file_problem(image, "image")
    if problem is None:
        try:
            image_hw = image_size(image)
        except _READ_ERRORS as err:
            problem = (
                f"cannot be read as an image ({type(err).__name__}). Check that it is a "
                "PNG, JPEG, TIFF or BMP file and not damaged"
            )
    if problem is not None:
        found.append((image, problem))
    if label is not None:
        problem = _file_problem(label, "mask")
        if problem is not None:
            found.append((label, problem))
        else:
            found.extend((label, p) for p in _mask_problems(label, image_hw, check))
    return found


def _cell(value: Any) -> str:
    """Return a path cell as a string; missing values (NaN, None) become ``""``."""
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)


def _row_name(index: Any, csv: str | None) -> str:
    if csv is not None and isinstance(index, int | np.integer):
        return f"row {index} (line {int(index) + 2} of {Path(csv).name})"
    return f"row {index}"


def validate_table(
    table: pd.DataFrame,
    require_labels: bool = True,
    check_values: MaskCheck | None = None,
    max_workers: int | None = None,
) -> None:
    """Check every row of a table and raise one error listing all problems.

    Per row: the files exist; the image header decodes (pixels are not decoded, for speed);
    the mask decodes fully, has the image's size, and passes ``check_values``.

    Args:
        table: Output of :func:`load_table`.
        require_labels: Whether a ``label`` column must be present and checked.
        check_values: Returns None for a usable mask, else a message; defaults to
            :func:`check_mask_values`. With ``require_labels=False`` masks are not checked
            at all (prediction only needs the images).
        max_workers: Threads for reading files; defaults to ``min(8, cpu_count + 2)``.

    Raises:
        DataValidationError: One line per problem, ``row <index>: <path>: <problem>``.

    """
    needed = ["image", "label"] if require_labels else ["image"]
    missing = [name for name in needed if name not in table.columns]
    if missing:
        raise _missing_columns_error(table, missing)
    if len(table) == 0:
        raise _fail("the table has no rows. Add one row per image")
    check = check_values or check_mask_values
    labels = table["label"] if require_labels else [None] * len(table)
    rows = [
        (_cell(img), None if lab is None else _cell(lab))
        for img, lab in zip(table["image"], labels, strict=True)
    ]
    workers = max_workers or min(8, (os.cpu_count() or 1) + 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda row: _row_problems(row[0], row[1], check), rows))
    csv = table.attrs.get("csv")
    problems = [
        f"{_row_name(index, csv)}: {path}: {message}"
        for index, found in zip(table.index, results, strict=True)
        for path, message in found
    ]
    if problems:
        raise DataValidationError(problems)
