"""Attach a registered PEFT method to a SAM-style model and inspect what trains."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from autoseg.errors import AutosegError
from autoseg.peft.registry import PeftConfig, get_peft_method, peft_method_names, peft_methods

PEFT_METHODS: tuple[str, ...] = peft_method_names()
"""The built-in methods' names; :func:`~autoseg.peft.registry.peft_method_names` is live."""
_REQUIRED_CHILDREN: tuple[str, ...] = ("image_encoder", "prompt_encoder", "mask_head")


def apply_peft(model: nn.Module, method: str | PeftConfig, **settings: Any) -> nn.Module:
    """Freeze the SAM encoders and attach a method's trainable adapters, in place.

    ``image_encoder`` and ``prompt_encoder`` are frozen, ``mask_head`` is made fully trainable,
    then the method's apply function inserts its adapters or unfreezes what it trains
    (``bitfit``: the encoder's biases; ``full``: everything). New adapter weights are created on
    the adapted layer's device, so a model built under ``torch.device("meta")`` stays
    allocation-free.

    Args:
        model: Module with ``image_encoder``, ``prompt_encoder`` and ``mask_head`` children.
        method: A registered method's name (see :data:`PEFT_METHODS`) or its config.
        **settings: With a name, the method's settings (e.g. ``rank=4``); defaults otherwise.

    Returns:
        ``model`` itself.

    Raises:
        ValueError: An unknown method or setting, a missing child, or nothing to adapt.

    Example:
        >>> from autoseg.models.segmenter import build_segmenter
        >>> model = apply_peft(build_segmenter("vit_tiny")[0], "lora", rank=2)
        >>> adapter_parameter_counts(model)["lora"] > 0
        True

    """
    config = _config(method, settings)
    missing = [name for name in _REQUIRED_CHILDREN if not hasattr(model, name)]
    if missing:
        raise ValueError(
            f"apply_peft needs a model with children {_REQUIRED_CHILDREN}, missing {missing}"
        )
    model.image_encoder.requires_grad_(False)
    model.prompt_encoder.requires_grad_(False)
    model.mask_head.requires_grad_(True)
    try:
        get_peft_method(config.method).apply(model, config)
    except AutosegError:
        raise  # already names the setting and the fix (e.g. a method TinyViT cannot take)
    except ValueError as err:
        raise ValueError(f"peft.method={config.method!r}: {err}") from err
    return model


def _config(method: str | PeftConfig, settings: dict[str, Any]) -> PeftConfig:
    if isinstance(method, PeftConfig):
        if settings:
            raise ValueError(f"pass settings inside the config, not as {sorted(settings)}")
        return method
    try:
        spec = get_peft_method(method)
    except ValueError as err:  # SettingsError is a ValueError
        raise ValueError(f"Unknown PEFT method {method!r}; choose one of {PEFT_METHODS}") from err
    unknown = sorted(set(settings) - set(spec.settings))
    if unknown:
        raise ValueError(f"{method!r} has no setting {unknown}; its settings: {spec.settings}")
    return spec.config(**settings)


def balance_loss_weight(config: PeftConfig) -> float:
    """The weight of a method's load-balancing loss: its ``balance_weight``, else 0.

    Example:
        >>> from autoseg.peft.lora import LoRAConfig
        >>> balance_loss_weight(LoRAConfig())
        0.0

    """
    return float(getattr(config, "balance_weight", 0.0))


def _adapter_layers(model: nn.Module) -> list[nn.Module]:
    """The modules of ``model`` that are a registered method's adapter layer."""
    kinds = tuple(m.layer for m in peft_methods() if m.layer is not None)
    return [module for module in model.modules() if isinstance(module, kinds)]


def balance_loss(model: nn.Module) -> torch.Tensor:
    """Sum of the adapter layers' load-balancing losses from their last forward.

    Multiply by :func:`balance_loss_weight` (0.01 in the paper) and add to the task loss.

    Args:
        model: Any module, adapted or not.

    Returns:
        Scalar float32 tensor; a zero (without gradient) when no layer has a loss.

    """
    losses = [
        loss
        for layer in _adapter_layers(model)
        if isinstance(loss := getattr(layer, "balance_loss", None), torch.Tensor)
    ]
    if losses:
        return torch.stack(losses).sum()
    first = next(model.parameters(), None)
    return torch.zeros((), device=first.device if first is not None else None)


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Detached CPU copies of the parameters that require grad, keyed as in ``state_dict()``.

    Load it back with ``model.load_state_dict(sd, strict=False)`` into a model built and
    adapted the same way.

    Args:
        model: The adapted model.

    Returns:
        Mapping from state-dict key to a CPU tensor that shares no memory with the model.

    """
    return {
        name: param.detach().to("cpu", copy=True)
        for name, param in model.named_parameters()
        if param.requires_grad
    }


def adapter_parameter_counts(model: nn.Module) -> dict[str, int]:
    """Count parameters the way the Conv-LoRA paper reports them.

    Works on meta-device models (only shapes are read).

    Args:
        model: An adapted model with a ``mask_head`` child (counted as 0 when absent).

    Returns:
        ``{"lora": lora_A + lora_B, "moe_conv": experts + gates, "decoder": trainable
        parameters under mask_head, "trainable": all trainable, "total": all}``.

    """
    groups = {"lora": 0, "moe_conv": 0}
    for layer in _adapter_layers(model):
        for group, count in getattr(layer, "parameter_groups", dict)().items():
            groups[group] = groups.get(group, 0) + count
    head = getattr(model, "mask_head", None)
    decoder = 0 if head is None else sum(p.numel() for p in head.parameters() if p.requires_grad)
    params = list(model.parameters())
    return {
        **groups,
        "decoder": decoder,
        "trainable": sum(p.numel() for p in params if p.requires_grad),
        "total": sum(p.numel() for p in params),
    }
