"""The memory model against measurement: CPU peak RSS growth of real fp32 training steps.

Each configuration runs in a fresh process: build the model (random weights) and one random
batch, take the resident set size as the baseline, reset the peak, then run ``--steps``
training steps exactly as a fit runs them (``autoseg.training.step.train_step``: forward,
structure loss + 0.01 * balance loss, backward, gradient clipping, AdamW step; the first
step creates AdamW's state, so from the second on a step holds everything the model
counts). The measured growth is the peak RSS minus that baseline. The estimate is
:func:`autoseg.models.memory.estimate_training_memory` for the CPU at fp32 with the same
loss, less its parameters (already resident in the baseline).

Example:
    .venv/bin/python benchmarks/bench_memory.py --threads 2

"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from pathlib import Path
from typing import Any

import _common

CONFIGS = (
    ("lite", 256, 2, False),
    ("lite", 256, 2, True),
    ("vit_b", 256, 2, False),
    ("vit_b", 512, 1, False),
    ("vit_b", 512, 1, True),
)
"""(backbone, image size, batch size, activation checkpointing) measured by default."""
TOLERANCE = 0.15
ALLOCATORS = {"glibc default": None, "mmap threshold 64 KiB": "65536"}
"""Allocator setting -> ``MALLOC_MMAP_THRESHOLD_`` for the measuring process."""
_THRESHOLD = "MALLOC_MMAP_THRESHOLD_"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--config",
        nargs="+",
        metavar="BACKBONE:SIZE:BATCH:CKPT",
        help="e.g. vit_b:512:1:1 (CKPT 1 = activation checkpointing); default: "
        + " ".join(f"{b}:{s}:{n}:{int(c)}" for b, s, n, c in CONFIGS),
    )
    parser.add_argument("--method", default="conv_lora")
    parser.add_argument("--steps", type=int, default=2, help="training steps per configuration")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=_common.RESULTS_DIR)
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error("--steps must be >= 2 (the first step creates the optimiser state)")
    return args


def _parse_config(text: str) -> tuple[str, int, int, bool]:
    backbone, size, batch, checkpointing = text.split(":")
    return backbone, int(size), int(batch), checkpointing in ("1", "true", "yes")


def measure(
    backbone: str,
    image_size: int,
    batch_size: int,
    checkpointing: bool,
    method: str,
    steps: int,
    threads: int,
) -> dict[str, Any]:
    """Peak RSS growth of ``steps`` fp32 training steps over the post-build baseline."""
    import torch

    from autoseg.builder import build_model
    from autoseg.config import Config
    from autoseg.peft import balance_loss_weight
    from autoseg.training.step import make_optimizer, train_step

    _common.set_threads(threads)
    _warm_code_pages(backbone)
    config = Config().with_overrides(
        {
            "model.backbone": backbone,
            "peft.method": method,
            "data.image_size": image_size,
            "env.activation_checkpointing": checkpointing,
        }
    )
    model, _ = build_model(config, 1, pretrained=False)
    _common.prepare_like_a_run(model.train(), "cpu")
    optimizer = make_optimizer(model, config.optim)
    generator = torch.Generator().manual_seed(0)
    shape = (batch_size, 3, image_size, image_size)
    images = (torch.rand(shape, generator=generator) * 255).round()
    target = (torch.rand(shape[:1] + shape[2:], generator=generator) > 0.5).long()
    weight = balance_loss_weight(config.peft)
    gc.collect()
    with _common.track_peak_memory("cpu") as memory:
        for _ in range(steps):
            train_step(model, optimizer, images, target, config.loss, config.optim, weight)
    memory["growth_bytes"] = memory["peak_rss_bytes"] - memory["rss_at_start_bytes"]
    return memory


def _warm_code_pages(backbone: str) -> None:
    """One training forward and backward of a tiny model of the same family, then freed."""
    import torch

    from autoseg.builder import build_model
    from autoseg.config import Config
    from autoseg.training.step import training_loss

    tiny = "vit_tiny" if backbone.startswith("vit") else "lite_tiny"
    config = Config().with_overrides({"model.backbone": tiny, "data.image_size": 64})
    model, _ = build_model(config, 1, pretrained=False)
    model.train()
    images = torch.rand(2, 3, 64, 64) * 255
    total, _, _ = training_loss(
        model, images, torch.zeros(2, 64, 64, dtype=torch.long), config.loss, 0.01
    )
    total.backward()
    del model, total
    gc.collect()


def measure_with_allocator(threshold: str | None, **kwargs: Any) -> dict[str, Any]:
    """:func:`measure` in a fresh process whose glibc mmap threshold is ``threshold``."""
    previous = os.environ.pop(_THRESHOLD, None)
    if threshold is not None:
        os.environ[_THRESHOLD] = threshold  # a spawned process inherits the environment
    try:
        return _common.run_isolated(measure, **kwargs)
    finally:
        os.environ.pop(_THRESHOLD, None)
        if previous is not None:
            os.environ[_THRESHOLD] = previous


def estimate(
    backbone: str, image_size: int, batch_size: int, checkpointing: bool, method: str
) -> dict[str, Any]:
    """The model's CPU fp32 estimate, with the growth it predicts (all but the parameters)."""
    from autoseg.info import TRAINING_LOSS
    from autoseg.models.memory import estimate_training_memory

    est = estimate_training_memory(
        backbone,
        image_size,
        batch_size,
        precision="32-true",
        activation_checkpointing=checkpointing,
        method=method,
        device="cpu",
        loss=TRAINING_LOSS,
    )
    return {
        **est.breakdown(),
        "total_bytes": est.total_bytes,
        "growth_bytes": est.total_bytes - est.parameters_bytes,
    }


