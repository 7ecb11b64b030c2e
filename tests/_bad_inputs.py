"""The bad-input harness: a case type, the world a case runs in, and a guard on model building.

A :class:`BadInput` makes one mistake a user can make (in ``act``) inside a fresh
:class:`World` and says what autoseg must answer: the exception class, what the message must
name (a row, a file, a key) and the fix it must give. ``tests/test_bad_inputs.py`` runs every
case and also checks that the error came before any model was built or run, and that no file
the case had was lost or changed and no half-written file was left behind.

Case modules (``tests/_bad_cases_*.py``) each export ``CASES: list[BadInput]``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from _tiny import TINY
from PIL import Image


class ModelBuilt(Exception):  # noqa: N818 - a signal, not an error of autoseg's
    """Raised by the guard when a real (non-meta) model is built or run during a case."""


class CliFailed(Exception):  # noqa: N818
    """The command line returned a non-zero exit code; ``str()`` is what it printed on stderr."""

    def __init__(self, code: int, stderr: str) -> None:
        super().__init__(stderr)
        self.code = code
        self.stderr = stderr


@dataclass(frozen=True)
class BadInput:
    """One mistake and the answer autoseg owes the user.

    Attributes:
        id: pytest id, ``<category>/<what>``; categories: table, files, labels, api, saved, cli.
        act: makes the mistake in the world (and returns nothing of interest).
        error: the exception class expected; ``None`` for a case that only warns.
        names: substrings the message must contain: the row (``"row 2"``), the file name, the
            key (``"optim.lr"``).
        fix: a regular expression (searched case-insensitively) for the fix the message gives.
        warning: for label traps: the warning class expected before any model is built (the
            run itself goes on, so the guard's :class:`ModelBuilt` is expected then).
        exit_code: for :class:`CliFailed`: the expected exit code.
        one_line: for :class:`CliFailed`: stderr must be exactly one line.
        leaves: the case may leave autoseg's own files (e.g. a resumable fit folder) behind.

    """

    id: str
    act: Callable[[World], Any]
    error: type[BaseException] | None
    names: Sequence[str] = ()
    fix: str = ""
    warning: type[Warning] | None = None
    exit_code: int = 2
    one_line: bool = True
    leaves: bool = False


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class World:
    """A fresh folder (also the current directory) with good data and a fitted predictor.

    Everything a case builds through these helpers is "the user's": after the case it must
    still be there, unchanged. Files a case writes by other means must be registered with
    :meth:`settle`.
    """

    def __init__(self, root: Path, good_data: Path, good_predictor: Path) -> None:
        self.root = root
        self._good_data = good_data
        self._good_predictor = good_predictor
        self.preparing = False
        self.prepared: dict[Path, str] = {}
        self.prepared_dirs: set[Path] = set()

    # ------------------------------------------------------------------ plumbing
    @contextlib.contextmanager
    def _setup(self) -> Iterator[None]:
        self.preparing = True
        try:
            yield
        finally:
            self.preparing = False
            self.settle()

    def settle(self) -> None:
        """Record the folder as it is now: the state the case must not damage."""
        self.prepared = self.snapshot()
        self.prepared_dirs = self.folders()

    def folders(self) -> set[Path]:
        """Every folder under the root."""
        return {p for p in self.root.rglob("*") if p.is_dir()}

    def snapshot(self) -> dict[Path, str]:
        """Every file under the root and its sha256."""
        return {p: _digest(p) for p in self.root.rglob("*") if p.is_file()}

    # ------------------------------------------------------------------- helpers
    def data(self, name: str = "data") -> Path:
        """A good binary data set (``images/``, ``masks/``, ``train.csv``, ``test.csv``).

        Returns:
            The path of its ``train.csv`` (8 rows of 32x40 px pairs; ``test.csv`` has 3).

        """
        with self._setup():
            shutil.copytree(self._good_data, self.root / name)
        return self.root / name / "train.csv"

    def write(self, relpath: str, content: bytes | str) -> Path:
        """Write a file as the user would."""
        path = self.root / relpath
        with self._setup():
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, str):
                path.write_text(content)
            else:
                path.write_bytes(content)
        return path

    def image(self, relpath: str, array: np.ndarray, **save_kwargs: Any) -> Path:
        """Save an array as an image file (format from the suffix)."""
        path = self.root / relpath
        with self._setup():
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(path, **save_kwargs)
        return path

    def csv(self, relpath: str, rows: Sequence[dict[str, Any]]) -> Path:
        """Write a CSV of rows (paths as given)."""
        path = self.root / relpath
        with self._setup():
            path.parent.mkdir(parents=True, exist_ok=True)
            pd.DataFrame(list(rows)).to_csv(path, index=False)
        return path

    def predictor(self, name: str = "model") -> Path:
        """A copy of a fitted tiny binary predictor folder."""
        with self._setup():
            shutil.copytree(self._good_predictor, self.root / name)
        return self.root / name

    def fitted(self) -> Any:
        """A loaded fitted predictor (its folder is ``model/``)."""
        from autoseg import SemanticSegmentor

        path = self.predictor()
        with self._setup():
            return SemanticSegmentor.load(path, verbosity=0)

    def segmentor(self, **kwargs: Any) -> Any:
        """An unfitted tiny ``SemanticSegmentor`` saving to ``new_model/`` (overridable)."""
        from autoseg import SemanticSegmentor

        settings = {"presets": "cpu_lite", "hyperparameters": dict(TINY), "verbosity": 0}
        settings["path"] = self.root / "new_model"
        settings.update(kwargs)
        return SemanticSegmentor(**settings)


def run_cli(*argv: Any) -> None:
    """Run ``autoseg`` in-process; raise :class:`CliFailed` on a non-zero exit code."""
    from autoseg.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as stop:  # argparse's own usage errors
            code = stop.code if isinstance(stop.code, int) else 2
    if code:
        raise CliFailed(code, err.getvalue())


def message_of(error: BaseException) -> str:
    """What the user sees of an error."""
    return error.stderr if isinstance(error, CliFailed) else str(error)


def check_message(case: BadInput, message: str) -> None:
    """The message names everything the case lists and gives its fix."""
    for name in case.names:
        assert name in message, f"{case.id}: message does not name {name!r}:\n{message}"
    if case.fix:
        assert re.search(case.fix, message, re.IGNORECASE), (
            f"{case.id}: message gives no fix matching {case.fix!r}:\n{message}"
        )
