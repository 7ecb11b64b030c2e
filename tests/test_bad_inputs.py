"""Every mistake a user can make ends in one clear error (or warning) before any long work.

Each case (see ``tests/_bad_inputs.py`` and the ``tests/_bad_cases_*.py`` modules) asserts:
the exception class; that it came before any model was built or run; that the message names
the row, file or key and gives a fix; and that no file was lost, changed or half-written.
"""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path

import pytest
import torch
from _bad_inputs import TINY, BadInput, CliFailed, ModelBuilt, World, check_message, message_of

from autoseg.data.synthetic import make_synthetic_binary
from autoseg.models.segmenter import SamSegmenter

CASE_MODULES = ("_bad_cases_data", "_bad_cases_saved", "_bad_cases_api")


def _collect() -> list[BadInput]:
    cases: list[BadInput] = []
    for name in CASE_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name != name:
                raise
            continue
        cases.extend(module.CASES)
    return cases


CASES = _collect()
CATEGORIES = ("table", "files", "labels", "api", "saved", "cli")


@pytest.fixture(scope="session")
def good_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("good_data")
    make_synthetic_binary(root, n_images=11, size=(32, 40), split_test=3, seed=3)
    return root


@pytest.fixture(scope="session")
def good_predictor(good_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from autoseg import SemanticSegmentor

    path = tmp_path_factory.mktemp("good_predictor") / "model"
    seg = SemanticSegmentor(presets="cpu_lite", hyperparameters=TINY, path=path, verbosity=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seg.fit(good_data / "train.csv")
    return path


@pytest.fixture
def world(tmp_path: Path, good_data: Path, good_predictor: Path, monkeypatch) -> World:
    root = tmp_path / "user"
    root.mkdir()
    monkeypatch.chdir(root)
    world = World(root, good_data, good_predictor)
    _guard_models(world, monkeypatch)
    world.settle()
    return world


def _guard_models(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make building a real model, or running one, raise :class:`ModelBuilt` during a case."""
    init, forward = SamSegmenter.__init__, SamSegmenter.forward

    def guarded_init(self, *args, **kwargs):
        if not world.preparing and torch.get_default_device().type != "meta":
            raise ModelBuilt("a model was built")
        init(self, *args, **kwargs)

    def guarded_forward(self, *args, **kwargs):
        if not world.preparing:
            raise ModelBuilt("a model was run")
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(SamSegmenter, "__init__", guarded_init)
    monkeypatch.setattr(SamSegmenter, "forward", guarded_forward)


def _check_files(case: BadInput, world: World) -> None:
    """Nothing the user had is lost or changed; nothing half-written is left behind."""
    now = world.snapshot()
    lost = [p for p in world.prepared if p not in now]
    changed = [p for p, digest in world.prepared.items() if p in now and now[p] != digest]
    assert not lost, f"{case.id}: files lost: {lost}"
    assert not changed, f"{case.id}: files changed: {changed}"
    new = [p for p in now if p not in world.prepared]
    if not case.leaves:
        assert not new, f"{case.id}: files left behind: {new}"
        folders = sorted(world.folders() - world.prepared_dirs)
        assert not folders, f"{case.id}: folders left behind: {folders}"
    hidden = [p for p in new if any(s.startswith(".") for s in p.relative_to(world.root).parts)]
    assert not hidden, f"{case.id}: half-written (hidden temporary) files left: {hidden}"


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(case: BadInput, world: World) -> None:
    assert case.id.split("/")[0] in CATEGORIES, f"unknown category in {case.id}"
    if case.warning is not None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                case.act(world)
            except ModelBuilt:
                pass  # the run went on past the checks: the warning came before the model
        found = [w for w in caught if issubclass(w.category, case.warning)]
        got = [str(w.message) for w in caught]
        assert found, f"{case.id}: no {case.warning.__name__}; got {got}"
        check_message(case, "\n".join(str(w.message) for w in found))
    else:
        assert case.error is not None
        with pytest.raises(BaseException) as info:
            case.act(world)
        error = info.value
        if isinstance(error, ModelBuilt):
            pytest.fail(f"{case.id}: no error before the model was built or run")
        assert isinstance(error, case.error), (
            f"{case.id}: expected {case.error.__name__}, got {type(error).__name__}: {error}"
        )
        message = message_of(error)
        check_message(case, message)
        if isinstance(error, CliFailed):
            assert error.code == case.exit_code, f"{case.id}: exit code {error.code}\n{message}"
            assert "Traceback" not in message, f"{case.id}: a traceback was printed\n{message}"
            if case.one_line:
                assert len(message.strip().splitlines()) == 1, f"{case.id}: not one line\n{message}"
    _check_files(case, world)


def test_every_category_has_cases() -> None:
    counts = {c: sum(case.id.startswith(c + "/") for case in CASES) for c in CATEGORIES}
    assert all(counts.values()), counts
    assert len(CASES) >= 80, counts
    assert len({case.id for case in CASES}) == len(CASES), "case ids must be unique"