def main(argv: list[str] | None = None) -> Path:
    """Measure every configuration, compare with the estimate, write ``memory_<ts>.json``."""
    args = parse_args(argv)
    configs = [_parse_config(c) for c in args.config] if args.config else list(CONFIGS)
    settings = {
        "configs": [list(c) for c in configs],
        "method": args.method,
        "steps": args.steps,
        "threads": args.threads,
        "precision": "fp32",
        "device": "cpu",
        "loss": "structure + 0.01 * balance; grad clip 1.0; AdamW",
        "weights": "random (pretrained=False)",
        "tolerance": TOLERANCE,
    }
    command = [Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)]
    result = _common.envelope("memory", settings, command)
    rows = []
    for backbone, size, batch, checkpointing in configs:
        label = f"{backbone} {size} px, batch {batch}, checkpointing {checkpointing}"
        _common.log(f"bench_memory: {label}")
        predicted = estimate(backbone, size, batch, checkpointing, args.method)
        measured = {}
        for allocator, threshold in ALLOCATORS.items():
            measured[allocator] = measure_with_allocator(
                threshold,
                backbone=backbone,
                image_size=size,
                batch_size=batch,
                checkpointing=checkpointing,
                method=args.method,
                steps=args.steps,
                threads=args.threads,
            )
            growth = measured[allocator]["growth_bytes"]
            _common.log(f"  {allocator}: measured {growth / 2**20:.0f} MiB")
        ratios = {k: predicted["growth_bytes"] / m["growth_bytes"] for k, m in measured.items()}
        rows.append(
            {
                "backbone": backbone,
                "image_size": size,
                "batch_size": batch,
                "activation_checkpointing": checkpointing,
                "measured": measured,
                "estimate": predicted,
                "estimate_over_measured": ratios,
                "within_tolerance": {k: abs(r - 1.0) <= TOLERANCE for k, r in ratios.items()},
            }
        )
    result["results"] = rows
    print(markdown_table(rows))
    path = _common.write_result(args.out, "memory", result)
    print(path)
    return path


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The README table: the estimate against the measured growth, per configuration."""
    mib = 2**20
    names = list(ALLOCATORS)
    lines = [
        "| backbone | size | batch | checkpointing | estimated (MiB) | of which activations | "
        + " | ".join(f"measured, {name} (MiB) | estimate / measured" for name in names)
        + " |",
        "|---|---|---|---|---|---|" + "---|---|" * len(names),
    ]
    for row in rows:
        est = row["estimate"]
        cells = [
            f"{row['measured'][name]['growth_bytes'] / mib:,.0f} "
            f"| {row['estimate_over_measured'][name]:.2f}"
            for name in names
        ]
        lines.append(
            f"| {row['backbone']} | {row['image_size']} | {row['batch_size']} "
            f"| {'yes' if row['activation_checkpointing'] else 'no'} "
            f"| {est['growth_bytes'] / mib:,.0f} | {est['activations_bytes'] / mib:,.0f} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
