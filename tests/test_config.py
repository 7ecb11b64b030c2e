"""Settings are checked whenever a Config is made, and the fit arguments before any work."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from autoseg.arguments import check_fit_arguments, resolve_eval_metric
from autoseg.config import SECTIONS, Config, OptimConfig
from autoseg.errors import SettingsError
from autoseg.evaluation import check_metric_names
from autoseg.labels.problem import Problem
from autoseg.peft.registry import peft_methods
from autoseg.preset_choice import available_presets, load_preset

BINARY = Problem("binary", classes=(0, 1), class_names=("background", "object"))
MULTI = Problem("multiclass", classes=(0, 1, 2), class_names=("bg", "road", "car"))


def _ruled_fields() -> list[tuple[str, dataclasses.Field, dict]]:
    """(dotted key, field, overrides that make the key exist): fixed sections, then each
    PEFT method's settings under ``peft.method=<method>``."""
    fixed = [(section, kind, {}) for section, kind in SECTIONS.items()]
    methods = [("peft", m.config, {"peft.method": m.name}) for m in peft_methods()]
    return [
        (f"{section}.{spec.name}", spec, base)
        for section, kind, base in fixed + methods
        for spec in dataclasses.fields(kind)
        if "rule" in spec.metadata
    ]


def _ids() -> list[str]:
    return [k + (f"[{b['peft.method']}]" if b else "") for k, _, b in _ruled_fields()]


def _bad_value(spec: dataclasses.Field):
    """A value of the field's type just outside its rule."""
    rule = spec.metadata["rule"]
    if rule.choices is not None:
        return "no-such-choice"
    bad = rule.above if rule.above is not None else rule.at_least - 1
    while bad in rule.also:  # an allowed special value such as -1 = "auto"
        bad -= 1
    return float(bad) if isinstance(spec.default, float) else int(bad)


@pytest.mark.parametrize(("key", "spec", "base"), _ruled_fields(), ids=_ids())
def test_every_rule_refuses_a_value_just_outside_it(key, spec, base):
    rule = spec.metadata["rule"]
    value = _bad_value(spec)
    with pytest.raises(SettingsError) as info:
        Config().with_overrides({**base, key: value})
    assert key in str(info.value) and rule.describe() in str(info.value)
    Config().with_overrides({**base, key: spec.default})  # the default itself is allowed


def test_the_rules_cover_the_ranges_the_issue_names():
    ruled = {key for key, _, _ in _ruled_fields()}
    for key in (
        "optim.lr",
        "optim.max_epochs",
        "optim.patience",
        "optim.max_steps",
        "optim.grad_clip",
        "env.batch_size",
        "env.effective_batch_size",
        "env.eval_batch_size",
        "env.num_workers",
        "env.precision",
        "env.accelerator",
        "peft.rank",
        "peft.num_experts",
        "peft.alpha",
        "peft.balance_weight",
        "loss.binary",
        "model.backbone",
        "data.image_size",
    ):
        assert key in ruled, key
    assert Config().with_overrides({"optim.max_steps": -1}).optim.max_steps == -1


@pytest.mark.parametrize("name", available_presets())
def test_every_preset_is_valid(name):
    config = load_preset(name)
    assert Config.from_dict(config.to_dict()) == config


def test_a_config_built_directly_is_checked_too():
    with pytest.raises(SettingsError, match=r"'optim.lr' must be > 0, got 0"):
        Config(optim=OptimConfig(lr=0))
    with pytest.raises(SettingsError, match=r"'optim.max_epochs' expects an integer"):
        Config(optim=OptimConfig(max_epochs="3"))


@pytest.mark.parametrize(
    ("value", "expected"),
    [("3e-4", 3e-4), (2, 2.0), (" 0.5 ", 0.5)],
)
def test_floats_accept_strings_and_ints(value, expected):
    lr = Config().with_overrides({"optim.lr": value}).optim.lr
    assert lr == expected and isinstance(lr, float)


@pytest.mark.parametrize(
    ("value", "expected"), [("true", True), ("Off", False), ("1", True), (0, False)]
)
def test_booleans_accept_the_usual_words(value, expected):
    assert Config().with_overrides({"data.hflip": value}).data.hflip is expected


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("env.batch_size", 2.5, "expects an integer"),
        ("env.batch_size", "4.0", "expects an integer"),
        ("env.batch_size", True, "expects an integer"),
        ("optim.lr", "inf", "must be > 0"),
        ("optim.lr", None, "expects float, got None"),
        ("data.hflip", 2, "expects true/false"),
        ("model.checkpoint", 3, "expects str"),
    ],
)
def test_wrong_types_are_refused(key, value, message):
    with pytest.raises(SettingsError, match=message):
        Config().with_overrides({key: value})


def test_integral_floats_and_paths_are_converted():
    config = Config().with_overrides({"env.batch_size": 4.0, "model.checkpoint": Path("a.pth")})
    assert config.env.batch_size == 4 and isinstance(config.env.batch_size, int)
    assert config.model.checkpoint == "a.pth"
    assert Config().with_overrides({"model.checkpoint": None}).model.checkpoint is None


