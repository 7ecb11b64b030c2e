"""What ``autoseg info`` shows: trainable-parameter tables and GPU training-memory estimates.

Both are computed without weights (meta device, fake tensors); the memory view also checks
each GPU preset against its smallest card (:func:`preset_memory_table`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from autoseg.builder import count_parameters
from autoseg.config import Config, LossConfig
from autoseg.models.backbones import pretrained_weights
from autoseg.models.memory import GIB, MemoryEstimate, estimate_training_memory, fits_card
from autoseg.preset_choice import GPU_PRESETS, load_preset
from autoseg.training.losses import task_loss

COLUMNS = ("lora", "moe_conv", "decoder", "trainable", "total")


def parameter_counts(
    backbone: str,
    method: str,
    num_classes: int = 1,
    image_size: int | None = None,
    in_channels: int = 3,
) -> dict[str, int]:
    """Parameter counts for one backbone and PEFT method (``num_classes=1``: binary).

    ``in_channels`` above 3 adds the band projection, counted under ``bands``.

    Example:
        >>> parameter_counts("vit_tiny", "lora", in_channels=4)["bands"]
        15

    """
    size = image_size or pretrained_weights(backbone).input_size
    config = Config().with_overrides(
        {
            "model.backbone": backbone,
            "peft.method": method,
            "data.image_size": size,
            "model.in_channels": in_channels,
        }
    )
    return count_parameters(config, num_outputs=num_classes)


def parameter_table(
    backbones: Sequence[str],
    methods: Sequence[str],
    num_classes: int = 1,
    image_size: int | None = None,
    in_channels: int = 3,
) -> str:
    """A plain-text table of parameter counts, one row per backbone and method.

    With ``in_channels`` above 3 a ``bands`` column shows the band projection.
    """
    columns = COLUMNS if in_channels == 3 else ("bands", *COLUMNS)
    header = f"{'backbone':<9} {'method':<13}" + "".join(f"{c:>14}" for c in columns) + "   share"
    lines = [header, "-" * len(header)]
    for backbone in backbones:
        for method in methods:
            counts = parameter_counts(backbone, method, num_classes, image_size, in_channels)
            cells = "".join(f"{counts[c]:>14,}" for c in columns)
            share = 100 * counts["trainable"] / counts["total"]
            lines.append(f"{backbone:<9} {method:<13}{cells}  {share:5.2f}%")
    return "\n".join(lines)


# ----------------------------------------------------------------- GPU memory (the model)
CARD_SIZES_GIB = (8, 12, 16, 24, 40, 80)
"""GPU card sizes the memory view checks, in GiB."""
HEADROOM = 0.10
"""The share of a card a preset leaves free (allocator fragmentation, other processes)."""
SMALLEST_SMALL_CARD_GIB = 4.0
"""The smallest card of the open-ended bottom class (``gpu_vit_b_small``: under 8 GiB)."""
TRAINING_LOSS = functools.partial(task_loss, binary_loss=LossConfig().binary)
"""The default task loss as a fit applies it to fp32 logits (multi-class by the logits' shape)."""
CHECKPOINTING_REQUIRED = frozenset({"gpu_vit_b_small"})
"""Presets that checkpoint whatever the estimate (SPEC section 6: smaller GPUs)."""


def training_memory(
    backbone: str,
    image_size: int | None,
    batch_size: int,
    precision: str = "auto",
    activation_checkpointing: bool = False,
    method: str = "conv_lora",
    num_classes: int = 1,
) -> MemoryEstimate:
    """GPU training-memory estimate of one configuration, with the default task loss.

    Example:
        >>> training_memory("vit_tiny", 64, batch_size=2).precision
        'bf16-mixed'

    """
    return estimate_training_memory(
        backbone,
        image_size,
        batch_size,
        precision,
        activation_checkpointing,
        method,
        num_classes,
        device="cuda",
        loss=TRAINING_LOSS,
    )


def _fit_cells(estimate: MemoryEstimate) -> str:
    return "".join(
        f"{'yes' if fits_card(estimate, gib, HEADROOM) else '-':>5}" for gib in CARD_SIZES_GIB
    )


def memory_table(
    backbones: Sequence[str],
    method: str = "conv_lora",
    image_size: int | None = None,
    batch_sizes: Sequence[int] = (1, 2, 4),
    precisions: Sequence[str] = ("bf16-mixed",),
    num_classes: int = 1,
) -> str:
    """Estimated peak GPU training memory (GiB) and the cards each setting fits.

    A card column says ``yes`` when the estimate leaves at least :data:`HEADROOM` free.

    Example:
        >>> print(memory_table(["vit_tiny"], image_size=64, batch_sizes=[1]))
        conv_lora, 1 logit map(s), GPU; a card fits with >= 10% of it free
        backbone  size batch precision  ckpt params activ. peak GiB    8   12   16   24   40   80
        -----------------------------------------------------------------------------------------
        vit_tiny    64     1 bf16-mixed   no   0.00   0.00     0.50  yes  yes  yes  yes  yes  yes
        vit_tiny    64     1 bf16-mixed  yes   0.00   0.00     0.50  yes  yes  yes  yes  yes  yes

    """
    cards = "".join(f"{gib:>5}" for gib in CARD_SIZES_GIB)
    header = (
        f"{'backbone':<9}{'size':>5} {'batch':>5} {'precision':<10} {'ckpt':>4}"
        f"{'params':>7}{'activ.':>7}{'peak GiB':>9}{cards}"
    )
    caption = (
        f"{method}, {num_classes} logit map(s), GPU; a card fits with >= {HEADROOM:.0%} of it free"
    )
    lines = [caption, header, "-" * len(header)]
    for backbone in backbones:
        for batch in batch_sizes:
            for precision in precisions:
                for checkpointing in (False, True):
                    est = training_memory(
                        backbone, image_size, batch, precision, checkpointing, method, num_classes
                    )
                    lines.append(
                        f"{backbone:<9}{est.image_size:>5} {batch:>5} {est.precision:<10} "
                        f"{'yes' if checkpointing else 'no':>4}"
                        f"{est.parameters_bytes / GIB:>7.2f}{est.activations_bytes / GIB:>7.2f}"
                        f"{est.total_gib:>9.2f}{_fit_cells(est)}"
                    )
    return "\n".join(lines)


# ------------------------------------------------------------------------- GPU presets
def smallest_card_gib(preset: str) -> float:
    """The smallest card a GPU preset is chosen for (its ``GPU_PRESETS`` threshold).

    Example:
        >>> smallest_card_gib("gpu_vit_b"), smallest_card_gib("gpu_vit_b_small")
        (8.0, 4.0)

    """
    minimum = dict((name, gib) for gib, name in GPU_PRESETS)[preset]
    return minimum if minimum > 0 else SMALLEST_SMALL_CARD_GIB


def preset_memory(
    preset: str,
    batch_size: int | None = None,
    checkpointing: bool | None = None,
    method: str | None = None,
) -> MemoryEstimate:
    """The estimate of a GPU preset's training step, or of other batch/checkpointing settings.

    ``method`` replaces the preset's PEFT method (e.g. ``"full"``: where full training fits).

    Example:
        >>> preset_memory("gpu_vit_b", batch_size=1).backbone
        'vit_b'

    """
    config = load_preset(preset)
    return training_memory(
        config.model.backbone,
        config.data.image_size,
        config.env.batch_size if batch_size is None else batch_size,
        config.env.precision,
        config.env.activation_checkpointing if checkpointing is None else checkpointing,
        config.peft.method if method is None else method,
    )


def derived_preset_settings(preset: str, method: str | None = None) -> tuple[int, bool]:
    """The batch size and checkpointing the memory model gives a GPU preset.

    The largest batch dividing the preset's effective batch size that fits its smallest card
    without activation checkpointing (recomputing costs about one more forward); only if
    even batch 1 does not fit, the largest batch that fits with checkpointing. Presets in
    :data:`CHECKPOINTING_REQUIRED` always checkpoint. ``method`` replaces the preset's PEFT
    method (``"full"``: the settings that full training would need on that card).

    Raises:
        ValueError: nothing fits the card.

    Example:
        >>> derived_preset_settings("gpu_vit_b_small")[1]
        True

    """
    effective = load_preset(preset).env.effective_batch_size
    card = smallest_card_gib(preset)
    batches = [b for b in range(effective, 0, -1) if effective % b == 0]
    for checkpointing in (True,) if preset in CHECKPOINTING_REQUIRED else (False, True):
        for batch in batches:
            if fits_card(preset_memory(preset, batch, checkpointing, method), card, HEADROOM):
                return batch, checkpointing
    raise ValueError(f"preset {preset!r}: no batch size fits a {card:g} GiB card")


def preset_memory_table() -> str:
    """Each GPU preset on its smallest card: its settings, estimated peak and headroom."""
    header = (
        f"{'preset':<16}{'backbone':<9}{'card GiB':>9}{'batch':>6}{'ckpt':>5}"
        f"{'peak GiB':>9}{'free':>6}  derived (batch, ckpt)"
    )
    lines = [header, "-" * len(header)]
    for _, preset in GPU_PRESETS:
        config, card = load_preset(preset), smallest_card_gib(preset)
        est = preset_memory(preset)
        batch, checkpointing = derived_preset_settings(preset)
        same = (batch, checkpointing) == (est.batch_size, est.activation_checkpointing)
        lines.append(
            f"{preset:<16}{config.model.backbone:<9}{card:>9g}{est.batch_size:>6}"
            f"{'yes' if est.activation_checkpointing else 'no':>5}{est.total_gib:>9.2f}"
            f"{1 - est.total_gib / card:>6.0%}  {batch}, {'yes' if checkpointing else 'no'}"
            f"{'' if same else '  (differs from the preset)'}"
        )
    return "\n".join(lines)
