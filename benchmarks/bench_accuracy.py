"""Accuracy of conv_lora vs lora vs decoder_only on one data set, at the same budget.

Each method is fitted with ``SemanticSegmentor.fit`` on the training CSV (a seeded 10% held
out for validation, as always) with the same backbone, input size, seed, learning rate and
budget (``--max-steps`` optimiser steps and/or ``--time-limit`` seconds per method), then
scored on the test CSV with ``SemanticSegmentor.evaluate``. All metrics, fit time, steps,
epochs and the best validation score go into one JSON.

Example:
    .venv/bin/python benchmarks/bench_accuracy.py --data ph2 --lr 3e-4 --max-steps 64 --threads 1

"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common

SHARED_DATA = _common.REPO_ROOT.parent / "shared" / "data"
UNBOUNDED_EPOCHS = 100_000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data",
        default="ph2",
        help=f"data set name under {SHARED_DATA} or a folder with train.csv and test.csv",
    )
    parser.add_argument("--train", type=Path, help="training CSV (overrides --data)")
    parser.add_argument("--test", type=Path, help="test CSV (overrides --data)")
    parser.add_argument("--name", help="name in the output file (default: the data set's)")
    parser.add_argument(
        "--methods",
        nargs="+",
        default=list(_common.DEFAULT_METHODS),
        choices=_common.method_choices(),
    )
    parser.add_argument("--backbone", default="lite")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--max-steps", type=int, default=None, help="optimiser steps per method")
    parser.add_argument(
        "--time-limit", type=float, default=None, help="seconds of fitting per method"
    )
    parser.add_argument(
        "--max-epochs",
        type=int,
        default=None,
        help="default: unbounded when a budget is given, else the preset's",
    )
    parser.add_argument(
        "--patience",
        type=int,
        default=None,
        help="early-stopping patience in epochs (default: the preset's)",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0],
        help="paired seeds: every method is fitted once per seed (same split, same data order)",
    )
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--effective-batch-size", type=int, default=None)
    parser.add_argument("--num-workers", type=int, default=None)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = all cores)")
    parser.add_argument("--preset", default="auto")
    parser.add_argument(
        "--hp",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra dotted hyperparameter, repeatable",
    )
    parser.add_argument("--keep", type=Path, help="keep the predictors in this folder")
    parser.add_argument("--verbosity", type=int, default=1)
    parser.add_argument("--out", type=Path, default=_common.RESULTS_DIR)
    args = parser.parse_args(argv)
    if (args.train is None) != (args.test is None):
        parser.error("give both --train and --test, or neither (then --data is used)")
    if args.max_steps is None and args.time_limit is None:
        _common.log("bench_accuracy: no --max-steps or --time-limit: the preset's epochs apply")
    return args


def resolve_data(args: argparse.Namespace) -> tuple[Path, Path, str]:
    """(train CSV, test CSV, name) from ``--train/--test`` or ``--data``."""
    if args.train is not None:
        return args.train, args.test, args.name or args.train.resolve().parent.name
    folder = Path(args.data)
    if not folder.is_dir():
        folder = SHARED_DATA / args.data
    train, test = folder / "train.csv", folder / "test.csv"
    if not (train.is_file() and test.is_file()):
        raise SystemExit(f"no train.csv and test.csv in {folder}")
    return train, test, args.name or folder.name


def hyperparameters(args: argparse.Namespace, method: str) -> dict[str, Any]:
    """The dotted overrides shared by every method, plus the method itself."""
    budgeted = args.max_steps is not None or args.time_limit is not None
    hp: dict[str, Any] = {
        "model.backbone": args.backbone,
        "data.image_size": args.image_size,
        "peft.method": method,
        "optim.lr": args.lr,
        "optim.max_steps": args.max_steps if args.max_steps is not None else -1,
    }
    epochs = args.max_epochs or (UNBOUNDED_EPOCHS if budgeted else None)
    optional = {
        "optim.max_epochs": epochs,
        "optim.patience": args.patience,
        "env.batch_size": args.batch_size,
        "env.effective_batch_size": args.effective_batch_size,
        "env.num_workers": args.num_workers,
        "env.num_threads": args.threads or None,
    }
    hp.update({k: v for k, v in optional.items() if v is not None})
    for item in args.hp:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--hp expects KEY=VALUE, got {item!r}")
        hp[key.strip()] = value.strip()
    return hp


def fit_and_score(
    args: argparse.Namespace, method: str, seed: int, train: Path, test: Path, folder: Path
) -> dict[str, Any]:
    """Fit one method, evaluate it on the test CSV and collect what it did."""
    from autoseg import SemanticSegmentor

    seg = SemanticSegmentor(
        presets=args.preset,
        path=folder,
        hyperparameters=hyperparameters(args, method),
        seed=seed,
        verbosity=args.verbosity,
    )
    start = time.perf_counter()
    seg.fit(train, time_limit=args.time_limit)
    wall_fit_s = time.perf_counter() - start
    start = time.perf_counter()
    metrics = seg.evaluate(test)
    eval_s = time.perf_counter() - start
    summary = seg.summary()
    best_key = f"best_val_{summary['eval_metric']}"
    record = {
        "method": method,
        "seed": seed,
        "metrics": {k: float(v) for k, v in metrics.items()},
        "eval_metric": summary["eval_metric"],
        "best_val_score": summary.get(best_key),
        "best_epoch": summary.get("best_epoch"),
        "epochs": summary.get("epochs"),
        "steps": summary.get("steps"),
        "fit_time_s": summary.get("fit_time_s"),
        "wall_fit_s": wall_fit_s,
        "eval_s": eval_s,
        "trainable_parameters": summary.get("trainable_parameters"),
        "warm_start": {
            key: summary[key]
            for key in ("warm_start_steps", "warm_start_variants", "warm_start_s")
            if key in summary
        },
        "total_parameters": summary.get("total_parameters"),
        "preset": summary["preset"],
        "problem_type": summary["problem_type"],
        "checkpoint": {
            **seg.backbone_,
            "checkpoint_path": _common.repo_relative(seg.backbone_.get("checkpoint_path")),
        },
        "config": seg.config_.flat(),
        "predictor": str(folder) if args.keep else None,
    }
    del seg
    gc.collect()
    return record


PAIRS = (("conv_lora", "lora"), ("lora", "decoder_only"))
"""The paper's ordering, one paired difference each."""


