"""Attention kernels side by side: explicit (Meta's), SDPA with a rel-pos mask, augmented q/k.

Times one SAM ViT-B attention module (``qkv``, the attention, ``proj``;
:class:`autoseg.models.attention.FusedAttention` with each of its kernels) at two shapes:
the 1024-px global block (one 64 x 64 grid) and the windowed block at 1024 px (25 windows
of 14 x 14), forward (``no_grad``) and forward + backward (input and rel-pos tables
require grad, as in training), in fp32 and bf16 autocast. The kernels alternate within
one process, so machine load hits them alike; ratios are against ``explicit``. Peak memory
is the peak RSS growth of one pass, each in a fresh process (``--no-memory`` skips it).

``--lite`` adds LiteMedSAM training steps at 256 px (Conv-LoRA, random weights, the step
``bench_train.py`` times), alternating TinyViT's ``mask`` and ``explicit`` kernels.

Example:
    .venv/bin/python benchmarks/bench_attention.py --threads 2 --lite

"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import _common

KERNEL_CHOICES = ("explicit", "mask", "augmented")
# ViT-B (768 wide, 12 heads); (batch, height, width) of the token map one module sees.
SHAPES = {"global": ((1, 64, 64), 64), "window": ((25, 14, 14), 14)}
DIM, HEADS = 768, 12


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument(
        "--precision", nargs="+", default=["fp32", "bf16"], choices=("fp32", "bf16")
    )
    parser.add_argument("--kernel", nargs="+", default=list(KERNEL_CHOICES), choices=KERNEL_CHOICES)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per kernel")
    parser.add_argument("--memory", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--lite", action="store_true", help="also time LiteMedSAM steps")
    parser.add_argument("--lite-steps", type=int, default=3, help="measured steps per kernel")
    parser.add_argument("--seed", type=int, default=0)
    _common.add_run_options(parser, "memory measurement")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.lite_steps < 1:
        parser.error("--repeats and --lite-steps must be >= 1")
    return args


def _case(shape: str, seed: int) -> tuple[Any, Any]:
    """A ViT-B attention module with trained-like rel-pos tables, and its input map."""
    import torch

    from autoseg.models.attention import FusedAttention

    (batch, height, width), grid = SHAPES[shape]
    torch.manual_seed(seed)
    attn = FusedAttention(DIM, num_heads=HEADS, use_rel_pos=True, input_size=(grid, grid))
    with torch.no_grad():
        attn.rel_pos_h.normal_(std=0.1)
        attn.rel_pos_w.normal_(std=0.1)
    return attn, torch.randn(batch, height, width, DIM)


def _run_pass(attn: Any, x: Any, kernel: str, backward: bool, precision: str) -> float:
    """One forward (or forward + backward) pass; its wall-clock seconds."""
    import torch

    dtype = _common.autocast_dtype(precision)
    attn.kernel = kernel
    attn.zero_grad(set_to_none=True)
    x = x.detach().requires_grad_(backward)
    start = time.perf_counter()
    with torch.set_grad_enabled(backward), torch.autocast("cpu", dtype, enabled=dtype is not None):
        out = attn(x)
    if backward:
        out.float().square().mean().backward()
    return time.perf_counter() - start


def time_kernels(
    shape: str, kernels: list[str], precision: str, backward: bool, repeats: int, seed: int
) -> dict[str, Any]:
    """Alternate the kernels ``repeats`` rounds (after one warm-up round); medians, ratios."""
    attn, x = _case(shape, seed)
    times: dict[str, list[float]] = {k: [] for k in kernels}
    for round_ in range(repeats + 1):
        for kernel in kernels:
            seconds = _run_pass(attn, x, kernel, backward, precision)
            if round_:
                times[kernel].append(seconds)
    medians = {k: statistics.median(v) for k, v in times.items()}
    base = medians.get("explicit")
    return {
        "times_s": times,
        "median_s": medians,
        "over_explicit": {k: m / base for k, m in medians.items()} if base else None,
    }


def measure_memory(
    shape: str, kernel: str, precision: str, backward: bool, threads: int, seed: int
) -> dict[str, Any]:
    """Peak RSS growth of one pass; meant to run in a fresh process."""
    _common.set_threads(threads)
    attn, x = _case(shape, seed)
    with _common.track_peak_memory("cpu") as memory:
        _run_pass(attn, x, kernel, backward, precision)
    growth = memory["peak_bytes"] - memory["rss_at_start_bytes"]
    return {"peak_growth_bytes": growth, "peak_growth_mib": round(growth / 2**20, 1)}


def lite_steps(steps: int, precision: str, seed: int) -> dict[str, Any]:
    """LiteMedSAM 256-px Conv-LoRA training steps, alternating TinyViT's kernels."""
    import torch

    from autoseg.builder import build_model
    from autoseg.config import Config
    from autoseg.models.attention import set_attention_kernel
    from autoseg.training.step import make_optimizer, train_step

    config = Config().with_overrides({"model.backbone": "lite", "data.image_size": 256})
    model, _ = build_model(config, 1, pretrained=False)
    model.train()
    optimizer = make_optimizer(model, config.optim)
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(1, 3, 256, 256, generator=generator)
    target = (torch.rand(1, 256, 256, generator=generator) > 0.5).long()
    dtype = _common.autocast_dtype(precision)
    kernels = ("explicit", "mask")
    times: dict[str, list[float]] = {k: [] for k in kernels}
    for round_ in range(steps + 1):
        for kernel in kernels:
            set_attention_kernel(model, kernel)
            start = time.perf_counter()
            weight = config.peft.balance_weight
            train_step(model, optimizer, images, target, config.loss, config.optim, weight, dtype)
            if round_:
                times[kernel].append(time.perf_counter() - start)
            _common.log(f"  lite {precision} {kernel}: {time.perf_counter() - start:.2f} s")
    medians = {k: statistics.median(v) for k, v in times.items()}
    return {
        "times_s": times,
        "median_s": medians,
        "mask_over_explicit": medians["mask"] / medians["explicit"],
    }


