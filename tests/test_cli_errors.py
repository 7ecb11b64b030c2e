"""How the command line ends: exit codes, one-line messages, --debug, Ctrl-C, --overwrite."""

from __future__ import annotations

import types
import warnings

import pytest
from _bad_inputs import TINY

from autoseg import cli, cli_info
from autoseg.cli import main
from autoseg.data.findings import DataValidationError
from autoseg.data.synthetic import make_synthetic_binary
from autoseg.errors import SettingsError


def _failing_info(monkeypatch, error: BaseException) -> None:
    """Make ``autoseg info`` raise ``error``."""

    def raise_it(args):
        raise error

    monkeypatch.setattr(cli_info, "run_info", raise_it)


def _stderr_lines(capsys) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


def test_a_user_error_is_one_line_and_exit_2(monkeypatch, capsys):
    _failing_info(monkeypatch, SettingsError("optim.lr must be > 0,\n  got 0."))
    assert main(["info"]) == 2
    assert _stderr_lines(capsys) == ["autoseg info: error: optim.lr must be > 0, got 0."]


def test_a_data_report_keeps_one_line_per_problem(monkeypatch, capsys):
    error = DataValidationError(["row 0: a.png: not found", "row 3: b.png: not found"])
    _failing_info(monkeypatch, error)
    assert main(["info"]) == 2
    lines = _stderr_lines(capsys)
    assert lines[0] == "autoseg info: error: 2 problems found in the data:"
    assert lines[1:] == ["row 0: a.png: not found", "row 3: b.png: not found"]


def test_a_single_data_problem_is_one_line(monkeypatch, capsys):
    _failing_info(monkeypatch, DataValidationError(["x.csv: file not found"], header="Bad:"))
    assert main(["info"]) == 2
    assert _stderr_lines(capsys) == ["autoseg info: error: Bad: x.csv: file not found"]


def test_an_internal_error_exits_1_with_a_hint(monkeypatch, capsys):
    _failing_info(monkeypatch, RuntimeError("shape mismatch\nat layer 3"))
    assert main(["info"]) == 1
    assert _stderr_lines(capsys) == [
        "autoseg info: internal error: RuntimeError: shape mismatch at layer 3 "
        "(rerun with --debug for the traceback, and please report it)"
    ]


@pytest.mark.parametrize("how", ["flag", "flag-after-command", "environment"])
def test_debug_shows_the_traceback(monkeypatch, capsys, how):
    _failing_info(monkeypatch, SettingsError("bad setting"))
    argv = {"flag": ["--debug", "info"], "flag-after-command": ["info", "--debug"]}.get(how)
    if argv is None:
        argv = ["info"]
        monkeypatch.setenv("AUTOSEG_DEBUG", "1")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "raise_it" in err
    assert err.strip().endswith("autoseg info: error: bad setting")


def test_debug_off_by_default_and_with_zero(monkeypatch, capsys):
    monkeypatch.setenv("AUTOSEG_DEBUG", "0")
    _failing_info(monkeypatch, ValueError("internal"))
    assert main(["info"]) == 1
    assert "Traceback" not in capsys.readouterr().err


def test_ctrl_c_exits_130_with_one_line(monkeypatch, capsys):
    _failing_info(monkeypatch, KeyboardInterrupt())
    assert main(["info"]) == 130
    assert _stderr_lines(capsys) == ["autoseg info: interrupted"]


def test_usage_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["fit", "--out", "m"])
    assert stop.value.code == 2
    assert _stderr_lines(capsys) == [
        "autoseg fit: error: the following arguments are required: --train (see autoseg fit --help)"
    ]


def test_set_pairs_are_parsed_or_refused():
    assert cli._parse_sets(["optim.lr = 3e-4", "model.checkpoint=None"]) == {
        "optim.lr": "3e-4",
        "model.checkpoint": None,
    }
    for bad in ("optim.lr", "=3", " = "):
        with pytest.raises(SettingsError, match="KEY=VALUE"):
            cli._parse_sets([bad])


def test_predict_passes_overwrite(monkeypatch, tmp_path, capsys):
    calls = []
    fake = types.SimpleNamespace(predict=lambda data, **kw: calls.append((data, kw)) or [1])
    monkeypatch.setattr("autoseg.predictor.SemanticSegmentor.load", lambda *a, **k: fake)
    (tmp_path / "model").mkdir()
    (tmp_path / "x.png").write_bytes(b"")
    base = ["predict", "--model", str(tmp_path / "model"), "--input", str(tmp_path / "x.png")]
    assert main([*base, "--out", "p"]) == 0
    assert main([*base, "--out", "p", "--overwrite"]) == 0
    assert [kw["overwrite"] for _, kw in calls] == [False, True]
    assert "wrote 1 masks" in capsys.readouterr().out


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    from autoseg import SemanticSegmentor

    root = tmp_path_factory.mktemp("cli_errors")
    train_csv, test_csv = make_synthetic_binary(
        root / "data", n_images=8, size=(32, 40), split_test=2, seed=1
    )
    seg = SemanticSegmentor(presets="cpu_lite", hyperparameters=TINY, path=root / "m", verbosity=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seg.fit(train_csv)
    return root / "m", test_csv


def test_predict_into_a_folder_of_user_files_needs_overwrite(fitted, tmp_path, capsys):
    model, test_csv = fitted
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    argv = ["-v", "0", "predict", "--model", str(model), "--input", str(test_csv), "--out"]
    assert main([*argv, str(out)]) == 2
    lines = _stderr_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith("autoseg predict: error: ")
    assert "--overwrite" in lines[0] and not list(out.glob("*.png"))
    assert main([*argv, str(out), "--overwrite"]) == 0
    assert (out / "notes.txt").read_text() == "keep me" and len(list(out.glob("*.png"))) == 2


def test_evaluate_metric_of_another_problem_type_is_exit_2(fitted, capsys):
    model, test_csv = fitted
    argv = ["-v", "0", "evaluate", "--model", str(model), "--data", str(test_csv)]
    assert main([*argv, "--metrics", "miou"]) == 2
    lines = _stderr_lines(capsys)
    assert len(lines) == 1 and "'miou'" in lines[0] and "binary" in lines[0]


def test_what_happened_to_a_failed_fit_is_on_the_line(monkeypatch, capsys):
    error = RuntimeError("disk full")
    error.add_note("autoseg: the fit stopped; m keeps its resume checkpoint.")
    _failing_info(monkeypatch, error)
    assert main(["info"]) == 1
    (line,) = _stderr_lines(capsys)
    assert "disk full (autoseg: the fit stopped; m keeps its resume checkpoint.)" in line


def test_demo_checks_its_time_limit_before_writing(tmp_path):
    from autoseg.demo import run_demo

    with pytest.raises(SettingsError, match="time_limit"):
        run_demo(tmp_path / "demo", time_limit=0)
    assert not (tmp_path / "demo").exists()