def comparison(runs: list[dict[str, Any]], methods: list[str]) -> dict[str, Any]:
    """The leaderboard (mean, std, paired difference from the best) and the paper's pairs."""
    import pandas as pd

    from autoseg.comparison import leaderboard
    from autoseg.metrics.paired import paired_difference

    table = pd.DataFrame(
        {
            "method": r["method"],
            "seed": r["seed"],
            "metric": r["eval_metric"],
            "score": r["metrics"][r["eval_metric"]],
            "steps": r["steps"],
            "fit_time_s": r["fit_time_s"],
            "trainable_parameters": r["trainable_parameters"],
        }
        for r in runs
    )
    paired = {}
    for a, b in PAIRS:
        if a in methods and b in methods:
            scores = {m: table[table["method"] == m].sort_values("seed")["score"] for m in (a, b)}
            diff = paired_difference(scores[a].tolist(), scores[b].tolist())
            paired[f"{a} - {b}"] = {
                "mean": diff.mean,
                "low": diff.low,
                "high": diff.high,
                "pairs": diff.pairs,
                "confidence": diff.confidence,
            }
    board = leaderboard(table) if len(methods) > 1 else table
    return {"leaderboard": board.to_dict(orient="records"), "paired": paired}


def _count_rows(csv: Path) -> int:
    with csv.open() as f:
        return max(0, sum(1 for line in f if line.strip()) - 1)


def main(argv: list[str] | None = None) -> Path:
    """Fit and score every method; write ``accuracy_<name>_<timestamp>.json``."""
    args = parse_args(argv)
    train, test, name = resolve_data(args)
    settings = {
        "data": name,
        "train_csv": _common.repo_relative(train),
        "test_csv": _common.repo_relative(test),
        "train_rows": _count_rows(train),
        "test_rows": _count_rows(test),
        "methods": args.methods,
        "backbone": args.backbone,
        "image_size": args.image_size,
        "max_steps": args.max_steps,
        "time_limit_s": args.time_limit,
        "seeds": args.seeds,
        "lr": args.lr,
        "preset": args.preset,
        "hyperparameters": hyperparameters(args, "<method>"),
    }
    command = [Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)]
    result = _common.envelope("accuracy", settings, command)
    runs = []
    with tempfile.TemporaryDirectory(prefix="autoseg_bench_accuracy_") as tmp:
        root = args.keep if args.keep is not None else Path(tmp)
        stamp = _common.timestamp()
        for seed in args.seeds:  # methods alternate within a seed: paired, same load
            for method in args.methods:
                _common.log(f"bench_accuracy: {name}: fitting {method} seed {seed}")
                folder = root / f"{name}_{method}_seed{seed}_{stamp}"
                run = fit_and_score(args, method, seed, train, test, folder)
                runs.append(run)
                _common.log(f"  {method} seed {seed}: {run['metrics']}")
    first = args.seeds[0]
    result["results"] = {run["method"]: run for run in runs if run["seed"] == first}
    result["runs"] = runs
    result["comparison"] = comparison(runs, args.methods)
    path = _common.write_result(args.out, f"accuracy_{name}", result)
    print(path)
    return path


if __name__ == "__main__":
    main()
