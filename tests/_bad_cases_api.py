"""Bad-input cases: API misuse (settings, arguments, unfitted use) and command-line mistakes.

Every settings case must end before any folder, data check or model: the message names the
argument or dotted key and the range it accepts. Every command-line case exits 2 with one
line (``autoseg <command>: error: ...``) and no traceback.
"""

from __future__ import annotations

from typing import Any

from _bad_inputs import TINY, BadInput, CliFailed, World, run_cli
from _tiny import as_cli_settings

from autoseg.config import UnknownHyperparameterError
from autoseg.errors import SettingsError
from autoseg.predictor import NotFittedError

# ------------------------------------------------------------------ hyperparameter ranges
# (dotted key, bad value, text the message must show: the allowed range or choices)
OUT_OF_RANGE: list[tuple[str, Any, str]] = [
    ("optim.lr", 0, "> 0"),
    ("optim.lr", -1e-3, "> 0"),
    ("optim.lr", "fast", "a number"),
    ("optim.lr", float("nan"), "> 0"),
    ("optim.max_epochs", 0, ">= 1"),
    ("optim.max_steps", 0, ">= 1 (or -1)"),
    ("optim.patience", -1, ">= 0"),
    ("optim.grad_clip", 0, "> 0"),
    ("optim.weight_decay", -0.1, ">= 0"),
    ("env.batch_size", 0, ">= 1"),
    ("env.batch_size", 2.5, "an integer"),
    ("env.effective_batch_size", 0, ">= 1"),
    ("env.eval_batch_size", -4, ">= 1"),
    ("env.num_workers", -2, ">= 0"),
    ("env.precision", "fp8", "bf16-mixed"),
    ("env.accelerator", "tpu", "gpu"),
    ("peft.rank", 0, ">= 1"),
    ("peft.num_experts", 0, ">= 1"),
    ("peft.method", "dora", "conv_lora"),
    ("loss.binary", "dice", "balanced_bce"),
    ("model.backbone", "vit_x", "vit_tiny"),
    ("data.image_size", 70, "multiple of 16"),
    ("data.image_size", 0, ">= 1"),
    ("data.hflip", "maybe", "true/false"),
]


def _fit_with(key: str, value: Any):
    def act(world: World) -> None:
        world.segmentor(hyperparameters={**TINY, key: value}).fit(world.data())

    return act


def _case_id(key: str, value: Any) -> str:
    return f"api/{key}={value}".replace(" ", "")


SETTINGS_CASES = [
    BadInput(
        _case_id(k, v), _fit_with(k, v), SettingsError, names=(k, shown), fix="must be|expects"
    )
    for k, v, shown in OUT_OF_RANGE
]


# ----------------------------------------------------------------- fit and constructor
def _fit(world: World, segmentor: dict[str, Any] | None = None, **fit: Any) -> None:
    world.segmentor(**(segmentor or {})).fit(world.data(), **fit)


def _path_is_file(world: World) -> None:
    target = world.write("model.txt", "my notes\n")
    world.segmentor(path=target).fit(world.data())


def _multiclass_metric_on_binary(world: World) -> None:
    world.segmentor(eval_metric="miou").fit(world.data())


ARGUMENT_CASES = [
    BadInput(
        "api/hyperparameters-is-a-string",
        lambda w: _fit(w, {"hyperparameters": "optim.lr=1e-3"}),
        SettingsError,
        names=("hyperparameters", "str"),
        fix=r"dict",
    ),
    BadInput(
        "api/fit-hyperparameters-is-a-list",
        lambda w: _fit(w, hyperparameters=[("optim.lr", 1e-3)]),
        SettingsError,
        names=("hyperparameters", "list"),
        fix=r"dict",
    ),
    BadInput(
        "api/unknown-hyperparameter",
        lambda w: _fit(w, hyperparameters={"optim.learning_rate": 1e-3}),
        UnknownHyperparameterError,
        names=("optim.learning_rate", "optim.lr"),
        fix=r"did you mean",
    ),
    BadInput(
        "api/time-limit-zero",
        lambda w: _fit(w, time_limit=0),
        SettingsError,
        names=("time_limit", "> 0", "got 0"),
        fix=r"None \(no limit\)",
    ),
    BadInput(
        "api/time-limit-negative",
        lambda w: _fit(w, time_limit=-5),
        SettingsError,
        names=("time_limit", "> 0", "-5"),
        fix=r"seconds > 0",
    ),
    BadInput(
        "api/time-limit-text",
        lambda w: _fit(w, time_limit="1h"),
        SettingsError,
        names=("time_limit", "'1h'"),
        fix=r"number of seconds",
    ),
    BadInput(
        "api/path-is-a-file",
        _path_is_file,
        SettingsError,
        names=("model.txt", "existing file"),
        fix=r"new folder path",
    ),
    BadInput(
        "api/eval-metric-unknown",
        lambda w: _fit(w, {"eval_metric": "accuracy"}),
        SettingsError,
        names=("eval_metric", "'accuracy'", "iou", "miou"),
        fix=r"use None|one of",
    ),
    BadInput(
        "api/eval-metric-of-another-problem-type",
        _multiclass_metric_on_binary,
        SettingsError,
        names=("eval_metric", "'miou'", "binary", "'iou'"),
        fix=r"choose one of",
    ),
    BadInput(
        "api/problem-type-unknown",
        lambda w: _fit(w, {"problem_type": "segmentation"}),
        SettingsError,
        names=("problem_type", "'segmentation'", "multiclass"),
        fix=r"must be one of",
    ),
    BadInput(
        "api/unknown-preset",
        lambda w: _fit(w, {"presets": "gpu_vit_x"}),
        SettingsError,
        names=("gpu_vit_x", "cpu_lite", "gpu_vit_h"),
        fix=r"'auto'",
    ),
    BadInput(
        "api/seed-is-text",
        lambda w: _fit(w, {"seed": "forty-two"}),
        SettingsError,
        names=("seed", "forty-two"),
        fix=r"an int",
    ),
    BadInput(
        "api/verbosity-negative",
        lambda w: _fit(w, {"verbosity": -1}),
        SettingsError,
        names=("verbosity", "-1"),
        fix=r">= 0",
    ),
]


