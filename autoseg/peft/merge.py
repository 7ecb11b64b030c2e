"""Fold trained LoRA adapters into their base layers, for inference without overhead.

A :class:`~autoseg.peft.lora.LoRALinear` computes ``base(x) + s * B(A(x))`` with
``s = alpha / rank``; that is one linear layer with weight ``W + s * B @ A``.
:class:`~autoseg.peft.conv_lora.ConvLoRALinear` is not mergeable: its experts are
nonlinear (conv, GELU, bicubic resampling) and chosen per sample, so it stays as it is.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from autoseg.peft.lora import LoRALinear


def merged_linear(layer: LoRALinear) -> nn.Linear:
    """A plain ``nn.Linear`` computing what the plain-LoRA ``layer`` computes.

    The product ``B @ A`` is formed in float64, so the merged weight is exact to the
    rounding of its own dtype.

    Example:
        >>> layer = LoRALinear(nn.Linear(8, 24), rank=2)
        >>> _ = nn.init.normal_(layer.lora_B.weight)
        >>> x = torch.randn(3, 8)
        >>> torch.allclose(merged_linear(layer)(x), layer(x), atol=1e-5)
        True

    """
    if type(layer).adapt is not LoRALinear.adapt:
        raise TypeError(f"{type(layer).__name__} transforms the low-rank code; it cannot merge")
    base = layer.base
    delta = layer.lora_B.weight.double() @ layer.lora_A.weight.double() * layer.scaling
    merged = nn.Linear(
        base.in_features,
        base.out_features,
        bias=base.bias is not None,
        device=base.weight.device,
        dtype=base.weight.dtype,
    )
    with torch.no_grad():
        merged.weight.copy_((base.weight.double() + delta).to(base.weight.dtype))
        if base.bias is not None:
            merged.bias.copy_(base.bias)
    return merged.requires_grad_(False)


def _mergeable(module: nn.Module) -> bool:
    return isinstance(module, LoRALinear) and type(module).adapt is LoRALinear.adapt


def merge_lora(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every plain LoRA layer merged into an ``nn.Linear``.

    Conv-LoRA layers (and anything else that transforms the low-rank code) are copied
    unchanged: they are not mergeable. ``model`` itself is not modified.

    Args:
        model: Any module, e.g. a ``SamSegmenter`` adapted with ``lora``.

    Returns:
        The merged copy, in the same train/eval mode as ``model``.

    Example:
        >>> encoder = nn.Sequential(LoRALinear(nn.Linear(4, 12)), nn.ReLU())
        >>> merged = merge_lora(encoder)
        >>> type(merged[0]).__name__, type(encoder[0]).__name__
        ('Linear', 'LoRALinear')

    """
    merged_model = copy.deepcopy(model)
    if _mergeable(merged_model):
        return merged_linear(merged_model)
    for parent in list(merged_model.modules()):
        for name, child in list(parent.named_children()):
            if _mergeable(child):
                setattr(parent, name, merged_linear(child))
    return merged_model
