"""Attach a PEFT method to a SAM-style model and inspect its trainable parameters."""

from __future__ import annotations

import torch
from torch import nn

from autoseg.peft.conv_lora import ConvLoRALinear
from autoseg.peft.lora import LoRALinear

PEFT_METHODS: tuple[str, ...] = ("conv_lora", "lora", "decoder_only")
_PLANNED_METHODS: tuple[str, ...] = ("bitfit", "adapter", "vpt", "ssf")
_REQUIRED_CHILDREN: tuple[str, ...] = ("image_encoder", "prompt_encoder", "mask_head")
_WRAPPED_ATTRIBUTE = "qkv"


def _wrap_qkv_layers(
    encoder: nn.Module, method: str, rank: int, alpha: float, num_experts: int
) -> int:
    """Replace every ``nn.Linear`` attribute named ``qkv`` under ``encoder``; return how many."""
    targets = [
        module
        for module in encoder.modules()
        # Only registered children: a `qkv` property or plain attribute is not a layer to wrap.
        if isinstance(module._modules.get(_WRAPPED_ATTRIBUTE), nn.Linear)
    ]
    for parent in targets:
        base = getattr(parent, _WRAPPED_ATTRIBUTE)
        if method == "conv_lora":
            wrapper: LoRALinear = ConvLoRALinear(base, rank, alpha, num_experts)
        else:
            wrapper = LoRALinear(base, rank, alpha)
        setattr(parent, _WRAPPED_ATTRIBUTE, wrapper)
    return len(targets)


def apply_peft(
    model: nn.Module,
    method: str,
    rank: int = 3,
    alpha: float = 32.0,
    num_experts: int = 8,
) -> nn.Module:
    """Freeze the SAM encoders and attach ``method``'s trainable adapters, in place.

    ``image_encoder`` and ``prompt_encoder`` are frozen and ``mask_head`` is made fully
    trainable. For ``"conv_lora"`` / ``"lora"`` every ``nn.Linear`` attribute named ``qkv``
    inside ``image_encoder`` is wrapped (keeping the name, so state-dict keys become
    ``...attn.qkv.base.weight``, ``...attn.qkv.lora_A.weight``, ...). New adapter weights are
    created on the wrapped layer's device, so a model built under ``torch.device("meta")``
    stays allocation-free.

    Args:
        model: Module with ``image_encoder``, ``prompt_encoder`` and ``mask_head`` children.
        method: One of :data:`PEFT_METHODS`.
        rank: LoRA rank ``r``.
        alpha: LoRA ``alpha`` (scaling ``alpha / r``).
        num_experts: Number of Conv-LoRA experts ``M`` (ignored by other methods).

    Returns:
        ``model`` itself.

    Raises:
        ValueError: On an unknown method, a missing child, or no ``qkv`` layer to adapt.

    """
    if method not in PEFT_METHODS:
        raise ValueError(
            f"Unknown PEFT method {method!r}; choose one of {PEFT_METHODS} "
            f"({', '.join(_PLANNED_METHODS)} are planned but not implemented yet)"
        )
    missing = [name for name in _REQUIRED_CHILDREN if not hasattr(model, name)]
    if missing:
        raise ValueError(
            f"apply_peft needs a model with children {_REQUIRED_CHILDREN}, missing {missing}"
        )
    model.image_encoder.requires_grad_(False)
    model.prompt_encoder.requires_grad_(False)
    model.mask_head.requires_grad_(True)
    if method in ("conv_lora", "lora"):
        wrapped = _wrap_qkv_layers(model.image_encoder, method, rank, alpha, num_experts)
        if wrapped == 0:
            raise ValueError(
                f"method {method!r} found no nn.Linear named {_WRAPPED_ATTRIBUTE!r} in "
                "model.image_encoder (already adapted, or not a SAM/TinyViT encoder?)"
            )
    return model


def balance_loss(model: nn.Module) -> torch.Tensor:
    """Sum of the Conv-LoRA layers' load-balancing losses from their last forward.

    Multiply by the balance weight (0.01 in the paper) and add to the task loss.

    Args:
        model: Any module, adapted or not.

    Returns:
        Scalar float32 tensor; a zero (without gradient) when no layer has a loss.

    """
    losses = [
        module.balance_loss
        for module in model.modules()
        if isinstance(module, ConvLoRALinear) and module.balance_loss is not None
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
    lora = moe_conv = 0
    for module in model.modules():
        if isinstance(module, LoRALinear):
            lora += module.lora_A.weight.numel() + module.lora_B.weight.numel()
        if isinstance(module, ConvLoRALinear):
            moe_parts = (module.experts, module.gate)
            moe_conv += sum(p.numel() for part in moe_parts for p in part.parameters())
    head = getattr(model, "mask_head", None)
    decoder = 0 if head is None else sum(p.numel() for p in head.parameters() if p.requires_grad)
    params = list(model.parameters())
    return {
        "lora": lora,
        "moe_conv": moe_conv,
        "decoder": decoder,
        "trainable": sum(p.numel() for p in params if p.requires_grad),
        "total": sum(p.numel() for p in params),
    }
