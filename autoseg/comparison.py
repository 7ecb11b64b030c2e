"""Paired multi-seed comparison of PEFT methods: the protocol behind ``compare``.

Every method is fitted once per seed with the same budget. A seed fixes the validation split
and the data order, so the runs of one seed are paired: the methods saw the same images in
the same order, and only the method differs. Scores are the test metric of ``evaluate``; the
leaderboard gives each method's mean and standard deviation over seeds and its paired
difference from the best method with a paired t interval
(:func:`autoseg.metrics.paired.paired_difference`).

The facade hands over a ``make(method, seed, path)`` function that returns an unfitted
predictor, so this module never imports the facade.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from autoseg.arguments import check_time_limit
from autoseg.atomic import atomic_write, atomic_write_text
from autoseg.data.sources import load_table
from autoseg.data.table import validate_table
from autoseg.errors import OutputExistsError, SettingsError
from autoseg.metrics import HIGHER_IS_BETTER
from autoseg.metrics.paired import paired_difference
from autoseg.peft.registry import peft_method_names
from autoseg.persistence import is_nonempty_dir


class Fittable(Protocol):
    """What ``compare`` needs of a predictor (``SemanticSegmentor`` is one)."""

    def fit(self, train_data: Any, time_limit: float | None = None) -> Any: ...  # noqa: D102
    def evaluate(self, data: Any) -> dict[str, float]: ...  # noqa: D102
    def summary(self) -> dict[str, Any]: ...  # noqa: D102


MakePredictor = Callable[[str, int, Path], Fittable]


@dataclass(frozen=True)
class ComparisonPlan:
    """What to fit: methods, seeds and the budget of every fit.

    Example:
        >>> plan = plan_comparison(["lora", "decoder_only"], seeds=2, max_steps=50)
        >>> plan.seeds, plan.runs
        ((0, 1), 4)

    """

    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    max_steps: int | None = None
    time_limit: float | None = None

    @property
    def runs(self) -> int:
        """How many fits the comparison makes."""
        return len(self.methods) * len(self.seeds)

    def hyperparameters(self, method: str) -> dict[str, Any]:
        """The settings one fit adds to the user's: its method and the step budget."""
        settings: dict[str, Any] = {"peft.method": method}
        if self.max_steps is not None:
            # The step budget binds, not the preset's epochs.
            settings |= {"optim.max_steps": self.max_steps, "optim.max_epochs": 100_000}
        return settings


def plan_comparison(
    methods: Sequence[str],
    seeds: int | Sequence[int] = 3,
    max_steps: int | None = None,
    time_limit: float | None = None,
) -> ComparisonPlan:
    """Check the arguments of a comparison before any fit starts.

    Raises:
        SettingsError: an unknown or repeated method, fewer than two methods, no seed, a
            step budget below 1 or a bad time limit.

    """
    known = peft_method_names()
    unknown = [m for m in methods if m not in known]
    if unknown or len(set(methods)) != len(methods) or len(methods) < 2:
        raise SettingsError(
            f"methods={list(methods)!r}: give two or more different methods of {list(known)}"
            + (f" ({', '.join(map(repr, unknown))} unknown)." if unknown else ".")
        )
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    if not seed_list or not all(isinstance(s, int) and s >= 0 for s in seed_list):
        raise SettingsError(f"seeds={seeds!r}: give a count >= 1 or a list of seeds >= 0.")
    if max_steps is not None and (not isinstance(max_steps, int) or max_steps < 1):
        raise SettingsError(f"max_steps={max_steps!r}: give optimiser steps >= 1, or None.")
    check_time_limit(time_limit)
    return ComparisonPlan(tuple(methods), tuple(seed_list), max_steps, time_limit)


def check_output_folder(out: Path) -> None:
    """Refuse a folder that already holds files, before any fit."""
    if out.exists() and (not out.is_dir() or is_nonempty_dir(out)):
        raise OutputExistsError(
            f"{out} already exists and is not an empty folder; compare writes its fits and "
            "tables into a new folder. Pass out= a new folder."
        )


