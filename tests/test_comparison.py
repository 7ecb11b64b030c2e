"""The paired multi-seed comparison: plan checks, pairing, statistics, leaderboard and files."""

from __future__ import annotations

import math
import warnings

import pandas as pd
import pytest
from _tiny import TINY

from autoseg import SemanticSegmentor
from autoseg.comparison import (
    ComparisonPlan,
    compare_methods,
    leaderboard,
    plan_comparison,
    run_comparison,
)
from autoseg.data.findings import DataValidationError
from autoseg.data.synthetic import make_synthetic_binary
from autoseg.errors import OutputExistsError, SettingsError
from autoseg.metrics.paired import paired_difference

T_975_DF2 = 4.302652729911275  # Student t quantile, 97.5 %, 2 degrees of freedom (tables)


def test_paired_interval_matches_the_t_table():
    d = paired_difference([0.82, 0.83, 0.81], [0.80, 0.80, 0.80])
    half = T_975_DF2 * 0.01 / math.sqrt(3)
    assert d.mean == pytest.approx(0.02) and d.pairs == 3
    assert (d.low, d.high) == pytest.approx((0.02 - half, 0.02 + half))
    assert not d.significant and d.describe() == "+0.020 [-0.005, +0.045]"  # three seeds: wide


def test_one_pair_has_no_interval_and_equal_differences_a_point():
    assert math.isnan(paired_difference([0.9], [0.8]).low)
    same = paired_difference([0.9, 0.8], [0.8, 0.7])
    assert same.low == same.high == same.mean == pytest.approx(0.1) and same.significant
    with pytest.raises(ValueError, match="equal"):
        paired_difference([0.9, 0.8], [0.8])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"methods": ["lora"]}, "two or more"),
        ({"methods": ["lora", "lora"]}, "two or more"),
        ({"methods": ["lora", "bogus"]}, "'bogus' unknown"),
        ({"methods": ["lora", "decoder_only"], "seeds": 0}, "seeds"),
        ({"methods": ["lora", "decoder_only"], "seeds": [-1]}, "seeds"),
        ({"methods": ["lora", "decoder_only"], "max_steps": 0}, "max_steps"),
        ({"methods": ["lora", "decoder_only"], "time_limit": -5}, "time_limit"),
    ],
)
def test_plan_refuses_bad_arguments(kwargs, match):
    with pytest.raises(SettingsError, match=match):
        plan_comparison(**kwargs)


class FakePredictor:
    """Scores fixed per (method, seed), so pairing and the statistics can be checked."""

    SCORES = {"a": [0.80, 0.82, 0.84], "b": [0.70, 0.71, 0.75]}

    def __init__(self, method, seed, calls):
        self.method, self.seed = method, seed
        calls.append((method, seed))

    def fit(self, train_data, time_limit=None):
        return self

    def evaluate(self, data):
        return {"iou": self.SCORES[self.method][self.seed], "dice": 0.5}

    def summary(self):
        return {"eval_metric": "iou", "steps": 10, "trainable_parameters": 7}


def test_runs_are_paired_by_seed_and_the_leaderboard_ranks_them(tmp_path):
    calls = []
    plan = ComparisonPlan(("b", "a"), (0, 1, 2))
    runs = run_comparison(
        plan, lambda m, s, p: FakePredictor(m, s, calls), "train", "test", tmp_path, say=str
    )
    assert calls == [("b", 0), ("a", 0), ("b", 1), ("a", 1), ("b", 2), ("a", 2)]
    board = leaderboard(runs)
    assert board["method"].tolist() == ["a", "b"]
    assert board.loc[0, "diff_vs_best"] == 0.0
    diff = paired_difference(FakePredictor.SCORES["b"], FakePredictor.SCORES["a"])
    assert board.loc[1, ["diff_vs_best", "diff_low", "diff_high"]].tolist() == pytest.approx(
        [diff.mean, diff.low, diff.high]
    )
    assert board.loc[1, "iou_std"] == pytest.approx(pd.Series([0.70, 0.71, 0.75]).std())


def test_errors_come_before_any_fit(tmp_path):
    def make(*_):
        raise AssertionError("no fit may start")

    plan = plan_comparison(["lora", "decoder_only"], seeds=1)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("keep")
    with pytest.raises(OutputExistsError, match="not an empty folder"):
        compare_methods(make, "train.csv", "test.csv", plan, tmp_path / "busy", say=str)
    assert (tmp_path / "busy" / "mine.txt").read_text() == "keep"
    bad = tmp_path / "test.csv"
    bad.write_text("image,label\nmissing.png,missing_mask.png\n")
    with pytest.raises(DataValidationError, match="missing.png"):
        compare_methods(make, "train.csv", bad, plan, tmp_path / "new", say=str)


@pytest.mark.slow
def test_compare_fits_tiny_models_and_writes_its_tables(tmp_path):
    train, test = make_synthetic_binary(tmp_path / "d", n_images=12, size=(40, 56), split_test=3)
    plan = plan_comparison(["lora", "decoder_only"], seeds=2, max_steps=2)

    def make(method, seed, path):
        hyperparameters = {**TINY, **plan.hyperparameters(method)}
        return SemanticSegmentor(hyperparameters=hyperparameters, path=path, seed=seed, verbosity=0)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        board = compare_methods(make, train, test, plan, tmp_path / "cmp", say=str)
    assert set(board["method"]) == {"lora", "decoder_only"} and (board["seeds"] == 2).all()
    assert (board["steps"] == 2).all()
    for name in ("runs.csv", "leaderboard.csv", "leaderboard.png"):
        assert (tmp_path / "cmp" / name).stat().st_size > 0
    runs = pd.read_csv(tmp_path / "cmp" / "runs.csv")
    assert len(runs) == 4 and set(runs["seed"]) == {0, 1}


@pytest.mark.slow
def test_cli_compare_prints_the_leaderboard(tmp_path, capsys):
    from _tiny import as_cli_settings

    from autoseg.cli import main

    train, test = make_synthetic_binary(tmp_path / "d", n_images=10, size=(40, 56), split_test=3)
    args = ["-v", "0", "compare", "--train", str(train), "--test", str(test)]
    args += ["--methods", "lora", "decoder_only", "--seeds", "1", "--budget", "1"]
    args += ["--preset", "cpu_lite", "--out", str(tmp_path / "cmp")]
    for item in as_cli_settings(TINY):
        args += ["--set", item]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(args) == 0
    printed = capsys.readouterr().out
    assert "iou_mean" in printed and "lora" in printed and "decoder_only" in printed
    assert (tmp_path / "cmp" / "leaderboard.csv").is_file()
    assert main([*args[:-2], "--out", str(tmp_path / "cmp")]) == 2  # never into a full folder