# --------------------------------------------------------------- use before fit; evaluate
def _test_csv(world: World) -> str:
    return str(world.data().parent / "test.csv")


UNFITTED = {
    "predict": lambda w: w.segmentor().predict(_test_csv(w)),
    "predict_proba": lambda w: w.segmentor().predict_proba(_test_csv(w)),
    "evaluate": lambda w: w.segmentor().evaluate(_test_csv(w)),
    "save": lambda w: w.segmentor().save(w.root / "saved"),
    "summary": lambda w: w.segmentor().summary(),
}

USE_CASES = [
    BadInput(
        f"api/{name}-before-fit",
        act,
        NotFittedError,
        names=("not fitted",),
        fix=r"call fit\(train_data\) first|SemanticSegmentor\.load",
    )
    for name, act in UNFITTED.items()
] + [
    BadInput(
        "api/evaluate-unknown-metric",
        lambda w: w.fitted().evaluate(_test_csv(w), metrics=["iou", "accuracy"]),
        SettingsError,
        names=("'accuracy'", "binary", "dice"),
        fix=r"choose from",
    ),
    BadInput(
        "api/evaluate-metrics-is-a-string",
        lambda w: w.fitted().evaluate(_test_csv(w), metrics="iou"),
        SettingsError,
        names=("metrics", "'iou'"),
        fix=r"list of names",
    ),
    BadInput(
        "api/evaluate-no-metrics",
        lambda w: w.fitted().evaluate(_test_csv(w), metrics=[]),
        SettingsError,
        names=("metrics", "[]"),
        fix=r"None \(all\)",
    ),
]


# -------------------------------------------------------------------------- command line
def _fit_cli(world: World, *extra: Any) -> None:
    run_cli("-v", "0", "fit", "--train", world.data(), "--out", "m", "--preset", "cpu_lite", *extra)


def _tiny_sets(*extra: str) -> list[str]:
    sets = as_cli_settings(TINY) + list(extra)
    return [arg for item in sets for arg in ("--set", item)]


def _predict_cli(world: World, *args: Any) -> None:
    run_cli("-v", "0", "predict", *args)


def _cli(case_id: str, act, names: tuple[str, ...], fix: str, **kw: Any) -> BadInput:
    return BadInput(case_id, act, CliFailed, names=names, fix=fix, **kw)


