"""LiteMedSAM Conv-LoRA training-step time with and without the frozen-prefix cache.

Builds the model (random weights; ``--pretrained`` for the real checkpoint), draws
``--images`` random images and their left-right flips (the default augmentation's two
variants), and runs one warm epoch with the cache on so that every variant is stored. Then,
``--repeats`` times, it times one epoch without the cache and one with it, alternating (the
installed cache is detached and re-attached, so its entries survive). It also profiles,
under ``no_grad``, the prefix's share of the encoder's forward time (alternating too).

Example:
    .venv/bin/python benchmarks/bench_prefix_cache.py --images 2 --repeats 2 --threads 2

"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

import _common


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="lite", choices=("lite", "lite_tiny"))
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--images", type=int, default=2, help="distinct images (x2 flips)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--pretrained", action="store_true")
    _common.add_run_options(parser, "variant")
    args = parser.parse_args(argv)
    if args.device == "cuda":
        parser.error("this benchmark times the CPU only (the prefix cache's target)")
    return args


def _epoch(step: Any, batches: list) -> list[float]:
    times = []
    for images, target in batches:
        start = time.perf_counter()
        step(images, target)
        times.append(time.perf_counter() - start)
    return times


def _prefix_share(encoder: Any, normalized: Any, repeats: int) -> dict[str, float]:
    import torch

    prefix, whole = [], []
    with torch.no_grad():
        for _ in range(repeats + 1):  # the first round warms up
            start = time.perf_counter()
            encoder.forward_prefix(normalized)
            prefix.append(time.perf_counter() - start)
            start = time.perf_counter()
            encoder(normalized)
            whole.append(time.perf_counter() - start)
    p, w = statistics.median(prefix[1:]), statistics.median(whole[1:])
    return {"prefix_forward_s": p, "encoder_forward_s": w, "prefix_share": p / w}


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from autoseg.builder import build_model
    from autoseg.config import Config
    from autoseg.models.prefix_cache import enable_prefix_cache
    from autoseg.peft import balance_loss_weight
    from autoseg.training.step import make_optimizer, train_step

    threads = _common.set_threads(args.threads)
    dtype = _common.autocast_dtype(args.precision)
    config = Config().with_overrides(
        {"model.backbone": args.backbone, "data.image_size": args.image_size}
    )
    model, _ = build_model(config, 1, pretrained=args.pretrained)
    _common.prepare_like_a_run(model.train(), "cpu")
    optimizer = make_optimizer(model, config.optim)
    weight = balance_loss_weight(config.peft)
    generator = torch.Generator().manual_seed(0)
    size = args.image_size
    images = torch.randint(0, 256, (args.images, 3, size, size), generator=generator).float()
    images = torch.cat([images, images.flip(-1)])
    targets = (images[:, 0] > 127).long()
    batches = [
        (images[i : i + args.batch_size], targets[i : i + args.batch_size])
        for i in range(0, len(images), args.batch_size)
    ]

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        train_step(model, optimizer, x, y, config.loss, config.optim, weight, dtype)

    encoder = model.image_encoder
    cache = enable_prefix_cache(model)
    _common.log("warm epoch (fills the cache)")
    _epoch(step, batches)
    times: dict[str, list[float]] = {"off": [], "on": []}
    for repeat in range(args.repeats):
        for variant in ("off", "on"):
            if variant == "off":
                encoder.__dict__.pop("prefix_cache")
            else:
                encoder.__dict__["prefix_cache"] = cache
            times[variant] += _epoch(step, batches)
            _common.log(f"repeat {repeat} cache {variant}: {times[variant][-len(batches) :]}")
    normalized = model.normalize(images[: args.batch_size])
    encoder.__dict__.pop("prefix_cache")
    off, on = statistics.median(times["off"]), statistics.median(times["on"])
    return {
        "threads": threads,
        "step_s": {k: _common.summarize_times(v) for k, v in times.items()},
        "step_times_s": times,
        "speedup_on_over_off": off / on,
        "profile": _prefix_share(encoder, normalized, args.repeats),
        "cache": {"entries": len(cache), "bytes": cache.stored_bytes, "hits": cache.hits},
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "isolate")}
    payload = _common.envelope("prefix_cache", settings, sys.argv)
    payload["result"] = run(args)
    path = _common.write_result(args.out, "prefix_cache", payload)
    _common.log(f"wrote {_common.repo_relative(path)}")


if __name__ == "__main__":
    main()