def run_comparison(
    plan: ComparisonPlan,
    make: MakePredictor,
    train: Any,
    test: Any,
    out: Path,
    say: Callable[[str], None] = print,
) -> pd.DataFrame:
    """Fit and score every (seed, method); one row per run, in the order they ran."""
    rows = []
    for seed in plan.seeds:
        for method in plan.methods:
            predictor = make(method, seed, out / "models" / f"{method}_seed{seed}")
            start = time.perf_counter()
            predictor.fit(train, time_limit=plan.time_limit)
            fit_seconds = time.perf_counter() - start
            metrics = predictor.evaluate(test)
            summary = predictor.summary()
            metric = summary["eval_metric"]
            rows.append(
                {
                    "method": method,
                    "seed": seed,
                    "metric": metric,
                    "score": float(metrics[metric]),
                    "steps": summary.get("steps"),
                    "fit_time_s": round(fit_seconds, 1),
                    "trainable_parameters": summary.get("trainable_parameters"),
                    f"best_val_{metric}": summary.get(f"best_val_{metric}"),
                    **{f"test_{k}": float(v) for k, v in metrics.items()},
                }
            )
            say(f"autoseg compare: {method} seed {seed}: test {metric} {metrics[metric]:.4f}")
    return pd.DataFrame(rows)


def _scores(runs: pd.DataFrame, method: str) -> pd.Series:
    return runs[runs["method"] == method].set_index("seed")["score"].sort_index()


def leaderboard(runs: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Per method: mean ± std over seeds and the paired difference from the best method."""
    metric = str(runs["metric"].iloc[0])
    higher = HIGHER_IS_BETTER.get(metric, True)
    means = runs.groupby("method")["score"].mean()
    best = str(means.idxmax() if higher else means.idxmin())
    rows = []
    for method, group in runs.groupby("method", sort=False):
        scores, best_scores = _scores(runs, method), _scores(runs, best)
        seeds = scores.index.intersection(best_scores.index)
        diff = paired_difference(scores[seeds].tolist(), best_scores[seeds].tolist(), confidence)
        rows.append(
            {
                "method": method,
                f"{metric}_mean": float(scores.mean()),
                f"{metric}_std": float(scores.std(ddof=1)) if len(scores) > 1 else math.nan,
                "seeds": len(scores),
                "diff_vs_best": diff.mean,
                "diff_low": diff.low,
                "diff_high": diff.high,
                "steps": float(group["steps"].mean()),
                "fit_time_s": float(group["fit_time_s"].mean()),
                "trainable_parameters": int(group["trainable_parameters"].iloc[0]),
            }
        )
    board = pd.DataFrame(rows).sort_values(f"{metric}_mean", ascending=not higher)
    return board.reset_index(drop=True)


def _bar_chart(board: pd.DataFrame, metric: str, path: Path) -> None:
    from matplotlib.figure import Figure  # off-screen, leaves the user's backend alone

    fig = Figure(figsize=(1.2 * len(board) + 2, 3.5))
    ax = fig.subplots()
    errors = board[f"{metric}_std"].fillna(0.0)
    ax.bar(board["method"], board[f"{metric}_mean"], yerr=errors, capsize=4, color="#4363d8")
    ax.set(ylabel=f"test {metric} (mean ± std over seeds)", title="autoseg compare")
    ax.tick_params(axis="x", labelrotation=30)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))


def write_comparison(out: Path, runs: pd.DataFrame, board: pd.DataFrame) -> None:
    """``runs.csv``, ``leaderboard.csv`` and ``leaderboard.png`` in ``out``, each atomic."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "runs.csv", runs.to_csv(index=False))
    atomic_write_text(out / "leaderboard.csv", board.to_csv(index=False))
    _bar_chart(board, str(runs["metric"].iloc[0]), out / "leaderboard.png")


def compare_methods(
    make: MakePredictor,
    train: Any,
    test: Any,
    plan: ComparisonPlan,
    out: Path,
    say: Callable[[str], None] = print,
    columns: tuple[str, str] = ("image", "label"),
) -> pd.DataFrame:
    """Run the comparison, write its tables and chart into ``out``; return the leaderboard.

    The output folder and every test row (``columns``: image and label column names) are
    checked first: a bad test file fails now, not after the first fit.
    """
    check_output_folder(out)
    validate_table(load_table(test, *columns, require_labels=True), require_labels=True)
    say(
        f"autoseg compare: {plan.runs} fits ({len(plan.methods)} methods x {len(plan.seeds)} seeds)"
    )
    runs = run_comparison(plan, make, train, test, out, say)
    board = leaderboard(runs)
    write_comparison(out, runs, board)
    return board
