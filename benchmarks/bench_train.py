"""Training-step time and peak memory per PEFT method, on random weights and random data.

Each method runs in its own fresh process (so the CPU peak RSS belongs to it alone): build
the model with deterministic random weights (``build_model(config, 1, pretrained=False)``;
``--pretrained`` loads the real checkpoint, which changes values, not the step time), then
run ``--warmup`` + ``--steps`` training steps exactly as a fit runs them
(``autoseg.training.step``: forward, task loss + the method's ``peft.balance_weight`` times
its balance loss, backward, gradient clipping at 1.0, AdamW step) on one random batch and
random binary target. With ``--repeats R`` the method list runs R times in turn
(A B A B ...), so machine load hits every method alike; on a busy machine ``--interleave``
builds every method in one process and alternates single steps (its memory is then shared,
so no per-method peak is reported). Reports each run's median step
time after warm-up, every step time, peak memory and the trainable/total parameter counts,
plus the Conv-LoRA / LoRA step-time ratio (median over repeats of each method's median).

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

SHARED_MEMORY = {"kind": "shared", "peak_bytes": None}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="lite", choices=BACKBONE_CHOICES)
    parser.add_argument(
        "--method",
        nargs="+",
        default=list(_common.DEFAULT_METHODS),
        choices=_common.method_choices(),
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
    parser.add_argument("--repeats", type=int, default=1, help="runs of each method, alternated")
    parser.add_argument(
        "--pretrained", action="store_true", help="load the backbone's real checkpoint"
    )
    parser.add_argument(
        "--interleave", action="store_true", help="alternate single steps in one process"
    )
    parser.add_argument(
        "--hp",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra dotted hyperparameter for every method that has it, repeatable",
    )
    _common.add_run_options(parser, "method")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.batch_size < 1 or args.repeats < 1:
        parser.error("--steps, --batch-size and --repeats must be >= 1 and --warmup >= 0")
    try:
        args.overrides = dict(_split_override(item) for item in args.hp)
    except ValueError as err:
        parser.error(str(err))
    return args


def _split_override(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--hp expects KEY=VALUE, got {item!r}")
    return key.strip(), value.strip()


def method_config(
    backbone: str, method: str, image_size: int, lr: float, overrides: dict[str, str]
) -> Any:
    """The run's Config; ``peft.*`` overrides apply only to methods that have the setting."""
    from autoseg.config import Config
    from autoseg.peft import get_peft_method

    settings = get_peft_method(method).settings
    kept = {
        key: value
        for key, value in overrides.items()
        if not key.startswith("peft.") or key.removeprefix("peft.") in settings
    }
    base = {
        "model.backbone": backbone,
        "peft.method": method,
        "data.image_size": image_size,
        "optim.lr": lr,
    }
    return Config().with_overrides({**base, **kept})


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
    pretrained: bool = False,
    overrides: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Build one model and time its training steps; meant to run in a fresh process."""
    from autoseg.builder import build_model
    from autoseg.training.step import make_optimizer

    used_threads = _common.set_threads(threads)
    dtype = _common.autocast_dtype(precision)
    config = method_config(backbone, method, image_size, lr, overrides or {})
    with _common.track_peak_memory(device) as memory:
        start = time.perf_counter()
        model, _ = build_model(config, 1, pretrained=pretrained)
        _common.prepare_like_a_run(model.to(device).train(), device)
        build_s = time.perf_counter() - start
        optimizer = make_optimizer(model, config.optim)
        images, target = random_batch(batch_size, image_size, seed, device)
        times = []
        for i in range(warmup + steps):
            times.append(_train_step(model, optimizer, images, target, config, dtype, device))
            label = f"warm-up {i + 1}/{warmup}" if i < warmup else f"step {i - warmup + 1}/{steps}"
            _common.log(f"  {method}: {label}: {times[-1]:.3f} s")
    return run_record(method, config, model, times, warmup, batch_size, used_threads, memory) | {
        "build_s": build_s
    }


def random_batch(
    batch_size: int, image_size: int, seed: int, device: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded random pixel images (0..255) and a random binary target."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    shape = (batch_size, 3, image_size, image_size)
    images = (torch.rand(shape, generator=generator) * 255).round().to(device)
    target = torch.rand(shape[:1] + shape[2:], generator=generator) > 0.5
    return images, target.long().to(device)


def measure_interleaved(
    backbone: str,
    methods: list[str],
    image_size: int,
    batch_size: int,
    steps: int,
    warmup: int,
    device: str,
    precision: str,
    threads: int,
    lr: float,
    seed: int,
    pretrained: bool = False,
    overrides: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Build every method's model in this process and time them step by step, in turn."""
    from autoseg.builder import build_model
    from autoseg.training.step import make_optimizer

    used_threads = _common.set_threads(threads)
    dtype = _common.autocast_dtype(precision)
    images, target = random_batch(batch_size, image_size, seed, device)
    built = []
    for method in methods:
        config = method_config(backbone, method, image_size, lr, overrides or {})
        model = build_model(config, 1, pretrained=pretrained)[0].to(device).train()
        built.append((method, config, model, make_optimizer(model, config.optim), []))
    for i in range(warmup + steps):
        for method, config, model, optimizer, times in built:
            times.append(_train_step(model, optimizer, images, target, config, dtype, device))
            _common.log(f"  {method}: step {i + 1}/{warmup + steps}: {times[-1]:.3f} s")
    return [
        # One process holds every model: no peak memory belongs to one method.
        run_record(method, config, model, times, warmup, batch_size, used_threads, SHARED_MEMORY)
        for method, config, model, _, times in built
    ]