def _timings(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for shape in args.shape:
        for precision in args.precision:
            for backward in (False, True):
                key = f"{shape}/{precision}/{'fwd_bwd' if backward else 'fwd'}"
                _common.log(f"bench_attention: timing {key}")
                out[key] = time_kernels(
                    shape, args.kernel, precision, backward, args.repeats, args.seed
                )
                _common.log(f"  {key}: {out[key]['over_explicit']}")
    return out


def _memories(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for shape in args.shape:
        for precision in args.precision:
            for backward in (False, True):
                key = f"{shape}/{precision}/{'fwd_bwd' if backward else 'fwd'}"
                out[key] = {}
                for kernel in args.kernel:
                    out[key][kernel] = _common.run_isolated(
                        measure_memory,
                        isolate=args.isolate,
                        shape=shape,
                        kernel=kernel,
                        precision=precision,
                        backward=backward,
                        threads=args.threads,
                        seed=args.seed,
                    )
                _common.log(f"  memory {key}: {out[key]}")
    return out


def main(argv: list[str] | None = None) -> Path:
    """Run the benchmark and write ``attention_<timestamp>.json``."""
    args = parse_args(argv)
    threads = _common.set_threads(args.threads)
    settings = {
        "shapes": {name: SHAPES[name] for name in args.shape},
        "dim": DIM,
        "heads": HEADS,
        "kernels": args.kernel,
        "precisions": args.precision,
        "repeats": args.repeats,
        "threads": threads,
        "device": "cpu",
        "memory": "peak RSS growth of one pass, fresh process each" if args.memory else None,
        "lite": {"steps": args.lite_steps, "method": "conv_lora", "size": 256}
        if args.lite
        else None,
        "seed": args.seed,
    }
    command = [Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)]
    result = _common.envelope("attention", settings, command)
    result["timings"] = _timings(args)
    if args.memory:
        result["memory"] = _memories(args)
    if args.lite:
        result["lite"] = {p: lite_steps(args.lite_steps, p, args.seed) for p in args.precision}
    path = _common.write_result(args.out, "attention", result)
    print(path)
    return path


if __name__ == "__main__":
    main()
