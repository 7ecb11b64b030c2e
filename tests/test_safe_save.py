"""``save(path, overwrite=True)`` is atomic: a failure at any step leaves a loadable predictor.

Each filesystem step of a save is made to fail in turn, in two ways: as an exception (the
save rolls back) and as a process death (every later step of the save is skipped, as if the
process was killed right there). Either way ``load`` must then give a working predictor, the
old one or the new one, and the next save must leave no hidden leftovers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from _tiny import TINY

import autoseg.persistence as persistence
from autoseg import SemanticSegmentor
from autoseg.data.synthetic import make_synthetic_binary
from autoseg.errors import OutputExistsError

OLD_MARK = "old-version.txt"

# step -> (function patched, which call of it fails); the order a save to an existing
# folder runs them in.
STEPS = {
    "copy the predictor's logs": ("copytree", 1),
    "write adapter.safetensors": ("save_file", 1),
    "rename adapter.safetensors in": ("replace", 1),
    "rename README.md (the model card) in": ("replace", 2),
    "rename config.yaml in": ("replace", 3),
    "move the old folder aside": ("replace", 4),
    "rename the new folder in": ("replace", 5),
    "delete the old folder": ("rmtree", 1),
}
# What ``load`` finds after the failure; "new" only once the new folder is renamed in.
SURVIVOR = {step: "old" for step in STEPS} | {"delete the old folder": "new"}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_synthetic_binary(
        tmp_path_factory.mktemp("data"), n_images=8, size=(32, 40), split_test=2, seed=2
    )


@pytest.fixture(scope="module")
def fitted(data, tmp_path_factory) -> SemanticSegmentor:
    path = tmp_path_factory.mktemp("models") / "seg"
    seg = SemanticSegmentor(presets="cpu_lite", hyperparameters=TINY, path=path, verbosity=0)
    return seg.fit(data[0])


class Injector:
    """Make the n-th call of one filesystem function fail; after it, optionally play dead."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, name: str, nth: int, die: bool) -> None:
        self.calls, self.nth, self.die, self.name = 0, nth, die, name
        self.dead = self.fired = False
        targets = {
            "replace": (os, "replace"),
            "rmtree": (shutil, "rmtree"),
            "copytree": (shutil, "copytree"),
            "save_file": (persistence, "save_file"),
        }
        for key, (owner, attr) in targets.items():
            monkeypatch.setattr(owner, attr, self._wrap(key, getattr(owner, attr)))

    def _wrap(self, key: str, real):
        def call(*args, **kwargs):
            if self.dead:
                return None  # the process is gone: nothing more happens on disk
            if key == self.name:
                self.calls += 1
                if self.calls == self.nth:
                    self.dead, self.fired = self.die, True
                    raise OSError(f"injected failure in {key} call {self.nth}")
            return real(*args, **kwargs)

        return call


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _old_predictor(fitted: SemanticSegmentor, target: Path) -> None:
    fitted.save(target)
    (target / OLD_MARK).write_text("the predictor saved before")


def _assert_works(target: Path, fitted: SemanticSegmentor, image: Path) -> str:
    """Load ``target``, check it predicts like ``fitted``; return "old" or "new"."""
    loaded = SemanticSegmentor.load(target, verbosity=0)
    np.testing.assert_array_equal(loaded.predict(image)[0], fitted.predict(image)[0])
    return "old" if (target / OLD_MARK).is_file() else "new"


@pytest.mark.parametrize("die", [False, True], ids=["exception", "death"])
@pytest.mark.parametrize("step", list(STEPS))
def test_failure_at_each_step_leaves_a_loadable_predictor(
    step, die, fitted, data, tmp_path, monkeypatch
):
    target = tmp_path / "saved"
    _old_predictor(fitted, target)
    image = next((data[0].parent / "images").iterdir())
    name, nth = STEPS[step]
    with monkeypatch.context() as patch:
        injector = Injector(patch, name, nth, die)
        try:
            fitted.save(target, overwrite=True)
        except OSError as error:
            assert "injected" in str(error)
        assert injector.fired, f"step {step!r} was never reached"
    if not die and step != "delete the old folder":
        assert _hidden(tmp_path) == [], "a failed save left hidden files behind"
    with pytest.warns() if die and step == "rename the new folder in" else contextlib.nullcontext():
        survivor = _assert_works(target, fitted, image)
    assert survivor == SURVIVOR[step]
    assert _hidden(tmp_path) == [] or die
    fitted.save(target, overwrite=True)  # the next save works and sweeps every leftover
    assert _hidden(tmp_path) == []
    assert _assert_works(target, fitted, image) == "new"


def test_death_between_the_renames_is_recovered_by_load(fitted, data, tmp_path, monkeypatch):
    target = tmp_path / "saved"
    _old_predictor(fitted, target)
    with monkeypatch.context() as patch:
        Injector(patch, "replace", STEPS["rename the new folder in"][1], die=True)
        with pytest.raises(OSError, match="injected"):
            fitted.save(target, overwrite=True)
    assert not target.exists() and persistence.aside_path(target).is_dir()
    with pytest.warns(UserWarning, match="interrupted.*restored"):
        loaded = SemanticSegmentor.load(target, verbosity=0)
    assert (target / OLD_MARK).is_file() and loaded.summary()["path"] == str(target)
    assert _hidden(tmp_path) == []


def test_saving_into_its_own_folder_is_atomic_too(fitted, data, tmp_path, monkeypatch):
    own = tmp_path / "own"
    shutil.copytree(fitted.path_, own)
    seg = SemanticSegmentor.load(own, verbosity=0)
    with monkeypatch.context() as patch:
        Injector(patch, "replace", 4, die=False)
        with pytest.raises(OSError, match="injected"):
            seg.save(own)
    assert sorted(p.name for p in own.iterdir()) == sorted(p.name for p in fitted.path_.iterdir())
    assert _hidden(tmp_path) == []
    seg.save(own, standalone=True)
    assert (own / "model.safetensors").is_file() and (own / "logs").is_dir()
    seg.save(own)  # saving without full weights again drops the stale model.safetensors
    assert not (own / "model.safetensors").exists()


def test_save_refuses_a_file_and_a_foreign_folder(fitted, tmp_path):
    (tmp_path / "file").write_text("mine")
    with pytest.raises(OutputExistsError, match="is a file"):
        fitted.save(tmp_path / "file", overwrite=True)
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        fitted.save(tmp_path / "folder")
    assert (tmp_path / "file").read_text() == (tmp_path / "folder" / "notes.txt").read_text()