def run_record(
    method: str,
    config: Any,
    model: torch.nn.Module,
    times: list[float],
    warmup: int,
    batch_size: int,
    threads: int,
    memory: dict[str, Any],
) -> dict[str, Any]:
    """What one method's run reports."""
    from autoseg.peft import adapter_parameter_counts, balance_loss_weight

    measured = times[warmup:]
    summary = _common.summarize_times(measured)
    return {
        "method": method,
        "loss": f"{config.loss.binary} + {balance_loss_weight(config.peft):g} * balance",
        "peft": config.peft.to_dict(),
        "threads": threads,
        "warmup_times_s": times[:warmup],
        "step_times_s": measured,
        **{f"step_{k}": v for k, v in summary.items()},
        "images_per_s": batch_size / summary["median_s"],
        "memory": memory,
        "parameters": adapter_parameter_counts(model),
    }


def combine_repeats(repeats: list[dict[str, Any]]) -> dict[str, Any]:
    """One method's record over its repeats: the first run's fields, every step's time."""
    times = [t for run in repeats for t in run["step_times_s"]]
    summary = _common.summarize_times(times)
    batch = repeats[0]["images_per_s"] * repeats[0]["step_median_s"]
    return {
        **repeats[0],
        "step_times_s": times,
        **{f"step_{k}": v for k, v in summary.items()},
        "images_per_s": batch / summary["median_s"],
        "repeat_medians_s": [run["step_median_s"] for run in repeats],
        "repeat_peak_bytes": [run["memory"]["peak_bytes"] for run in repeats],
    }


def measure_all(
    args: argparse.Namespace, device: str, size: int
) -> dict[str, list[dict[str, Any]]]:
    """Every method's run records, ``--repeats`` each, alternated (or interleaved by step)."""
    repeats: dict[str, list[dict[str, Any]]] = {method: [] for method in args.method}
    common = {
        "backbone": args.backbone,
        "image_size": size,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "warmup": args.warmup,
        "device": device,
        "precision": args.precision,
        "threads": args.threads,
        "lr": args.lr,
        "seed": args.seed,
        "pretrained": args.pretrained,
        "overrides": args.overrides,
    }
    for repeat in range(args.repeats):
        where = f"{args.backbone} {size} px on {device}, repeat {repeat + 1}/{args.repeats}"
        if args.interleave:
            _common.log(f"bench_train: {where}: {' / '.join(args.method)} interleaved")
            runs = _common.run_isolated(
                measure_interleaved, isolate=args.isolate, methods=args.method, **common
            )
        else:
            runs = []
            for method in args.method:
                _common.log(f"bench_train: {where}: {method}")
                runs.append(
                    _common.run_isolated(
                        measure_method, isolate=args.isolate, method=method, **common
                    )
                )
        for run in runs:
            repeats[run["method"]].append(run)
            _common.log(f"  {run['method']}: median {run['step_median_s']:.3f} s/step")
    return repeats


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
        "repeats": args.repeats,
        "device": device,
        "precision": args.precision,
        "threads": args.threads,
        "lr": args.lr,
        "seed": args.seed,
        "isolated": args.isolate,
        "interleaved": args.interleave,
        "hyperparameters": args.overrides,
        "loss": "structure + peft.balance_weight * balance (see each run's 'loss'); "
        "grad clip 1.0; AdamW(wd=1e-4)",
        "weights": "pretrained checkpoint" if args.pretrained else "random (pretrained=False)",
    }
    command = [Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)]
    result = _common.envelope("train", settings, command)
    repeats = measure_all(args, device, size)
    runs = {method: combine_repeats(repeats[method]) for method in args.method}
    result["results"] = runs
    if "conv_lora" in runs and "lora" in runs:
        ratio = runs["conv_lora"]["step_median_s"] / runs["lora"]["step_median_s"]
        result["conv_lora_over_lora"] = ratio
        result["conv_lora_over_lora_per_repeat"] = [
            conv["step_median_s"] / lora["step_median_s"]
            for conv, lora in zip(repeats["conv_lora"], repeats["lora"], strict=True)
        ]
        _common.log(f"bench_train: conv_lora / lora step time = {ratio:.3f}")
    path = _common.write_result(args.out, f"train_{args.backbone}_{size}", result)
    print(path)
    return path


if __name__ == "__main__":
    main()
