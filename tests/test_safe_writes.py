"""Nothing autoseg writes replaces a file it did not write; a failed fit leaves a usable state."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _tiny import TINY
from PIL import Image

import autoseg.finetune as finetune
import autoseg.inference as inference
from autoseg import SemanticSegmentor
from autoseg.data.synthetic import make_synthetic_binary
from autoseg.errors import OutputExistsError
from autoseg.outputs import MANIFEST
from autoseg.training.module import SegmentationTask


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_synthetic_binary(
        tmp_path_factory.mktemp("data"), n_images=9, size=(32, 40), split_test=2, seed=4
    )


@pytest.fixture(scope="module")
def fitted(data, tmp_path_factory) -> SemanticSegmentor:
    path = tmp_path_factory.mktemp("models") / "seg"
    seg = SemanticSegmentor(presets="cpu_lite", hyperparameters=TINY, path=path, verbosity=0)
    return seg.fit(data[0])


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def _never_run(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("inference ran before the output folder was checked")

    monkeypatch.setattr(inference, "iter_probabilities", refuse)


# ------------------------------------------------------------------------ predict outputs
def test_predict_writes_a_manifest_and_may_write_its_own_outputs_again(fitted, data, tmp_path):
    out = tmp_path / "pred"
    fitted.predict(data[1], save_dir=out)
    manifest = json.loads((out / MANIFEST).read_text())
    written = {p for p in _tree(out) if p != MANIFEST}
    assert set(manifest["files"]) == written and len(written) == 4  # 2 masks + 2 overlays
    assert all(len(digest) == 64 for digest in manifest["files"].values())
    fitted.predict(data[1], save_dir=out)  # only autoseg's own files there: allowed
    assert {p for p in _tree(out) if p != MANIFEST} == written
    assert not [p for p in out.rglob(".*") if p.name != MANIFEST], "temporary files left"


def test_a_folder_with_the_users_files_needs_overwrite(fitted, data, tmp_path, monkeypatch):
    out = tmp_path / "pred"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with monkeypatch.context() as patch:
        _never_run(patch)
        with pytest.raises(OutputExistsError, match="notes.txt.*overwrite=True"):
            fitted.predict(data[1], save_dir=out)
    assert _tree(out) == {"notes.txt": b"mine"}
    fitted.predict(data[1], save_dir=out, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine" and (out / MANIFEST).is_file()


def test_a_prediction_the_user_edited_is_theirs(fitted, data, tmp_path):
    out = tmp_path / "pred"
    fitted.predict(data[1], save_dir=out)
    edited = sorted(out.glob("*.png"))[0]
    Image.fromarray(np.full((32, 40), 255, np.uint8)).save(edited)
    with pytest.raises(OutputExistsError, match=edited.name):
        fitted.predict(data[1], save_dir=out)


def test_inputs_are_never_written_over_even_with_overwrite(fitted, data, monkeypatch):
    root = data[0].parent
    before = _tree(root)
    _never_run(monkeypatch)
    for folder, kind in ((root / "images", "images"), (root / "masks", "masks")):
        with pytest.raises(OutputExistsError, match=f"{kind}.*another save_dir"):
            fitted.predict(data[1], save_dir=folder, overwrite=True)
    with pytest.raises(OutputExistsError, match="input"):
        fitted.predict(root / "images", save_dir=root / "images", overwrite=True)
    assert _tree(root) == before


def test_a_save_dir_that_is_a_file_is_refused(fitted, data, tmp_path):
    (tmp_path / "out").write_text("mine")
    with pytest.raises(OutputExistsError, match="is a file"):
        fitted.predict(data[1], save_dir=tmp_path / "out", overwrite=True)


def test_a_run_that_died_midway_may_be_written_again(fitted, data, tmp_path, monkeypatch):
    out = tmp_path / "pred"
    calls = {"n": 0}
    import autoseg.outputs as outputs

    real = outputs.atomic_write_bytes

    def dies_on_third(path, payload):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        real(path, payload)

    with monkeypatch.context() as patch:
        patch.setattr(outputs, "atomic_write_bytes", dies_on_third)
        with pytest.raises(KeyboardInterrupt):
            fitted.predict(data[1], save_dir=out)
    fitted.predict(data[1], save_dir=out)  # the manifest lists the two files written
    assert len(json.loads((out / MANIFEST).read_text())["files"]) == 4


# --------------------------------------------------------------------- custom column names
def test_custom_column_names_fit_save_load_and_evaluate(data, tmp_path):
    root = data[0].parent
    for name in ("train", "test"):
        table = pd.read_csv(root / f"{name}.csv").rename(columns={"image": "img", "label": "mask"})
        table.to_csv(root / f"{name}_custom.csv", index=False)
    seg = SemanticSegmentor(
        image="img", label="mask", presets="cpu_lite", hyperparameters=TINY, path=tmp_path / "m"
    )
    seg.verbosity = 0
    seg.fit(root / "train_custom.csv")
    assert len(list((tmp_path / "m" / "validation_overlays").glob("*.png"))) >= 1
    loaded = SemanticSegmentor.load(tmp_path / "m", verbosity=0)
    assert (loaded.image, loaded.label) == ("img", "mask")
    assert loaded.evaluate(root / "test_custom.csv") == seg.evaluate(root / "test_custom.csv")


def test_old_folders_without_column_names_load_with_the_defaults(fitted, tmp_path):
    import yaml

    old = tmp_path / "old"
    shutil.copytree(fitted.path_, old)
    record = yaml.safe_load((old / "config.yaml").read_text())
    del record["columns"]
    (old / "config.yaml").write_text(yaml.safe_dump(record))
    loaded = SemanticSegmentor.load(old, verbosity=0)
    assert (loaded.image, loaded.label) == ("image", "label")


# ------------------------------------------------------------------------- late failures
def _segmentor(path: Path, **extra) -> SemanticSegmentor:
    return SemanticSegmentor(
        presets="cpu_lite", hyperparameters={**TINY, **extra}, path=path, verbosity=0
    )


@pytest.mark.parametrize("failure", [RuntimeError("boom"), KeyboardInterrupt()])
@pytest.mark.parametrize("existed", [False, True], ids=["new-folder", "empty-folder"])
def test_a_failure_before_any_checkpoint_leaves_nothing(
    failure, existed, data, tmp_path, monkeypatch
):
    path = tmp_path / "parent" / "model"
    if existed:
        path.mkdir(parents=True)

    def fails(*args, **kwargs):
        raise failure

    with monkeypatch.context() as patch:
        patch.setattr(finetune, "run_training", fails)
        with pytest.raises(type(failure)) as info:
            _segmentor(path).fit(data[0])
    assert "removed the files" in " ".join(info.value.__notes__)
    assert path.is_dir() == existed and (not existed or not any(path.iterdir()))
    assert (tmp_path / "parent").exists() == existed, "the parent autoseg created is gone too"
    _segmentor(path).fit(data[0])  # rerunning with the same path works
    assert (path / "config.yaml").is_file()


def test_a_failure_while_saving_keeps_the_finished_training(data, tmp_path, monkeypatch):
    path = tmp_path / "model"
    with monkeypatch.context() as patch:
        patch.setattr(SemanticSegmentor, "save", lambda *a, **k: 1 / 0)
        with pytest.raises(ZeroDivisionError) as info:
            _segmentor(path).fit(data[0])
    assert "resume=True" in " ".join(info.value.__notes__)
    assert (path / "resume" / "last.ckpt").is_file()
    seg = _segmentor(path).fit(data[0], resume=True)  # nothing left to train: it saves
    assert seg.fit_summary_["epochs"] == TINY["optim.max_epochs"]
    assert (path / "config.yaml").is_file() and not (path / "resume").exists()
    reloaded = SemanticSegmentor.load(path, verbosity=0)
    assert reloaded.fit_summary_ == seg.fit_summary_


def test_a_failure_after_a_checkpoint_is_resumable(data, tmp_path, monkeypatch):
    # 8 training images, batch 1: 8 steps per epoch, a resume checkpoint after every step.
    work = tmp_path / "data"
    shutil.copytree(data[0].parent, work)
    masks = work / "masks"
    backup = tmp_path / "masks_backup"
    shutil.copytree(masks, backup)
    path = tmp_path / "model"
    step = SegmentationTask.training_step

    def loses_masks(self, batch, batch_idx):
        if self.global_step == 2:
            shutil.rmtree(masks)  # the data disappears mid-training (e.g. a network drive)
        return step(self, batch, batch_idx)

    settings = {"env.batch_size": 1, "env.effective_batch_size": 1}
    settings |= {"env.checkpoint_every_n_steps": 1, "optim.max_epochs": 2}
    with monkeypatch.context() as patch:
        patch.setattr(SegmentationTask, "training_step", loses_masks)
        with pytest.raises(Exception) as info:  # noqa: B017, PT011 - whatever reading fails with
            _segmentor(path, **settings).fit(work / "train.csv")
    assert "resume=True" in " ".join(info.value.__notes__)
    assert (path / "resume" / "last.ckpt").is_file()
    shutil.copytree(backup, masks)
    seg = _segmentor(path, **settings).fit(work / "train.csv", resume=True)
    assert seg.fit_summary_["epochs"] == 2 and not (path / "resume").exists()
