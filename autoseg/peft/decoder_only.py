"""The ``decoder_only`` method: no adapters; only the mask decoder trains (the paper's baseline)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from autoseg.peft.registry import PeftConfig, register_peft_method


@dataclass
class DecoderOnlyConfig(PeftConfig):
    """Decoder-only training has no settings.

    Example:
        >>> DecoderOnlyConfig().to_dict()
        {'method': 'decoder_only'}

    """

    method: ClassVar[str] = "decoder_only"


def apply_decoder_only(model: nn.Module, config: DecoderOnlyConfig) -> None:
    """Insert nothing: the frozen encoders stay as they are."""


register_peft_method("decoder_only", DecoderOnlyConfig, None, apply_decoder_only, position=2)
