"""The ``adapter`` method: bottleneck adapters after each block's attention and MLP.

Houlsby et al., "Parameter-Efficient Transfer Learning for NLP", ICML 2019 (two sequential
adapters per block), in AdaptFormer's form for vision transformers (Chen et al., NeurIPS
2022: down-projection, nonlinearity, zero-initialised up-projection, residual).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from autoseg.peft.blocks import sublayer_outputs, transformer_blocks, wrap_child
from autoseg.peft.lora import adapter_dtype, autocast_active
from autoseg.peft.registry import PeftConfig, register_peft_method
from autoseg.rules import setting


@dataclass
class AdapterConfig(PeftConfig):
    """The adapters' bottleneck width.

    Two adapters per transformer block, on the outputs of the attention (``attn.proj``) and
    of the MLP (its last linear), before each residual sum, as in Houlsby et al. The papers
    leave the width to the budget; the default 2 is the one that gives the Conv-LoRA
    paper's ViT-H count: per adapter ``2 * d * w + w + d`` (both projections with a bias),
    so ``32 * 2 * (2 * 1280 * 2 + 2 + 1280) = 409,728`` and 3,915,264 trainable with the
    binary decoder (paper: 3.92 M). GELU, as SAM's MLPs, is the nonlinearity.

    Example:
        >>> AdapterConfig().to_dict()
        {'method': 'adapter', 'width': 2}

    """

    method: ClassVar[str] = "adapter"
    width: int = setting(2, at_least=1)


class AdapterLinear(nn.Module):
    """A frozen linear layer followed by a residual bottleneck adapter.

    ``y = base(x); out = y + up(GELU(down(y)))``. ``down`` is initialised like
    ``nn.Linear``; ``up`` (weight and bias) starts at zero, so the layer initially returns
    exactly what the base layer returns. Adapter weights are float32 next to a
    half-precision base (see :func:`~autoseg.peft.lora.adapter_dtype`).

    Args:
        base: The linear layer whose output is adapted; frozen in place as ``self.base``.
        width: Bottleneck width ``w``.

    Example:
        >>> layer = AdapterLinear(nn.Linear(16, 32), width=4)
        >>> x = torch.randn(2, 3, 16)
        >>> torch.equal(layer(x), layer.base(x))
        True
        >>> sorted({n.split(".")[0] for n, p in layer.named_parameters() if p.requires_grad})
        ['adapter_down', 'adapter_up']

    """

    def __init__(self, base: nn.Linear, width: int = 2) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"AdapterLinear wraps an nn.Linear, got {type(base).__name__}")
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        self.base = base.requires_grad_(False)
        self.width = width
        factory = {"device": base.weight.device, "dtype": adapter_dtype(base.weight.dtype)}
        self.adapter_down = nn.Linear(base.out_features, width, **factory)
        self.adapter_up = nn.Linear(width, base.out_features, **factory)
        nn.init.zeros_(self.adapter_up.weight)
        nn.init.zeros_(self.adapter_up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the base output plus the adapter's residual.

        Args:
            x: Input of shape ``(..., in_features)``.

        Returns:
            Tensor of shape ``(..., out_features)`` in the base layer's output dtype.

        """
        y = self.base(x)
        h = y if autocast_active(y.device.type) else y.to(self.adapter_down.weight.dtype)
        delta = self.adapter_up(F.gelu(self.adapter_down(h)))
        return y + delta.to(y.dtype)

    def extra_repr(self) -> str:
        """Bottleneck width for ``print(model)``."""
        return f"width={self.width}"

    def parameter_groups(self) -> dict[str, int]:
        """Adapter parameters: ``{"adapter": down + up}``."""
        parts = (self.adapter_down, self.adapter_up)
        return {"adapter": sum(p.numel() for part in parts for p in part.parameters())}


def apply_adapter(model: nn.Module, config: AdapterConfig) -> None:
    """Wrap each transformer block's attention and MLP output layers in :class:`AdapterLinear`.

    TinyViT's convolutional first stage has no attention or MLP and gets no adapter.
    """
    blocks = transformer_blocks(model.image_encoder)
    if not blocks:
        raise ValueError("found no transformer block with attn and mlp in model.image_encoder")
    for block in blocks:
        for parent, name in sublayer_outputs(block):
            wrap_child(parent, name, lambda base: AdapterLinear(base, config.width))


register_peft_method("adapter", AdapterConfig, AdapterLinear, apply_adapter, position=4)
