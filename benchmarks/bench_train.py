"""Training-step time and peak memory per PEFT method, on random weights and random data.

Each method runs in its own fresh process (so the CPU peak RSS belongs to it alone): build
the model with deterministic random weights (``build_model(config, 1, pretrained=False)``),
then run ``--warmup`` + ``--steps`` training steps exactly as a fit runs them
(``autoseg.training.step``: forward, task loss + 0.01 * balance loss, backward, gradient
clipping at 1.0, AdamW step) on one random batch and random binary target. Reports the
median step time after warm-up, every step time, peak memory and the trainable/total
parameter counts, plus the Conv-LoRA / LoRA step-time ratio.

Example:
    .venv/bin/python benchmarks/bench_train.py --backbone vit_b --image-size 512

"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import _common

if TYPE_CHECKING:
    import torch

BACKBONE_CHOICES = ("vit_b", "vit_l", "vit_h", "lite", "vit_tiny", "lite_tiny")
METHOD_CHOICES = ("conv_lora", "lora", "decoder_only")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="lite", choices=BACKBONE_CHOICES)
    parser.add_argument(
        "--method",
        nargs="+",
        default=list(METHOD_CHOICES),
        choices=METHOD_CHOICES,
        help="one or more PEFT methods (default: all three)",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="square model input side (default: the backbone's native size)",
    )
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5, help="measured steps")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured steps first")
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "bf16"),
        help="bf16 = torch.autocast(bfloat16) around forward and loss",
    )
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    _common.add_run_options(parser, "method")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.batch_size < 1:
        parser.error("--steps and --batch-size must be >= 1 and --warmup >= 0")
    return args


def _train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    target: torch.Tensor,
    config: Any,
    dtype: torch.dtype | None,
    device: str,
) -> float:
    """One optimiser step as a fit runs it; returns its wall-clock seconds (GPU synchronised)."""
    from autoseg.peft import balance_loss_weight
    from autoseg.training.step import train_step

    _common.synchronize(device)
    start = time.perf_counter()
    weight = balance_loss_weight(config.peft)
    train_step(model, optimizer, images, target, config.loss, config.optim, weight, dtype)
    _common.synchronize(device)
    return time.perf_counter() - start


def measure_method(
    backbone: str,
    method: str,
    image_size: int,
    batch_size: int,
    steps: int,
    warmup: int,
    device: str,
    precision: str,
    threads: int,
    lr: float,
    seed: int,
) -> dict[str, Any]:
    """Build one model and time its training steps; meant to run in a fresh process."""
    import torch

    from autoseg.builder import build_model
    from autoseg.config import Config
    from autoseg.peft import adapter_parameter_counts
    from autoseg.training.step import make_optimizer

    used_threads = _common.set_threads(threads)
    dtype = _common.autocast_dtype(precision)
    config = Config().with_overrides(
        {
            "model.backbone": backbone,
            "peft.method": method,
            "data.image_size": image_size,
            "optim.lr": lr,
        }
    )
    with _common.track_peak_memory(device) as memory:
        start = time.perf_counter()
        model, _ = build_model(config, 1, pretrained=False)
        model.to(device).train()
        build_s = time.perf_counter() - start
        optimizer = make_optimizer(model, config.optim)
        generator = torch.Generator().manual_seed(seed)
        shape = (batch_size, 3, image_size, image_size)
        images = (torch.rand(shape, generator=generator) * 255).round().to(device)  # pixels
        target = torch.rand(shape[:1] + shape[2:], generator=generator) > 0.5
        target = target.long().to(device)
        times = []
        for i in range(warmup + steps):
            times.append(_train_step(model, optimizer, images, target, config, dtype, device))
            label = f"warm-up {i + 1}/{warmup}" if i < warmup else f"step {i - warmup + 1}/{steps}"
            _common.log(f"  {method}: {label}: {times[-1]:.3f} s")
    measured = times[warmup:]
    summary = _common.summarize_times(measured)
    return {
        "method": method,
        "threads": used_threads,
        "build_s": build_s,
        "warmup_times_s": times[:warmup],
        "step_times_s": measured,
        **{f"step_{k}": v for k, v in summary.items()},
        "images_per_s": batch_size / summary["median_s"],
        "memory": memory,
        "parameters": adapter_parameter_counts(model),
    }


def main(argv: list[str] | None = None) -> Path:
    """Run the benchmark and write ``train_<backbone>_<size>_<timestamp>.json``."""
    from autoseg.models.backbones import pretrained_weights

    args = parse_args(argv)
    device = _common.resolve_device(args.device)
    size = args.image_size or pretrained_weights(args.backbone).input_size
    settings = {
        "backbone": args.backbone,
        "methods": args.method,
        "image_size": size,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "warmup": args.warmup,
        "device": device,
        "precision": args.precision,
        "threads": args.threads,
        "lr": args.lr,
        "seed": args.seed,
        "isolated": args.isolate,
        "loss": "structure + 0.01 * balance; grad clip 1.0; AdamW(wd=1e-4)",
        "weights": "random (pretrained=False)",
    }
    command = [Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)]
    result = _common.envelope("train", settings, command)
    runs = {}
    for method in args.method:
        _common.log(f"bench_train: {args.backbone} {size} px, {method} on {device}")
        runs[method] = _common.run_isolated(
            measure_method,
            isolate=args.isolate,
            backbone=args.backbone,
            method=method,
            image_size=size,
            batch_size=args.batch_size,
            steps=args.steps,
            warmup=args.warmup,
            device=device,
            precision=args.precision,
            threads=args.threads,
            lr=args.lr,
            seed=args.seed,
        )
        _common.log(f"  {method}: median {runs[method]['step_median_s']:.3f} s/step")
    result["results"] = runs
    if "conv_lora" in runs and "lora" in runs:
        ratio = runs["conv_lora"]["step_median_s"] / runs["lora"]["step_median_s"]
        result["conv_lora_over_lora"] = ratio
        _common.log(f"bench_train: conv_lora / lora step time = {ratio:.3f}")
    path = _common.write_result(args.out, f"train_{args.backbone}_{size}", result)
    print(path)
    return path


if __name__ == "__main__":
    main()