def test_image_size_must_fit_the_backbone_stride():
    lite = Config().with_overrides({"model.backbone": "lite", "data.image_size": 100})
    assert lite.data.image_size == 100  # LiteMedSAM tiles by 4 px
    with pytest.raises(SettingsError, match=r"multiple of 16 .*'vit_b'.* \(try 992 or 1008\)"):
        Config().with_overrides({"model.backbone": "vit_b", "data.image_size": 1000})


def test_overrides_and_nested_forms_must_be_mappings():
    with pytest.raises(SettingsError, match="hyperparameters must be a dict"):
        Config().with_overrides("optim.lr=1e-3")
    with pytest.raises(SettingsError, match="maps sections"):
        Config.from_dict({"optim": "fast"})
    with pytest.raises(SettingsError, match="maps sections"):
        Config.from_dict(["optim"])


def test_unknown_presets_are_refused_even_as_relative_paths():
    for name in ("gpu_vit_x", "../presets/cpu_lite", ""):
        with pytest.raises(SettingsError, match="cpu_lite"):
            load_preset(name)


# ---------------------------------------------------------------------- fit arguments
GOOD = {
    "path": None,
    "time_limit": None,
    "problem_type": "auto",
    "eval_metric": None,
    "hyperparameters": [None, {}],
}


@pytest.mark.parametrize(
    "changes",
    [
        {"path": "new_model", "time_limit": 0.5, "problem_type": "binary"},
        {"time_limit": np.float32(30), "seed": np.int64(3), "verbosity": 0},
        {"eval_metric": "mae", "hyperparameters": [{"optim.lr": 1}, None]},
        {"eval_metric": "acc", "problem_type": "multiclass", "path": Path("m")},
    ],
)
def test_good_fit_arguments_pass(changes):
    check_fit_arguments(**{**GOOD, **changes})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"time_limit": 0}, r"time_limit must be None \(no limit\) or a number of seconds > 0"),
        ({"time_limit": -5}, "got -5"),
        ({"time_limit": float("nan")}, "got nan"),
        ({"time_limit": True}, "got True"),
        ({"time_limit": "60"}, "got '60'"),
        ({"problem_type": "segmentation"}, r"problem_type must be one of \['auto'"),
        ({"eval_metric": "accuracy"}, r"eval_metric='accuracy' is not a metric"),
        ({"eval_metric": ["iou"]}, "is not a metric"),
        ({"hyperparameters": [None, "optim.lr=3"]}, "hyperparameters must be a dict"),
        ({"hyperparameters": [[("optim.lr", 3)], None]}, "got list"),
        ({"path": 3}, "path must be None or a folder path"),
        ({"path": ""}, "path must be None or a folder path"),
        ({"seed": 1.5}, "seed must be an int"),
        ({"seed": "0"}, "seed must be an int"),
        ({"verbosity": -1}, r"verbosity must be an int >= 0"),
        ({"verbosity": None}, "verbosity must be"),
    ],
)
def test_bad_fit_arguments_name_the_argument(changes, message):
    with pytest.raises(SettingsError, match=message):
        check_fit_arguments(**{**GOOD, **changes})


def test_a_path_that_is_a_file_is_refused(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    with pytest.raises(SettingsError, match="is an existing file, not a folder"):
        check_fit_arguments(**{**GOOD, "path": notes})
    check_fit_arguments(**{**GOOD, "path": tmp_path})  # an existing folder is claim_folder's
    assert notes.read_text() == "mine"


def test_eval_metric_defaults_and_fits_the_problem_type():
    assert resolve_eval_metric(BINARY, None) == "iou"
    assert resolve_eval_metric(MULTI, None) == "miou"
    assert resolve_eval_metric(BINARY, "ber") == "ber"
    with pytest.raises(SettingsError, match=r"'miou' does not exist for a binary .*'iou'"):
        resolve_eval_metric(BINARY, "miou")
    with pytest.raises(SettingsError, match=r"multiclass problem; choose one of \['miou', 'acc'"):
        resolve_eval_metric(MULTI, "dice")


def test_evaluate_metric_names_per_problem_type():
    check_metric_names(BINARY, ["iou", "mae"])
    check_metric_names(MULTI, ["miou", "iou/road"])
    check_metric_names(MULTI, None)
    for bad in (["iou/plane"], ["dice"], "miou", []):
        with pytest.raises(SettingsError, match="iou/car"):
            check_metric_names(MULTI, bad)


def test_cli_strings_become_lists_of_band_numbers():
    from autoseg.preset_choice import load_preset

    config = load_preset("cpu_lite").with_overrides({"data.bands": "[3, 2, 1]"})
    assert config.data.bands == [3, 2, 1]
    four = load_preset("cpu_lite").with_overrides(
        {"model.in_channels": "4", "data.bands": "4,3,2,1"}
    )
    assert four.data.bands == [4, 3, 2, 1]
    with pytest.raises(SettingsError, match="'data.bands' expects list"):
        load_preset("cpu_lite").with_overrides({"data.bands": "red,green"})
