"""How problems in the user's data are reported: one error listing them all, rows named.

Rows are named by their table index; for tables read from a CSV, also by the line of the
file they came from (``table.attrs["lines"]``, exact even with blank lines and quoted
newlines), so the user can go straight to it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from autoseg.errors import AutosegError


class DataValidationError(AutosegError, ValueError):
    """Problems found in the user's data, listed one per line after a count.

    Attributes:
        problems: One line per problem, ``row <index>: <path>: <what>. <how to fix>`` for
            per-row problems.

    Example:
        >>> err = DataValidationError(["row 0: a.png: file not found. Check the path."])
        >>> print(err)
        1 problem found in the data:
        row 0: a.png: file not found. Check the path.

    """

    def __init__(self, problems: Sequence[str], header: str | None = None) -> None:
        self.problems: list[str] = list(problems)
        count = len(self.problems)
        header = header or f"{count} problem{'s' if count != 1 else ''} found in the data:"
        super().__init__("\n".join([header, *self.problems]))


def fail(problem: str) -> DataValidationError:
    """One problem that makes the whole table unusable (not a row's)."""
    return DataValidationError([problem], header="The data table cannot be used:")


def row_name(table: pd.DataFrame, index: Any) -> str:
    """``row 3 (line 6 of train.csv)`` for CSV tables, ``row 3`` otherwise."""
    csv, lines = table.attrs.get("csv"), table.attrs.get("lines")
    if csv is None or not isinstance(index, int | np.integer):
        return f"row {index}"
    number = int(index)
    line = lines[number] if lines is not None and 0 <= number < len(lines) else number + 2
    return f"row {number} (line {line} of {Path(csv).name})"


def some(items: Iterable[str], limit: int = 3) -> str:
    """``a, b, c and 4 more``: the first few of many things, so messages stay short."""
    listed = list(items)
    shown = ", ".join(listed[:limit])
    return shown + (f" and {len(listed) - limit} more" if len(listed) > limit else "")


def base_hint(table: pd.DataFrame) -> str:
    """Where the relative paths of a table resolve, for file-not-found messages."""
    base = table.attrs.get("base")
    if table.attrs.get("csv") is not None:
        return f"relative paths in a CSV resolve against its folder, {base}"
    where = f", {base}" if base else ""
    return f"relative paths resolve against the current directory{where}"
