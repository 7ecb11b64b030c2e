"""Does ``env.compile`` pay? Eager against ``torch.compile``d encoder, compile time counted.

Two copies of the same model (same random weights) are built in one process; one has its
image encoder compiled the way a fit does it (``Runtime.prepare``). Their training steps
(``autoseg.training.step``, as a fit runs them) alternate, so machine load hits both alike.
The first compiled step includes the compilation. The JSON gives both medians after
warm-up, the compile overhead (first compiled step minus the eager median) and the
break-even: how many steps a fit must run before compiling has paid for itself (``null``
when the compiled step is not faster).

Example:
    .venv/bin/python benchmarks/bench_compile.py --backbone lite --image-size 256 --steps 6

"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

import _common
import bench_train


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="lite", choices=bench_train.BACKBONE_CHOICES)
    parser.add_argument("--method", default="conv_lora")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--steps", type=int, default=6, help="measured steps of each")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured steps of each first")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=_common.RESULTS_DIR)
    return parser.parse_args(argv)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Alternate eager and compiled steps; return both step-time lists."""
    import torch

    from autoseg.builder import build_model
    from autoseg.runtime import Runtime
    from autoseg.training.step import make_optimizer

    threads = _common.set_threads(args.threads)
    config = bench_train.method_config(args.backbone, args.method, args.image_size, 1e-4, {})
    images, target = bench_train.random_batch(args.batch_size, args.image_size, args.seed, "cpu")
    runs = {}
    for name, compiled in (("eager", False), ("compiled", True)):
        torch.manual_seed(args.seed)
        model = build_model(config, 1, pretrained=False)[0].train()
        Runtime("cpu", "32-true", num_threads=threads, compile=compiled).prepare(model)
        runs[name] = (model, make_optimizer(model, config.optim), [])
    for i in range(args.warmup + args.steps):
        for name, (model, optimizer, times) in runs.items():
            times.append(
                bench_train._train_step(model, optimizer, images, target, config, None, "cpu")
            )
            _common.log(f"  {name}: step {i + 1}: {times[-1]:.3f} s")
    return {"threads": threads, "times": {name: run[2] for name, run in runs.items()}}


def summarize(times: dict[str, list[float]], warmup: int) -> dict[str, Any]:
    """Medians after warm-up, the compile overhead and the break-even step count."""
    eager = statistics.median(times["eager"][warmup:])
    compiled = statistics.median(times["compiled"][warmup:])
    overhead = times["compiled"][0] - eager
    saving = eager - compiled
    return {
        "eager_median_s": eager,
        "compiled_median_s": compiled,
        "compiled_over_eager": compiled / eager,
        "first_compiled_step_s": times["compiled"][0],
        "compile_overhead_s": overhead,
        "break_even_steps": overhead / saving if saving > 0 else None,
    }


def main(argv: list[str] | None = None) -> Path:
    """Measure, summarise and write ``compile_<backbone>_<size>_<timestamp>.json``."""
    args = parse_args(argv)
    settings = {k: v for k, v in vars(args).items() if k != "out"}
    result = _common.envelope("compile", settings, argv)
    measured = measure(args)
    result["results"] = {**measured, "summary": summarize(measured["times"], args.warmup)}
    _common.log(f"bench_compile: {result['results']['summary']}")
    path = _common.write_result(args.out, f"compile_{args.backbone}_{args.image_size}", result)
    print(path)
    return path


if __name__ == "__main__":
    main()
