"""``autoseg export --model DIR --out model.onnx``: a saved predictor to ONNX from the shell."""

from __future__ import annotations

from pathlib import Path

import _tiny
import pytest

from autoseg import SemanticSegmentor
from autoseg.cli import main
from autoseg.data.synthetic import make_synthetic_binary


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    train_csv, _ = make_synthetic_binary(folder, n_images=8, size=(48, 64), split_test=1)
    path = tmp_path_factory.mktemp("models") / "seg"
    seg = SemanticSegmentor(presets="cpu_lite", hyperparameters=_tiny.TINY, path=path, verbosity=0)
    seg.fit(train_csv)
    return path


def test_export_refuses_a_missing_model_folder(tmp_path: Path, capsys) -> None:
    out = tmp_path / "model.onnx"
    assert main(["export", "--model", str(tmp_path / "none"), "--out", str(out)]) == 2
    assert "--model" in capsys.readouterr().err and not out.exists()


@pytest.mark.slow
def test_export_writes_onnx_and_refuses_to_overwrite(saved: Path, tmp_path: Path, capsys) -> None:
    pytest.importorskip("onnx")
    from autoseg.export import read_metadata

    out = tmp_path / "model.onnx"
    assert main(["-v", "0", "export", "--model", str(saved), "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    metadata = read_metadata(out)
    assert metadata["backbone"] == "vit_tiny" and metadata["problem_type"] == "binary"
    before = out.read_bytes()
    assert main(["-v", "0", "export", "--model", str(saved), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("autoseg export: error:") and "overwrite" in err
    assert out.read_bytes() == before
    args = ["-v", "0", "export", "--model", str(saved), "--out", str(out), "--overwrite"]
    assert main(args) == 0
    assert read_metadata(out)["image_size"] == 64
