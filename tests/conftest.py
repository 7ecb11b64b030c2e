"""Fixtures the tests share: the shared data folder and the tiny fit settings.

The suite-wide guard (one torch thread, no network, a private AUTOSEG_HOME) lives in the
repository's root conftest.py, so that it also covers the doctests in autoseg/.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _tiny import TINY

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The engineers' ``../shared/data`` folder; tests using it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not available (only present on the engineers' machines)")
    return SHARED_DATA


@pytest.fixture
def tiny_hyperparameters() -> dict[str, object]:
    """A fresh copy of ``_tiny.TINY`` (a seconds-long fit of the tiny random SAM) to extend."""
    return dict(TINY)
