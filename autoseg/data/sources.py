"""Building the table of image (and mask) paths from what the user has.

:func:`load_table` accepts a CSV (or TSV) file, a DataFrame, a list of image paths, one
image or a folder of images, and returns one table of absolute path strings. CSVs are read
with Python's :mod:`csv` module, which gives every row the line it starts on; mistakes
that are common with spreadsheet exports (``;`` separators, stray columns) are named with
their fix.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from autoseg.data.findings import DataValidationError, fail
from autoseg.data.io import IMAGE_EXTENSIONS, PathLike, list_images

_OTHER_SEPARATORS = {";": "semicolons (;)", "\t": "tabs"}


def _find_column(frame: pd.DataFrame, wanted: str) -> Any | None:
    """Find the column called ``wanted``, tolerating case and stray spaces in CSV headers."""
    if wanted in frame.columns:
        return wanted
    matches = [c for c in frame.columns if str(c).strip().lower() == wanted.strip().lower()]
    return matches[0] if len(matches) == 1 else None


def missing_columns_error(frame: pd.DataFrame, missing: list[str]) -> DataValidationError:
    """Name the missing columns, the columns there are, and how to say which to use."""
    where = f"{frame.attrs['csv']}: " if frame.attrs.get("csv") else ""
    headers = [str(c) for c in frame.columns]
    if len(headers) == 1:
        for separator, name in _OTHER_SEPARATORS.items():
            if separator in headers[0]:
                return fail(
                    f"{where}the columns are separated by {name}, not commas (the header is "
                    f"{headers[0]!r}). Save the file as comma-separated CSV (spreadsheets: "
                    "'CSV (comma delimited)'), or read it yourself and pass the DataFrame: "
                    f"pd.read_csv(path, sep={separator!r})"
                )
    have = ", ".join(repr(c) for c in headers) or "none"
    names = " and ".join(repr(m) for m in missing)
    return fail(
        f"{where}the table has no column{'s' if len(missing) > 1 else ''} {names} (its "
        f"columns are: {have}). Pass image='<column>' and label='<column>' to say which "
        "columns hold the image and mask paths, or rename the columns to 'image' and 'label'"
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


def _unique(headers: list[str]) -> list[str]:
    """Header names made unique the way pandas does (``a``, ``a.1``, ...)."""
    seen: dict[str, int] = {}
    names = []
    for name in headers:
        count = seen.get(name, 0)
        seen[name] = count + 1
        names.append(name if count == 0 else f"{name}.{count}")
    return names


def _records(path: Path) -> tuple[list[str], list[list[str]], list[int]]:
    """Header, data records and the line each record starts on; blank lines skipped."""
    separator = "\t" if path.suffix.lower() == ".tsv" else ","
    header: list[str] | None = None
    rows, lines = [], []
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle, delimiter=separator)
        end = 0
        for record in reader:
            start, end = end + 1, reader.line_num
            if not any(field.strip() for field in record):
                continue  # a blank line (or only separators)
            if header is None:
                header = [field.strip() for field in record]
                continue
            if len(record) > len(header):
                raise fail(
                    f"{path}: line {start} has {len(record)} fields but the header has "
                    f"{len(header)}. Put paths that contain '{separator}' in double quotes, "
                    "or remove the extra fields"
                )
            rows.append(record + [""] * (len(header) - len(record)))
            lines.append(start)
    if header is None:
        raise fail(f"{path}: the CSV file is empty. Add a header line and one row per image")
    return header, rows, lines


def _read_csv(path: Path) -> pd.DataFrame:
    """Read a CSV as strings, with ``attrs["lines"]`` the file line of each data row."""
    try:
        header, rows, lines = _records(path)
    except UnicodeDecodeError as err:
        raise fail(
            f"{path}: is not a UTF-8 text file ({err.reason} at byte {err.start}). Save it "
            "as CSV with UTF-8 encoding"
        ) from err
    except csv.Error as err:
        raise fail(f"{path}: cannot be read as a CSV file ({err}). Check its format") from err
    except OSError as err:
        raise fail(f"{path}: cannot be read ({err.strerror or err}). Check the path") from err
    frame = pd.DataFrame(rows, columns=_unique(header), dtype=object)
    frame.attrs["lines"] = lines
    return frame


def _from_path(path: Path, image_col: str, require_labels: bool) -> tuple[pd.DataFrame, Path]:
    """Return table and base folder for a CSV, a folder or a single image path."""
    path = Path(os.path.abspath(path))
    if path.is_dir():
        if require_labels:
            raise fail(
                f"{path}: is a folder of images, but masks are needed here. Give a CSV file "
                "with columns image,label (one row per image and its mask)"
            )
        images = list_images(path)
        if not images:
            raise fail(f"{path}: the folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        return pd.DataFrame({image_col: [str(p) for p in images]}), path
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        if require_labels:
            raise fail(f"{path}: a single image has no mask. Give a CSV with columns image,label")
        return pd.DataFrame({image_col: [str(path)]}), Path.cwd()
    if not path.is_file():
        raise fail(f"{path}: file not found. Check the path (current directory: {Path.cwd()})")
    frame = _read_csv(path)
    frame.attrs["csv"] = str(path)
    return frame, path.parent


def _source(
    data: pd.DataFrame | PathLike | Sequence[PathLike], image_col: str, require_labels: bool
) -> tuple[pd.DataFrame, Path]:
    if isinstance(data, pd.DataFrame):
        return data, Path.cwd()
    if isinstance(data, str | os.PathLike):
        return _from_path(Path(data).expanduser(), image_col, require_labels)
    if isinstance(data, Sequence):
        if require_labels:
            raise fail("a list of image paths has no masks. Give a CSV with columns image,label")
        return pd.DataFrame({image_col: [str(p) for p in data]}), Path.cwd()
    raise TypeError(
        f"expected a DataFrame, a CSV/folder/image path or a list of paths, "
        f"got {type(data).__name__}"
    )


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
        strings; empty cells become ``""``) and the original index. ``attrs["base"]`` is
        the folder relative paths resolved against. For CSVs the index is the 0-based data
        row, ``attrs["csv"]`` the file and ``attrs["lines"]`` each row's line in it.

    Raises:
        DataValidationError: Missing file or columns, empty table, labels required but not
            available.
        TypeError: ``data`` is of an unsupported type.

    """
    frame, base = _source(data, image_col, require_labels)
    image_key, label_key = _find_column(frame, image_col), _find_column(frame, label_col)
    missing = [
        name
        for name, key in ((image_col, image_key), (label_col, label_key))
        if key is None and (name == image_col or require_labels)
    ]
    if missing:
        raise missing_columns_error(frame, missing)
    if len(frame) == 0:
        where = f"{frame.attrs['csv']}: " if frame.attrs.get("csv") else ""
        raise fail(f"{where}the table has no rows. Add one row per image")
    columns = {"image": [_absolute(v, base) for v in frame[image_key]]}
    if label_key is not None:
        columns["label"] = [_absolute(v, base) for v in frame[label_key]]
    table = pd.DataFrame(columns, index=frame.index.copy())
    table.attrs["base"] = str(base)
    for key in ("csv", "lines"):
        if key in frame.attrs:
            table.attrs[key] = frame.attrs[key]
    return table