CLI_CASES = [
    _cli(
        "cli/set-without-equals",
        lambda w: _fit_cli(w, "--set", "optim.lr"),
        ("autoseg fit: error:", "--set", "'optim.lr'"),
        r"KEY=VALUE",
    ),
    _cli(
        "cli/set-empty-key",
        lambda w: _fit_cli(w, "--set", "=3"),
        ("autoseg fit: error:", "'=3'"),
        r"--set optim\.lr=3e-4",
    ),
    _cli(
        "cli/set-value-of-wrong-type",
        lambda w: _fit_cli(w, *_tiny_sets("optim.lr=fast")),
        ("autoseg fit: error:", "optim.lr", "'fast'"),
        r"expects a number",
    ),
    _cli(
        "cli/set-batch-size-zero",
        lambda w: _fit_cli(w, *_tiny_sets("env.batch_size=0")),
        ("env.batch_size", ">= 1"),
        r"must be",
    ),
    _cli(
        "cli/set-unknown-key",
        lambda w: _fit_cli(w, *_tiny_sets("optim.learnrate=1e-3")),
        ("optim.learnrate", "optim.lr"),
        r"did you mean",
    ),
    _cli(
        "cli/fit-train-csv-missing",
        lambda w: run_cli("-v", "0", "fit", "--train", "nope.csv", "--out", "m"),
        ("autoseg fit: error:", "nope.csv"),
        r"check the path",
    ),
    _cli(
        "cli/fit-time-limit-zero",
        lambda w: _fit_cli(w, "--time-limit", "0", *_tiny_sets()),
        ("time_limit", "> 0"),
        r"None \(no limit\)",
    ),
    _cli(
        "cli/fit-time-limit-not-a-number",
        lambda w: _fit_cli(w, "--time-limit", "1h"),
        ("autoseg fit: error:", "--time-limit", "'1h'"),
        r"see autoseg fit --help",
    ),
    _cli(
        "cli/fit-without-train",
        lambda w: run_cli("fit", "--out", "m"),
        ("autoseg fit: error:", "--train"),
        r"required",
    ),
    _cli(
        "cli/fit-out-is-a-file",
        lambda w: _fit_cli(w, "--out", w.write("notes.txt", "x"), *_tiny_sets()),
        ("notes.txt", "existing file"),
        r"new folder path",
    ),
    _cli(
        "cli/fit-unknown-preset",
        lambda w: run_cli("fit", "--train", w.data(), "--out", "m", "--preset", "vit_b"),
        ("'vit_b'", "gpu_vit_b"),
        r"one of",
    ),
    _cli(
        "cli/evaluate-model-folder-missing",
        lambda w: run_cli("evaluate", "--model", "nowhere", "--data", _test_csv(w)),
        ("autoseg evaluate: error:", "--model", "'nowhere'", "does not exist"),
        r"pass the folder a fit saved",
    ),
    _cli(
        "cli/evaluate-data-missing",
        lambda w: run_cli("evaluate", "--model", w.predictor(), "--data", "test2.csv"),
        ("--data", "'test2.csv'", "does not exist"),
        r"pass a CSV",
    ),
    _cli(
        "cli/evaluate-unknown-metric",
        lambda w: run_cli(
            "evaluate", "--model", w.predictor(), "--data", _test_csv(w), "--metrics", "f1"
        ),
        ("--metrics", "'f1'", "miou"),
        r"choose from",
    ),
    _cli(
        "cli/predict-model-is-a-file",
        lambda w: _predict_cli(
            w, "--model", w.write("m.yaml", "a: 1"), "--input", "x", "--out", "p"
        ),
        ("autoseg predict: error:", "m.yaml", "is a file"),
        r"pass the folder a fit saved",
    ),
    _cli(
        "cli/predict-input-missing",
        lambda w: _predict_cli(w, "--model", w.predictor(), "--input", "new/", "--out", "p"),
        ("autoseg predict: error:", "--input", "'new/'"),
        r"folder of images",
    ),
    _cli(
        "cli/predict-without-out",
        lambda w: _predict_cli(w, "--model", w.predictor(), "--input", _test_csv(w)),
        ("autoseg predict: error:", "--out"),
        r"required",
    ),
    _cli(
        "cli/info-unknown-backbone",
        lambda w: run_cli("info", "--backbone", "vit_g"),
        ("autoseg info: error:", "--backbone", "vit_g", "vit_h"),
        r"choose from",
    ),
    _cli(
        "cli/info-image-size-not-a-multiple",
        lambda w: run_cli("info", "--backbone", "vit_b", "--image-size", "1000"),
        ("data.image_size", "multiple of 16"),
        r"try 992 or 1008",
    ),
    _cli(
        "cli/demo-time-limit-zero",
        lambda w: run_cli("-v", "0", "demo", "--out", "demo", "--time-limit", "0"),
        ("autoseg demo: error:", "time_limit", "> 0"),
        r"None \(no limit\)",
    ),
    _cli(
        "cli/fit-resume-with-nothing-to-resume",
        lambda w: _fit_cli(w, "--resume", *_tiny_sets()),
        ("autoseg fit: error:", "resume"),
        r"new path|without --resume|resume=False",
    ),
    _cli(
        "cli/unknown-command",
        lambda w: run_cli("train", "--data", "x.csv"),
        ("autoseg: error:", "'train'"),
        r"choose from",
    ),
    _cli(
        "cli/verbosity-not-a-number",
        lambda w: run_cli("-v", "loud", "info"),
        ("autoseg: error:", "'loud'"),
        r"see autoseg --help",
    ),
]

CASES = SETTINGS_CASES + ARGUMENT_CASES + USE_CASES + CLI_CASES
