"""Every saved predictor folder carries a README.md model card, written with the rest."""

from __future__ import annotations

from pathlib import Path

import pytest
from _tiny import TINY

from autoseg import SemanticSegmentor
from autoseg.data.synthetic import make_synthetic_binary


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[SemanticSegmentor, Path]:
    data = tmp_path_factory.mktemp("data")
    train_csv, test_csv = make_synthetic_binary(
        data, n_images=8, size=(48, 64), split_test=3, seed=4
    )
    path = tmp_path_factory.mktemp("models") / "skin"
    seg = SemanticSegmentor(presets="cpu_lite", hyperparameters=TINY, path=path, verbosity=0)
    return seg.fit(train_csv), test_csv


def test_fit_writes_a_model_card(fitted):
    seg, _ = fitted
    card = (seg.path_ / "README.md").read_text()
    summary = seg.fit_summary_
    assert card.startswith("# autoseg predictor: binary segmentation")
    assert "| 0 | 0 | background |" in card or "| 0 | 0 |" in card
    assert "`vit_tiny` at 64 px" in card and f"`{seg.config_.peft.method}`" in card
    assert f"{summary['trainable_parameters']:,} trainable" in card
    best = summary[f"best_val_{seg.eval_metric_}"]
    assert f"| validation | {seg.eval_metric_} | {best:.4f} |" in card
    assert "![training curve](training_curve.png)" in card
    assert (seg.path_ / "training_curve.png").is_file()
    assert 'SemanticSegmentor.load("skin")' in card
    assert "## Licence" in card and "random weights" in card


def test_saved_copy_names_its_own_folder(fitted, tmp_path):
    seg, _ = fitted
    target = seg.save(tmp_path / "copy")
    card = (target / "README.md").read_text()
    assert 'SemanticSegmentor.load("copy")' in card
    assert "![training curve](training_curve.png)" in card


def test_card_survives_load_and_resave(fitted, tmp_path):
    seg, _ = fitted
    loaded = SemanticSegmentor.load(seg.path_, verbosity=0)
    target = loaded.save(tmp_path / "again")
    assert (target / "README.md").read_text().splitlines()[0].startswith("# autoseg predictor")


def test_export_from_a_fitted_predictor(fitted, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from autoseg.export import read_metadata

    seg, _ = fitted
    path = seg.export(tmp_path / "m.onnx")
    assert read_metadata(path)["peft_method"] == seg.config_.peft.method
    ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_evaluate_adds_its_scores_to_the_card_and_the_next_save(fitted, tmp_path):
    seg, test_csv = fitted
    copy = SemanticSegmentor.load(seg.save(tmp_path / "evaluated"), verbosity=0)
    scores = copy.evaluate(test_csv)
    card = (tmp_path / "evaluated" / "README.md").read_text()
    assert f"| evaluation (3 images) | iou | {scores['iou']:.4f} |" in card
    assert copy.fit_summary_["evaluation"] == {"rows": 3, "metrics": scores}
    resaved = SemanticSegmentor.load(copy.save(tmp_path / "resaved"), verbosity=0)
    assert resaved.fit_summary_["evaluation"]["metrics"]["iou"] == pytest.approx(scores["iou"])


def test_a_read_only_folder_still_evaluates(fitted, tmp_path, monkeypatch):
    import autoseg.persistence as persistence

    seg, test_csv = fitted
    copy = SemanticSegmentor.load(seg.save(tmp_path / "ro"), verbosity=1)

    def refuse(*args, **kwargs):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(persistence, "refresh_model_card", refuse)
    assert 0 <= copy.evaluate(test_csv)["iou"] <= 1
