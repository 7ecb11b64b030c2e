"""Training step time on the CPU for each (data-loading workers, torch threads) pair.

One LiteMedSAM Conv-LoRA model (real weights) trains on real images (``--data``: a folder with
``train.csv``, PH2 by default) through autoseg's own data module, so each step includes
waiting for its batch. Every round visits all pairs of ``--workers`` x ``--threads`` in
turn (A B C ... A B C ...), so machine load hits them alike; a pair's first step in a
round (its loader starting, workers forking) is recorded apart and not in the median.
The spread (max / median) of the measured steps shows stalls.

Example:
    .venv/bin/python benchmarks/bench_threads.py --workers 0 1 2 --threads 1 2

"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path
from typing import Any

import _common

PH2 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ph2"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=PH2, help="folder with train.csv")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2, help="measured steps per pair and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--precision", default="bf16", choices=("fp32", "bf16"))
    parser.add_argument("--out", type=Path, default=_common.RESULTS_DIR)
    return parser.parse_args(argv)


def _loader(data: Path, size: int, batch: int, workers: int) -> Any:
    from autoseg.config import DataConfig
    from autoseg.data.datamodule import LoaderSettings, SegmentationDataModule
    from autoseg.data.prepare import prepare_training_data

    train, val, problem = prepare_training_data(data / "train.csv", seed=0)
    settings = LoaderSettings(batch_size=batch, num_workers=workers)
    module = SegmentationDataModule(train, val, problem, DataConfig(image_size=size), settings)
    module.setup("fit")
    return module.train_dataloader()


def run_pair(model: Any, optimizer: Any, config: Any, loader: Any, steps: int, dtype: Any) -> dict:
    """First step (loader start included) and ``steps`` measured steps of one pair."""
    from autoseg.peft import balance_loss_weight
    from autoseg.training.step import train_step

    weight = balance_loss_weight(config.peft)
    batches = iter(loader)
    times, loading = [], []
    for _ in range(steps + 1):
        start = time.perf_counter()
        batch = next(batches)
        loaded = time.perf_counter()
        train_step(
            model, optimizer, batch["image"], batch["mask"], config.loss, config.optim,
            weight, dtype, batch["resized_hw"],
        )  # fmt: skip
        times.append(time.perf_counter() - start)
        loading.append(loaded - start)
    del batches  # stops the workers
    return {"first_step_s": times[0], "step_times_s": times[1:], "load_times_s": loading[1:]}


def main(argv: list[str] | None = None) -> Path:
    """Measure every pair and write ``threads_lite_<size>_<timestamp>.json``."""
    import torch

    from autoseg.builder import build_model
    from autoseg.config import Config
    from autoseg.training.step import make_optimizer

    args = parse_args(argv)
    load_start = list(_load_average())
    config = Config().with_overrides({"model.backbone": "lite", "data.image_size": args.image_size})
    model, _ = build_model(config, 1, pretrained=True)
    _common.prepare_like_a_run(model.train(), "cpu")
    optimizer = make_optimizer(model, config.optim)
    dtype = _common.autocast_dtype(args.precision)
    pairs = list(itertools.product(args.workers, args.threads))
    runs: dict[str, list[dict]] = {f"workers{w}_threads{t}": [] for w, t in pairs}
    for round_ in range(args.rounds):
        for workers, threads in pairs:
            torch.set_num_threads(threads)
            loader = _loader(args.data, args.image_size, args.batch_size, workers)
            run = run_pair(model, optimizer, config, loader, args.steps, dtype)
            runs[f"workers{workers}_threads{threads}"].append(run)
            _common.log(f"round {round_}: workers {workers}, threads {threads}: {run}")
    summary = {}
    for name, repeats in runs.items():
        times = [t for run in repeats for t in run["step_times_s"]]
        stats = _common.summarize_times(times)
        loads = [t for run in repeats for t in run["load_times_s"]]
        summary[name] = {
            **stats,
            "spread_max_over_median": stats["max_s"] / stats["median_s"],
            "median_load_s": _common.summarize_times(loads)["median_s"],
            "first_steps_s": [run["first_step_s"] for run in repeats],
        }
    best = min(summary, key=lambda name: summary[name]["median_s"])
    settings = {key: (str(v) if isinstance(v, Path) else v) for key, v in vars(args).items()}
    settings["data"] = _common.repo_relative(args.data)
    settings["out"] = _common.repo_relative(args.out)
    command = [Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)]
    result = _common.envelope("threads", settings, command)
    result.update(load_average_start=load_start, load_average=list(_load_average()))
    result.update(runs=runs, summary=summary, best=best)
    path = _common.write_result(args.out, f"threads_lite_{args.image_size}", result)
    print(path)
    return path


def _load_average() -> tuple[float, ...]:
    import os

    return os.getloadavg() if hasattr(os, "getloadavg") else ()


if __name__ == "__main__":
    main()
