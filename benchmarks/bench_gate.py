"""Conv-LoRA's gate factor, paired: ``straight_through`` against ``clean_prob`` on one data set.

For every seed, each factor is fitted with ``bench_accuracy.fit_and_score`` (Conv-LoRA, same
backbone, split, data order, learning rate and ``--max-steps`` budget; only
``peft.gate_factor`` differs), then scored on the test CSV. The factors' order alternates
from seed to seed, so machine load drifts hit both alike. The JSON holds every fit's best
validation score and test metrics, and per seed the difference (first factor minus second).
Choose on the validation score only.

Example:
    .venv/bin/python benchmarks/bench_gate.py --data ph2 --seeds 0 1 --max-steps 16

"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import _common
import bench_accuracy

FACTORS = ("straight_through", "clean_prob")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="ph2", help="data set under ../shared/data or a folder")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--factors", nargs=2, default=list(FACTORS), choices=FACTORS)
    parser.add_argument("--backbone", default="lite")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--max-steps", type=int, default=16, help="optimiser steps per fit")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--effective-batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = all cores)")
    parser.add_argument("--out", type=Path, default=_common.RESULTS_DIR)
    args = parser.parse_args(argv)
    if args.factors[0] == args.factors[1]:
        parser.error("--factors needs two different factors")
    return args


def accuracy_args(args: argparse.Namespace, seed: int, factor: str) -> argparse.Namespace:
    """The ``bench_accuracy`` arguments of one fit."""
    argv = [
        *("--data", args.data, "--methods", "conv_lora", "--backbone", args.backbone),
        *("--image-size", str(args.image_size), "--max-steps", str(args.max_steps)),
        *("--lr", str(args.lr), "--seed", str(seed), "--batch-size", str(args.batch_size)),
        *("--effective-batch-size", str(args.effective_batch_size), "--num-workers", "0"),
        *("--threads", str(args.threads), "--verbosity", "0"),
        *("--hp", f"peft.gate_factor={factor}"),
    ]
    return bench_accuracy.parse_args(argv)


def paired_summary(runs: list[dict[str, Any]], factors: list[str]) -> dict[str, Any]:
    """Per-factor means and the per-seed differences ``factors[0] - factors[1]``."""
    by_seed: dict[int, dict[str, dict[str, Any]]] = {}
    for run in runs:
        by_seed.setdefault(run["seed"], {})[run["gate_factor"]] = run
    first, second = factors
    val_diff = [pair[first]["val"] - pair[second]["val"] for pair in by_seed.values()]
    test_diff = [
        pair[first]["test_score"] - pair[second]["test_score"] for pair in by_seed.values()
    ]
    means = {
        factor: {
            "val": statistics.fmean(pair[factor]["val"] for pair in by_seed.values()),
            "test_score": statistics.fmean(pair[factor]["test_score"] for pair in by_seed.values()),
        }
        for factor in factors
    }
    return {
        "means": means,
        "difference": f"{first} - {second}",
        "val_differences": val_diff,
        "test_score_differences": test_diff,
        "mean_val_difference": statistics.fmean(val_diff),
        "mean_test_score_difference": statistics.fmean(test_diff),
        "chosen_on_val": _choice(statistics.fmean(val_diff), first, second),
    }


def _choice(mean_difference: float, first: str, second: str) -> str:
    if mean_difference == 0:
        return "tie"
    return first if mean_difference > 0 else second


def main(argv: list[str] | None = None) -> Path:
    """Fit both factors for every seed; write ``gate_<data>_<timestamp>.json``."""
    args = parse_args(argv)
    first = accuracy_args(args, args.seeds[0], args.factors[0])
    train, test, name = bench_accuracy.resolve_data(first)
    settings = {
        "data": name,
        "train_csv": _common.repo_relative(train),
        "test_csv": _common.repo_relative(test),
        "hyperparameters": bench_accuracy.hyperparameters(first, "conv_lora"),
        **{key: value for key, value in vars(args).items() if key != "out"},
    }
    command = [Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)]
    result = _common.envelope("gate", settings, command)
    runs = []
    with tempfile.TemporaryDirectory(prefix="autoseg_bench_gate_") as tmp:
        for i, seed in enumerate(args.seeds):
            order = args.factors if i % 2 == 0 else args.factors[::-1]
            for factor in order:
                _common.log(f"bench_gate: {name} seed {seed}: fitting gate_factor={factor}")
                fit_args = accuracy_args(args, seed, factor)
                folder = Path(tmp) / f"{name}_{seed}_{factor}"
                record = bench_accuracy.fit_and_score(
                    fit_args, "conv_lora", seed, train, test, folder
                )
                run = {
                    "seed": seed,
                    "gate_factor": factor,
                    "val": record["best_val_score"],
                    "test_score": record["metrics"][record["eval_metric"]],
                    **record,
                }
                runs.append(run)
                _common.log(
                    f"  val {run['val']:.4f} test {run['eval_metric']} {run['test_score']:.4f}"
                )
    result["results"] = runs
    result["summary"] = paired_summary(runs, list(args.factors))
    _common.log(f"bench_gate: {result['summary']}")
    path = _common.write_result(args.out, f"gate_{name}", result)
    print(path)
    return path


if __name__ == "__main__":
    main()
