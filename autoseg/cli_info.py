"""``autoseg info``: the trainable-parameter table, or GPU training-memory estimates."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from autoseg.errors import SettingsError


def run_info(args: argparse.Namespace) -> int:
    """Print the table ``args`` ask for; 0 when done."""
    from autoseg import info
    from autoseg.models.backbones import BACKBONES
    from autoseg.peft.apply import PEFT_METHODS

    backbones = args.backbone or ["vit_b", "vit_l", "vit_h"]
    methods = args.method or (["conv_lora"] if args.memory else list(PEFT_METHODS))
    for option, names, known in (
        ("--backbone", backbones, sorted(BACKBONES)),
        ("--method", methods, list(PEFT_METHODS)),
    ):
        unknown = [name for name in names if name not in known]
        if unknown:
            raise SettingsError(f"{option}: unknown {unknown}; choose from {known}.")
    if args.num_classes < 1:
        raise SettingsError(f"--num-classes must be >= 1 (1 = binary), got {args.num_classes}.")
    if not args.memory:
        print(info.parameter_table(backbones, methods, args.num_classes, args.image_size))
        return 0
    _check_memory_options(args, backbones)
    for method in methods:
        print(
            info.memory_table(
                backbones,
                method,
                args.image_size,
                args.batch_size,
                args.precision,
                args.num_classes,
            )  # fmt: skip
        )
    if args.presets:
        print(f"\nGPU presets on their smallest card (>= {info.HEADROOM:.0%} must stay free)")
        print(info.preset_memory_table())
    return 0


def _check_memory_options(args: argparse.Namespace, backbones: Sequence[str]) -> None:
    """Refuse sizes the memory view cannot estimate, before any model is built."""
    from autoseg.models.backbones import pretrained_weights

    if not args.batch_size or min(args.batch_size) < 1:
        raise SettingsError(f"--batch-size needs sizes >= 1, got {args.batch_size}.")
    size = args.image_size
    for backbone in backbones if size is not None else []:
        multiple = pretrained_weights(backbone).size_multiple
        if size <= 0 or size % multiple:
            raise SettingsError(
                f"--image-size {size}: {backbone} needs a positive multiple of {multiple}."
            )


def add_info_parser(sub: Any, debug: argparse.ArgumentParser) -> None:
    """``autoseg info``: parameter tables, or training-memory estimates."""
    info = sub.add_parser(
        "info",
        parents=[debug],
        help="trainable-parameter table, or GPU training-memory estimates (--memory)",
    )
    info.add_argument("--backbone", nargs="*", help="default: vit_b vit_l vit_h")
    info.add_argument("--method", nargs="*", help="default: all (--memory: conv_lora)")
    info.add_argument("--num-classes", type=int, default=1, help="1 = binary")
    info.add_argument("--image-size", type=int, help="input size (default: the backbone's)")
    info.add_argument(
        "--memory",
        action="store_true",
        help="estimated peak GPU training memory and the card sizes it fits",
    )
    info.add_argument(
        "--batch-size", type=int, nargs="*", default=[1, 2, 4], help="--memory: batch sizes"
    )
    info.add_argument(
        "--precision",
        nargs="*",
        default=["bf16-mixed"],
        choices=["bf16-mixed", "16-mixed", "32-true"],
        help="--memory: training precisions (default: bf16-mixed, as the GPU presets)",
    )
    info.add_argument(
        "--presets",
        action="store_true",
        help="--memory: also each GPU preset on its smallest card, and the settings derived",
    )
    info.set_defaults(func=run_info)
