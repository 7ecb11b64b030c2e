"""Building ``autoseg fit`` command lines for tests that run the CLI in a subprocess."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path


def fit_args(train_csv: Path, out: Path, settings: Sequence[str]) -> list[str]:
    """``autoseg -v 0 fit`` arguments on the CPU preset with ``--set`` for each setting."""
    args = ["-v", "0", "fit", "--train", str(train_csv), "--out", str(out)]
    args += ["--preset", "cpu_lite"]
    for item in settings:
        args += ["--set", item]
    return args


def fit_command(train_csv: Path, out: Path, settings: Sequence[str]) -> list[str]:
    """``python -m autoseg.cli`` with :func:`fit_args`, for a subprocess."""
    return [sys.executable, "-m", "autoseg.cli", *fit_args(train_csv, out, settings)]


def one_thread_env() -> dict[str, str]:
    """One torch thread per process: the machine has two shared cores (see conftest.py)."""
    return {**os.environ, "OMP_NUM_THREADS": "1"}
