"""Trainable-parameter tables, computed on the meta device (no weights are allocated)."""

from __future__ import annotations

from collections.abc import Sequence

from autoseg.builder import count_parameters
from autoseg.config import Config
from autoseg.models.backbones import pretrained_weights

COLUMNS = ("lora", "moe_conv", "decoder", "trainable", "total")


def parameter_counts(
    backbone: str, method: str, num_classes: int = 1, image_size: int | None = None
) -> dict[str, int]:
    """Parameter counts for one backbone and PEFT method (``num_classes=1``: binary)."""
    size = image_size or pretrained_weights(backbone).input_size
    config = Config().with_overrides(
        {"model.backbone": backbone, "peft.method": method, "data.image_size": size}
    )
    return count_parameters(config, num_outputs=num_classes)


def parameter_table(
    backbones: Sequence[str],
    methods: Sequence[str],
    num_classes: int = 1,
    image_size: int | None = None,
) -> str:
    """A plain-text table of parameter counts, one row per backbone and method."""
    header = f"{'backbone':<9} {'method':<13}" + "".join(f"{c:>14}" for c in COLUMNS) + "   share"
    lines = [header, "-" * len(header)]
    for backbone in backbones:
        for method in methods:
            counts = parameter_counts(backbone, method, num_classes, image_size)
            cells = "".join(f"{counts[c]:>14,}" for c in COLUMNS)
            share = 100 * counts["trainable"] / counts["total"]
            lines.append(f"{backbone:<9} {method:<13}{cells}  {share:5.2f}%")
    return "\n".join(lines)
