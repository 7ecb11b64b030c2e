"""Bad-input cases for saved predictors and output folders: load, tamper, save, predict.

A damaged or tampered predictor folder gives one :class:`PredictorFolderError` naming the
file, before any real model is built (the weights are checked against a meta-device model);
nothing in it is ever executed. Output folders refuse the user's files (without
``overwrite``) and never write over an input image or mask (even with it).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import yaml
from _bad_inputs import BadInput, World
from PIL import Image
from safetensors.torch import load_file, save

from autoseg.errors import OutputExistsError, PredictorFolderError

RESTORE = r"restore .* backup|fit and save"
TEST_FIRST = "synth_008.png"  # the first image of data/test.csv


def _load(world: World) -> Any:
    from autoseg import SemanticSegmentor

    return SemanticSegmentor.load("model", verbosity=0)


# -------------------------------------------------------------------- tampered config.yaml
def _config_text(text: str | bytes) -> Callable[[World], Any]:
    """Act: replace ``model/config.yaml`` with ``text``, then load."""

    def act(world: World) -> Any:
        world.predictor()
        world.write("model/config.yaml", text)
        return _load(world)

    return act


def _config_edit(edit: Callable[[dict[str, Any]], Any]) -> Callable[[World], Any]:
    """Act: edit the parsed ``model/config.yaml`` in place, write it back, then load."""

    def act(world: World) -> Any:
        folder = world.predictor()
        record = yaml.safe_load((folder / "config.yaml").read_text())
        edit(record)
        world.write("model/config.yaml", yaml.safe_dump(record, sort_keys=False))
        return _load(world)

    return act


def _set(*keys: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(record: dict[str, Any]) -> None:
        node = record
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value

    return edit


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda record: record.pop(key)


def _config_case(
    name: str, act: Callable[[World], Any], *names: str, fix: str = RESTORE
) -> BadInput:
    return BadInput(f"saved/{name}", act, PredictorFolderError, ("config.yaml", *names), fix)


# ------------------------------------------------------------------ tampered weight files
def _weights_edit(
    edit: Callable[[dict[str, torch.Tensor]], Any], file: str = "adapter.safetensors"
) -> Callable[[World], Any]:
    """Act: edit the tensors of ``model/<file>`` (from the adapter), write them, then load."""

    def act(world: World) -> Any:
        folder = world.predictor()
        tensors = load_file(folder / "adapter.safetensors")
        edit(tensors)
        world.write(f"model/{file}", save(tensors))
        return _load(world)

    return act


def _first(tensors: dict[str, torch.Tensor]) -> str:
    return sorted(tensors)[0]


def _reshape(tensors: dict[str, torch.Tensor]) -> None:
    name = _first(tensors)
    tensors[name] = torch.zeros(tensors[name].numel() + 1)


def _truncate(world: World) -> Any:
    folder = world.predictor()
    data = (folder / "adapter.safetensors").read_bytes()
    world.write("model/adapter.safetensors", data[: len(data) // 2])
    return _load(world)


def _garbage_adapter(world: World) -> Any:
    world.predictor()
    world.write("model/adapter.safetensors", b"PK\x03\x04 this is a zip, not safetensors")
    return _load(world)


def _delete(relpath: str) -> Callable[[World], Any]:
    def act(world: World) -> Any:
        world.predictor()
        (world.root / relpath).unlink()
        world.settle()
        return _load(world)

    return act


def _weights_case(name: str, act: Callable[[World], Any], *names: str) -> BadInput:
    file = names[0] if names else "adapter.safetensors"
    return BadInput(f"saved/{name}", act, PredictorFolderError, (file, *names[1:]), RESTORE)


# ------------------------------------------------------------------------ output folders
def _predict(data: str = "data/test.csv", **kwargs: Any) -> Callable[[World], Any]:
    def act(world: World) -> Any:
        world.data()
        return world.fitted().predict(data, **kwargs)

    return act


def _with(prepare: Callable[[World], Any], act: Callable[[World], Any]) -> Callable[[World], Any]:
    def both(world: World) -> Any:
        prepare(world)
        return act(world)

    return both


def _png(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((32, 40), value, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _edited_prediction(world: World) -> None:
    """A folder of earlier predictions whose first mask the user has since corrected."""
    manifest = {
        "kind": "autoseg-predictions",
        "version": 1,
        "files": {TEST_FIRST: hashlib.sha256(_png(0)).hexdigest()},
    }
    world.write(f"out/{TEST_FIRST}", _png(255))
    world.write("out/.autoseg-predictions.json", json.dumps(manifest))


def _save(target: str, **kwargs: Any) -> Callable[[World], Any]:
    return lambda world: world.fitted().save(target, **kwargs)


def _fit(**kwargs: Any) -> Callable[[World], Any]:
    def act(world: World) -> Any:
        csv = world.data()
        return world.segmentor().fit(csv, **kwargs)

    return act


INPUT_FIX = "never replaces an input.*another save_dir"
CASES = [
    # --- loading something that is not a predictor folder
    BadInput(
        "saved/load-missing-folder",
        lambda world: _load(world),
        PredictorFolderError,
        ("model", "does not exist"),
        "predictor folder that fit",
    ),
    BadInput(
        "saved/load-a-file",
        _with(lambda world: world.write("model", "not a folder"), _load),
        PredictorFolderError,
        ("model", "is a file"),
        "predictor folder that fit",
    ),
    _config_case("config-missing", _delete("model/config.yaml"), "missing", fix="folder that fit"),
    # --- config.yaml damaged or tampered with
    _config_case("config-empty", _config_text(""), "is empty"),
    _config_case("config-not-a-mapping", _config_text("- a\n- list\n"), "holds a list"),
    _config_case(
        "config-yaml-tag-never-executes",
        _config_text('!!python/object/apply:os.system ["touch pwned"]\n'),
        "python/object/apply",
        fix="never runs code",
    ),
    _config_case("config-yaml-syntax", _config_text("config: {model: [\n"), "not plain"),
    _config_case("config-not-text", _config_text(b"\xff\xfe\x00garbage\x81"), "not plain"),
    _config_case(
        "config-unknown-format-version",
        _config_edit(_set("format_version", value=99)),
        "format_version 99",
        fix="autoseg version that wrote it",
    ),
    _config_case(
        "config-no-format-version", _config_edit(_drop("format_version")), "no format_version"
    ),
    _config_case("config-missing-problem", _config_edit(_drop("problem")), "'problem'", "missing"),
    _config_case("config-missing-config", _config_edit(_drop("config")), "'config'", "missing"),
    _config_case("config-missing-backbone", _config_edit(_drop("backbone")), "'backbone'"),
    _config_case("config-preset-not-text", _config_edit(_set("preset", value=3)), "'preset'"),
    _config_case(
        "config-unknown-setting",
        _config_edit(_set("config", "optim", "lrr", value=1.0)),
        "'config'",
        "optim.lrr",
    ),
    _config_case(
        "config-invalid-value",
        _config_edit(_set("config", "optim", "lr", value="fast")),
        "'config'",
        "optim.lr",
    ),
    _config_case(
        "config-unknown-backbone",
        _config_edit(_set("config", "model", "backbone", value="vit_zzz")),
        "vit_zzz",
    ),
    _config_case(
        "config-image-size-not-tiling",
        _config_edit(_set("config", "data", "image_size", value=63)),
        "63",
    ),
    _config_case(
        "config-bad-problem",
        _config_edit(_set("problem", "problem_type", value="ternary")),
        "'problem'",
        "ternary",
    ),
    _config_case(
        "config-problem-without-classes",
        _config_edit(lambda record: record["problem"].pop("classes")),
        "'problem'",
    ),
    _config_case(
        "config-bad-column-name",
        _config_edit(_set("columns", value={"image": 3})),
        "columns.image",
    ),
    _config_case(
        "config-bad-checkpoint-path",
        _config_edit(_set("backbone", "checkpoint_path", value=["x"])),
        "backbone.checkpoint_path",
    ),
    # --- weight files damaged, tampered with or from another predictor
    _weights_case("adapter-truncated", _truncate, "adapter.safetensors", "damaged"),
    _weights_case("adapter-missing", _delete("model/adapter.safetensors"), "adapter.safetensors"),
    _weights_case("adapter-not-safetensors", _garbage_adapter, "adapter.safetensors", "damaged"),
    _weights_case(
        "adapter-wrong-shape", _weights_edit(_reshape), "adapter.safetensors", "wrong shape"
    ),
    _weights_case(
        "adapter-extra-tensor",
        _weights_edit(lambda t: t.update({"evil.weight": torch.zeros(2)})),
        "adapter.safetensors",
        "evil.weight",
    ),
    _weights_case(
        "adapter-missing-tensor",
        _weights_edit(lambda t: t.pop(_first(t))),
        "adapter.safetensors",
        "missing",
    ),
    _weights_case(
        "full-weights-from-the-adapter",
        _weights_edit(lambda t: None, file="model.safetensors"),
        "model.safetensors",
        "missing",
    ),
    # --- prediction output folders
    BadInput(
        "saved/predict-into-the-image-folder",
        _predict(save_dir="data/images", overwrite=True),
        OutputExistsError,
        (f"data/images/{TEST_FIRST}",),
        INPUT_FIX,
    ),
    BadInput(
        "saved/predict-into-the-mask-folder",
        _predict(save_dir="data/masks", overwrite=True),
        OutputExistsError,
        (f"data/masks/{TEST_FIRST}",),
        INPUT_FIX,
    ),
    BadInput(
        "saved/predict-a-folder-into-itself",
        _predict("data/images", save_dir="data/images"),
        OutputExistsError,
        ("synth_000.png",),
        INPUT_FIX,
    ),
    BadInput(
        "saved/predict-into-a-folder-with-user-files",
        _with(lambda world: world.write("out/notes.txt", "mine"), _predict(save_dir="out")),
        OutputExistsError,
        ("out/notes.txt", "did not write"),
        r"new or empty save_dir.*overwrite=True",
    ),
    BadInput(
        "saved/predict-over-an-edited-prediction",
        _with(_edited_prediction, _predict(save_dir="out")),
        OutputExistsError,
        (f"out/{TEST_FIRST}",),
        "overwrite=True",
    ),
    BadInput(
        "saved/predict-save-dir-is-a-file",
        _with(lambda world: world.write("out", "mine"), _predict(save_dir="out", overwrite=True)),
        OutputExistsError,
        ("'out'", "is a file"),
        "another save_dir",
    ),
    BadInput(
        "saved/predict-target-is-a-folder",
        _with(
            lambda world: world.write(f"out/{TEST_FIRST}/keep.txt", "mine"),
            _predict(save_dir="out", overwrite=True),
        ),
        OutputExistsError,
        (f"out/{TEST_FIRST}", "is a folder"),
        "another save_dir",
    ),
    # --- save and fit folders
    BadInput(
        "saved/save-into-a-folder-with-user-files",
        _with(lambda world: world.write("elsewhere/notes.txt", "mine"), _save("elsewhere")),
        OutputExistsError,
        ("elsewhere", "not empty"),
        "new path or pass overwrite=True",
    ),
    BadInput(
        "saved/save-onto-a-file",
        _with(lambda world: world.write("target.txt", "mine"), _save("target.txt", overwrite=True)),
        OutputExistsError,
        ("target.txt", "is a file"),
        "folder path",
    ),
    BadInput(
        "saved/fit-into-a-folder-with-user-files",
        _with(lambda world: world.write("new_model/notes.txt", "mine"), _fit()),
        OutputExistsError,
        ("new_model",),
        "new path, or delete",
    ),
    BadInput(
        "saved/resume-with-nothing-to-resume",
        _fit(resume=True),
        PredictorFolderError,
        ("new_model", "last.ckpt"),
        "new fit with a new path",
    ),
]
