"""The ``ssf`` method: a learnable per-channel scale and shift after every encoder op.

Lian et al., "Scaling & Shifting Your Features: A New Baseline for Efficient Model Tuning",
NeurIPS 2022. Each op's output ``y`` becomes ``gamma * y + beta`` (one ``gamma``, ``beta``
per channel); everything else in the encoder stays frozen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from autoseg.peft.blocks import channel_axis, encoder_ops, wrap_child
from autoseg.peft.lora import adapter_dtype
from autoseg.peft.registry import PeftConfig, register_peft_method
from autoseg.rules import setting


@dataclass
class SSFConfig(PeftConfig):
    """SSF's settings.

    Where SSF goes: after every op of the image encoder: the patch embedding, in every block
    ``norm1``, ``qkv``, ``proj``, ``norm2`` and both MLP linears, and the neck's two convs and
    two ``LayerNorm2d`` (the paper's "after each operation", its final norm being SAM's
    neck). Not after activations or the attention softmax, as in the paper. For SAM ViT-H
    that is ``2 * (1280 + 32 * 14080 + 4 * 256) = 905,728`` values, 4.41 M trainable with
    the binary decoder (paper: 4.42 M). On TinyViT: every linear, LayerNorm and batch norm
    (the output of each Conv-BN), and the neck.

    ``init_std`` is where the paper leaves room: it draws ``gamma ~ N(1, 0.02)`` and
    ``beta ~ N(0, 0.02)``; the default 0 starts at ``gamma = 1, beta = 0``, so the adapted
    model starts exactly equal to the base model. Set 0.02 for the paper's init.

    Example:
        >>> SSFConfig().to_dict()
        {'method': 'ssf', 'init_std': 0.0}

    """

    method: ClassVar[str] = "ssf"
    init_std: float = setting(0.0, at_least=0)


class SSFLayer(nn.Module):
    """A frozen op followed by a learnable per-channel scale and shift.

    ``y = base(x) * ssf_scale + ssf_shift`` along ``channel_dim`` (-1: channels-last tokens,
    1: NCHW maps). Scale and shift are float32 next to a half-precision base (see
    :func:`~autoseg.peft.lora.adapter_dtype`); the output has the base output's dtype.
    Mergeable in principle (into the preceding linear or norm), not merged here.

    Args:
        base: The op; frozen in place and kept as ``self.base``.
        channels: Width of its output's channel axis.
        channel_dim: ``-1`` or ``1``.
        init_std: 0 starts at scale 1 and shift 0 exactly; above 0 draws them around that.

    Example:
        >>> layer = SSFLayer(nn.Linear(8, 16), channels=16)
        >>> x = torch.randn(2, 5, 8)
        >>> torch.equal(layer(x), layer.base(x))
        True
        >>> [n for n, p in layer.named_parameters() if p.requires_grad]
        ['ssf_scale', 'ssf_shift']

    """

    def __init__(
        self, base: nn.Module, channels: int, channel_dim: int = -1, init_std: float = 0.0
    ) -> None:
        super().__init__()
        if channel_dim not in (-1, 1):
            raise ValueError(f"channel_dim must be -1 or 1, got {channel_dim}")
        self.base = base.requires_grad_(False)
        self.channel_dim = channel_dim
        weight = next(base.parameters())
        factory = {"device": weight.device, "dtype": adapter_dtype(weight.dtype)}
        self.ssf_scale = nn.Parameter(torch.ones(channels, **factory))
        self.ssf_shift = nn.Parameter(torch.zeros(channels, **factory))
        if init_std > 0:
            with torch.no_grad():
                self.ssf_scale.normal_(1.0, init_std)
                self.ssf_shift.normal_(0.0, init_std)

    def forward(self, *args: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
        """Run the op, then scale and shift its output per channel.

        Returns:
            The op's output, transformed, in the op's output dtype.

        """
        return self.scale_shift(self.base(*args, **kwargs))

    def scale_shift(self, y: torch.Tensor) -> torch.Tensor:
        """The learned per-channel transform of an output of the op, in its dtype."""
        shape = (-1,) if self.channel_dim == -1 else (-1, 1, 1)
        scale, shift = self.ssf_scale.view(shape), self.ssf_shift.view(shape)
        return torch.addcmul(shift, y, scale).to(y.dtype)

    def extra_repr(self) -> str:
        """Channels and axis next to the module tree in ``print(model)``."""
        return f"channels={self.ssf_scale.numel()}, channel_dim={self.channel_dim}"

    def parameter_groups(self) -> dict[str, int]:
        """Adapter parameters: ``{"ssf": scale + shift}``."""
        return {"ssf": self.ssf_scale.numel() + self.ssf_shift.numel()}


def output_channels(module: nn.Module) -> int:
    """Width of an op's output channel axis (linear, conv, LayerNorm, batch norm)."""
    for attribute in ("out_features", "out_channels", "num_features"):
        if hasattr(module, attribute):
            return int(getattr(module, attribute))
    return int(module.weight.shape[0])  # LayerNorm / LayerNorm2d: one weight per channel


def apply_ssf(model: nn.Module, config: SSFConfig) -> None:
    """Wrap every op of the image encoder (see :class:`SSFConfig`) in :class:`SSFLayer`."""
    ops = encoder_ops(model.image_encoder, lambda p, c: channel_axis(p, c) is not None)
    if not ops:
        raise ValueError("found no linear, norm or conv layer to scale in model.image_encoder")
    for parent, name in ops:
        axis = channel_axis(parent, getattr(parent, name))
        wrap_child(
            parent, name, lambda op, a=axis: SSFLayer(op, output_channels(op), a, config.init_std)
        )


register_peft_method("ssf", SSFConfig, SSFLayer, apply_ssf, position=8)
