"""The ``lora`` method: LoRA on every fused ``qkv`` linear layer of the image encoder.

Also the base of Conv-LoRA: :class:`LoRALinear` and :func:`wrap_qkv_layers` are shared.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from autoseg.peft.registry import PeftConfig, register_peft_method
from autoseg.rules import setting

WRAPPED_ATTRIBUTE = "qkv"


@dataclass
class LoRAConfig(PeftConfig):
    """LoRA's settings (the Conv-LoRA paper's LoRA row: r = 3, alpha = 32).

    Example:
        >>> LoRAConfig(rank=4).to_dict()
        {'method': 'lora', 'rank': 4, 'alpha': 32.0}

    """

    method: ClassVar[str] = "lora"
    rank: int = setting(3, at_least=1)
    alpha: float = setting(32.0, above=0)


def adapter_dtype(dtype: torch.dtype) -> torch.dtype:
    """Dtype for trainable adapter weights created next to a base weight of ``dtype``.

    Half-precision bases get float32 adapters: the adapters are the only trained weights,
    and optimiser updates on tiny rank-``r`` matrices are lost to bf16/fp16 rounding.

    Args:
        dtype: Dtype of the wrapped base layer's weight.

    Returns:
        ``dtype`` itself for float32/float64, otherwise ``torch.float32``.

    """
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def autocast_active(device_type: str) -> bool:
    """Whether autocast is on for ``device_type`` (False where autocast does not exist).

    Args:
        device_type: A ``torch.device.type`` such as ``"cpu"`` or ``"cuda"``.

    Returns:
        True when an enclosing ``torch.autocast`` region covers this device type.

    """
    return torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type)


class LoRALinear(nn.Module):
    """LoRA around a frozen linear layer: ``y = base(x) + (alpha / r) * B(A(x))``.

    ``lora_A`` is kaiming-uniform initialised like ``nn.Linear``; ``lora_B`` starts at zero,
    so the wrapped layer initially returns exactly what the base layer returns. Subclasses
    transform the rank-``r`` code ``z = A(x)`` by overriding :meth:`adapt` (Conv-LoRA does).

    Args:
        base: The linear layer to adapt. It is frozen in place and kept as ``self.base``.
        rank: LoRA rank ``r``.
        alpha: LoRA ``alpha``; the update is scaled by ``alpha / rank``.

    Example:
        >>> layer = LoRALinear(nn.Linear(32, 96), rank=3, alpha=32.0)
        >>> x = torch.randn(2, 4, 4, 32)
        >>> torch.equal(layer(x), layer.base(x))
        True
        >>> [n for n, p in layer.named_parameters() if p.requires_grad]
        ['lora_A.weight', 'lora_B.weight']

    """

    def __init__(self, base: nn.Linear, rank: int = 3, alpha: float = 32.0) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRALinear wraps an nn.Linear, got {type(base).__name__}")
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        self.base = base.requires_grad_(False)
        self.rank = rank
        self.alpha = alpha
        self.scaling = alpha / rank
        factory = {"device": base.weight.device, "dtype": adapter_dtype(base.weight.dtype)}
        self.lora_A = nn.Linear(base.in_features, rank, bias=False, **factory)
        self.lora_B = nn.Linear(rank, base.out_features, bias=False, **factory)
        self.reset_lora_parameters()

    @property
    def in_features(self) -> int:
        """Input width of the wrapped layer."""
        return self.base.in_features

    @property
    def out_features(self) -> int:
        """Output width of the wrapped layer."""
        return self.base.out_features

    def reset_lora_parameters(self) -> None:
        """Re-initialise ``lora_A`` (kaiming-uniform, ``a=sqrt(5)``) and zero ``lora_B``."""
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    def adapt(self, z: torch.Tensor) -> torch.Tensor:
        """Transform the low-rank code ``z = A(x)`` before ``B``; identity for plain LoRA.

        Args:
            z: ``A(x)``, shaped like ``x`` with the last dimension replaced by ``rank``.

        Returns:
            A tensor of the same shape as ``z``.

        """
        return z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the base output plus the scaled low-rank update.

        Args:
            x: Input of shape ``(..., in_features)``.

        Returns:
            Tensor of shape ``(..., out_features)`` in the base layer's output dtype.

        """
        result = self.base(x)
        if not autocast_active(x.device.type):
            # Outside autocast a bf16 base may feed fp32 adapters (see adapter_dtype).
            x = x.to(self.lora_A.weight.dtype)
        delta = self.lora_B(self.adapt(self.lora_A(x)))
        return result + (delta * self.scaling).to(result.dtype)

    def extra_repr(self) -> str:
        """Rank and scaling next to the module tree in ``print(model)``."""
        return f"rank={self.rank}, alpha={self.alpha}, scaling={self.scaling:g}"

    def parameter_groups(self) -> dict[str, int]:
        """Adapter parameters by the paper's columns: ``{"lora": A + B}``."""
        return {"lora": self.lora_A.weight.numel() + self.lora_B.weight.numel()}


def wrap_qkv_layers(encoder: nn.Module, wrap: Callable[[nn.Linear], nn.Module]) -> int:
    """Replace every ``nn.Linear`` child named ``qkv`` under ``encoder`` by ``wrap(layer)``.

    The name is kept, so state-dict keys become ``...attn.qkv.base.weight``, ...

    Returns:
        How many layers were wrapped.

    Raises:
        ValueError: there is no such layer (already adapted, or not a SAM/TinyViT encoder).

    """
    targets = [
        module
        for module in encoder.modules()
        # Only registered children: a `qkv` property or plain attribute is not a layer to wrap.
        if isinstance(module._modules.get(WRAPPED_ATTRIBUTE), nn.Linear)
    ]
    if not targets:
        raise ValueError(
            f"found no nn.Linear named {WRAPPED_ATTRIBUTE!r} in model.image_encoder "
            "(already adapted, or not a SAM/TinyViT encoder?)"
        )
    for parent in targets:
        setattr(parent, WRAPPED_ATTRIBUTE, wrap(getattr(parent, WRAPPED_ATTRIBUTE)))
    return len(targets)


def apply_lora(model: nn.Module, config: LoRAConfig) -> None:
    """Wrap the image encoder's ``qkv`` layers in :class:`LoRALinear`."""
    wrap_qkv_layers(model.image_encoder, lambda base: LoRALinear(base, config.rank, config.alpha))


register_peft_method("lora", LoRAConfig, LoRALinear, apply_lora, position=1)
