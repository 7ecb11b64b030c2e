"""The ``bitfit`` method: only the image encoder's bias terms train (and the mask decoder).

Zaken et al., "BitFit: Simple Parameter-efficient Fine-tuning for Transformer-based Masked
Language-models", ACL 2022.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from autoseg.peft.registry import PeftConfig, register_peft_method

BIAS = "bias"


@dataclass
class BitFitConfig(PeftConfig):
    """BitFit has no settings: every bias term of the image encoder trains.

    A bias term is a parameter registered as ``bias`` on a layer: the linear layers'
    (``qkv``, ``proj``, MLP), the LayerNorms', the patch embedding's conv and, on TinyViT,
    the batch norms' shifts. Not TinyViT's ``attention_biases`` (learned relative-position
    tables, not bias vectors). The prompt encoder stays frozen. SAM ViT-H: 452,352 biases,
    3,957,888 trainable with the binary decoder (paper: 3.96 M). No layer is inserted, so
    the model starts as the base model.

    Example:
        >>> BitFitConfig().to_dict()
        {'method': 'bitfit'}

    """

    method: ClassVar[str] = "bitfit"


def encoder_bias_names(encoder: nn.Module) -> list[str]:
    """Names (under ``encoder``) of the parameters that BitFit trains."""
    return [name for name, _ in encoder.named_parameters() if name.rsplit(".", 1)[-1] == BIAS]


def apply_bitfit(model: nn.Module, config: BitFitConfig) -> None:
    """Let the image encoder's bias terms train; everything else there stays frozen."""
    names = set(encoder_bias_names(model.image_encoder))
    if not names:
        raise ValueError("found no bias parameter in model.image_encoder")
    for name, param in model.image_encoder.named_parameters():
        if name in names:
            param.requires_grad_(True)


register_peft_method("bitfit", BitFitConfig, None, apply_bitfit, position=3)
