"""``PredictorState`` is the one saved state; ``PredictorFolder`` names every file of a folder."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from autoseg import NotFittedError, SemanticSegmentor
from autoseg.config import Config
from autoseg.errors import PredictorFolderError
from autoseg.finetune import FitRequest
from autoseg.folder import PredictorFolder
from autoseg.labels.problem import Problem
from autoseg.state import FORMAT_VERSION, PredictorState

CONFIG_PATH = Path("seg/config.yaml")


def _version_1_record() -> dict:
    """A ``config.yaml`` exactly as autoseg's format 1 wrote it before PredictorState."""
    return {
        "format_version": 1,
        "autoseg_version": "0.1.0",
        "preset": "cpu_lite",
        "config": Config().to_dict(),
        "problem": Problem("multiclass", (0, 3, 7), ("bg", "a", "b")).to_dict(),
        "eval_metric": "miou",
        "backbone": {"name": "vit_b", "checkpoint_path": "/w/sam.pth", "checkpoint_sha256": "ab"},
        "summary": {"epochs": 2, "best_val_miou": 0.5},
        "columns": {"image": "img", "label": "mask"},
    }


def test_a_format_1_record_round_trips_key_for_key():
    record = _version_1_record()
    state = PredictorState.from_record(record, CONFIG_PATH)
    assert state.problem.classes == (0, 3, 7) and state.columns == {"image": "img", "label": "mask"}
    assert state.fit_summary == {"epochs": 2, "best_val_miou": 0.5} and state.model is None
    again = state.to_record()
    assert list(again) == list(record) and again == record
    assert FORMAT_VERSION == 1


def test_optional_keys_take_their_defaults():
    record = _version_1_record()
    del record["summary"], record["columns"]
    state = PredictorState.from_record(record, CONFIG_PATH)
    assert state.fit_summary == {} and state.columns == {"image": "image", "label": "label"}


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("format_version", 2, "format_version 2"),
        ("eval_metric", 3, "'eval_metric' must be a str"),
        ("backbone", {"checkpoint_sha256": 5}, "backbone.checkpoint_sha256"),
        ("columns", {"image": ""}, "columns.image"),
    ],
)
def test_a_bad_record_names_the_file_and_key(key, value, message):
    record = _version_1_record() | {key: value}
    with pytest.raises(PredictorFolderError, match=message) as info:
        PredictorState.from_record(record, CONFIG_PATH)
    assert str(CONFIG_PATH) in str(info.value)


def test_the_folder_names_every_file_once_inside_its_root():
    folder = PredictorFolder("models/seg")
    names = [
        "config",
        "adapter",
        "full_weights",
        "logs",
        "metrics_csv",
        "tensorboard",
        "curve",
        "overlays",
        "resume_dir",
        "resume_checkpoint",
        "run_file",
        "model_card",
    ]
    paths = [getattr(folder, name) for name in names]
    assert len(set(paths)) == len(paths)
    assert all(folder.root in path.parents for path in paths)
    assert folder.model_card.name == "README.md" and folder.run_file.parent == folder.resume_dir


def test_learned_attributes_do_not_exist_before_fit():
    seg = SemanticSegmentor(verbosity=0)
    for name in ("model_", "config_", "classes_", "fit_summary_", "backbone_"):
        assert not hasattr(seg, name)
    with pytest.raises(NotFittedError, match="not fitted yet"):
        _ = seg.problem_
    assert not [name for name in vars(seg) if name.endswith("_")], "__init__ only stores"


def test_every_constructor_setting_reaches_the_fit_request():
    constructor = set(inspect.signature(SemanticSegmentor).parameters) - {"hyperparameters"}
    assert set(FitRequest.PREDICTOR_SETTINGS) == constructor
