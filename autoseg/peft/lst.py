"""The ``lst`` method: Ladder Side-Tuning (Sung et al., NeurIPS 2022) beside SAM's frozen ViT.

A small side network of width ``d = C / r`` runs beside the frozen backbone, one side block
per backbone block. Ladder ``i`` projects backbone block ``i``'s input ``a_i`` (the patch
embedding for ``i = 0``) to ``d`` channels; a learned gate ``mu_i = sigmoid(alpha_i / T)``
(``alpha_i`` starts at 0, ``T = 0.1``) mixes it with the side state::

    z_0 = f_0(a_0),   z_i = mu_i * f_i(a_i) + (1 - mu_i) * s_i,   s_{i+1} = side_i(z_i)

and the last side state, up-projected to ``C``, is added to the backbone's output before
the (frozen) neck. The up-projection starts at zero, so the adapted model starts equal to
the base model.

The backbone runs under ``torch.no_grad``: no gradient flows into it or its activations,
so backward stores nothing of the backbone -- LST's memory advantage. Activation
checkpointing therefore has nothing to do in the backbone (its blocks build no graph);
the side blocks are small and are not checkpointed. The side blocks are SAM ViT blocks
(windowed where the backbone's block is, no relative-position tables: the ladders carry the
backbone's positions) with random init; LST initialises them from the backbone by
structural pruning, which autoseg does not do.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import ClassVar

import torch
from segment_anything.modeling.image_encoder import Block
from torch import nn

from autoseg.models.attention import fuse_vit_attention
from autoseg.peft.lora import adapter_dtype, autocast_active
from autoseg.peft.registry import PeftConfig, register_peft_method
from autoseg.peft.vpt import vit_encoder
from autoseg.rules import setting

__all__ = ["LSTConfig", "LadderSideNetwork", "apply_lst", "side_width"]

ATTRIBUTE = "side_network"
"""The child of ``image_encoder`` that holds the side network."""


@dataclass
class LSTConfig(PeftConfig):
    """Ladder Side-Tuning's settings.

    The side width is ``d = side_heads * max(1, round(C / (reduction_factor * side_heads)))``
    (a multiple of the head count). LST's own default is ``r = 8``; ``r = 11.43`` with 8
    heads (d = 112 on ViT-H) and side MLPs of ratio 2 reproduce the Conv-LoRA paper's LST
    row. With ``L`` blocks the side network has ``L (C d + d)`` (ladders) ``+ (L - 1)``
    (gates) ``+ L ((4 + 2 m) d^2 + (9 + m) d)`` (side blocks, MLP ratio ``m``)
    ``+ (d C + C)`` (up-projection) parameters: on ViT-H ``4,591,104 + 31 + 3,250,688 +
    144,640 = 7,986,463``; with the mask decoder's 3,505,536 that is 11,491,999 = 11.49 M.

    Example:
        >>> config = LSTConfig()
        >>> config.reduction_factor, side_width(1280, config), side_width(768, config)
        (11.43, 112, 64)

    """

    method: ClassVar[str] = "lst"
    reduction_factor: float = setting(11.43, at_least=1)
    side_heads: int = setting(8, at_least=1)
    side_mlp_ratio: float = setting(2.0, above=0)
    gate_temperature: float = setting(0.1, above=0)


def side_width(dim: int, config: LSTConfig) -> int:
    """The side network's width for a backbone of width ``dim`` (a multiple of the heads)."""
    heads = config.side_heads
    return heads * max(1, round(dim / (config.reduction_factor * heads)))


class LadderSideNetwork(nn.Module):
    """LST's side network for a ViT whose blocks are ``blocks`` (read for widths and windows).

    Args:
        blocks: The backbone's blocks (only their width, eps and window sizes are read).
        width: Side width ``d``.
        num_heads: Side attention heads.
        mlp_ratio: Side MLP hidden width over ``d``.
        temperature: Gate temperature ``T``.

    Example:
        >>> backbone = [Block(dim=32, num_heads=2, window_size=w) for w in (2, 0)]
        >>> side = LadderSideNetwork(backbone, width=8, num_heads=2)
        >>> a = torch.randn(1, 4, 4, 32)
        >>> state = side.step(1, a, side.step(0, a, None))
        >>> state.shape, torch.count_nonzero(side.up(state)).item()
        (torch.Size([1, 4, 4, 8]), 0)

    """

    def __init__(
        self,
        blocks: list[nn.Module] | nn.ModuleList,
        width: int,
        num_heads: int = 8,
        mlp_ratio: float = 2.0,
        temperature: float = 0.1,
    ) -> None:
        super().__init__()
        norm = blocks[0].norm1
        dim, device = norm.weight.shape[0], norm.weight.device
        dtype = adapter_dtype(norm.weight.dtype)
        self.temperature = temperature
        with torch.device(device):
            self.ladders = nn.ModuleList(nn.Linear(dim, width) for _ in blocks)
            self.gate_logits = nn.Parameter(torch.zeros(len(blocks) - 1))
            layer_norm = functools.partial(nn.LayerNorm, eps=norm.eps)
            self.blocks = nn.ModuleList(
                Block(width, num_heads, mlp_ratio, norm_layer=layer_norm, window_size=b.window_size)
                for b in blocks
            )
            self.up = nn.Linear(width, dim)
        fuse_vit_attention(self.blocks)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self.to(dtype)

    def gates(self) -> torch.Tensor:
        """``mu_i = sigmoid(alpha_i / T)`` for the ladders ``1..L-1`` (0.5 at init)."""
        return torch.sigmoid(self.gate_logits / self.temperature)

    def step(
        self, index: int, activation: torch.Tensor, state: torch.Tensor | None
    ) -> torch.Tensor:
        """Side block ``index`` on the gated mix of ladder ``index`` and the side state.

        Args:
            index: Block index ``i``.
            activation: The backbone block's input ``a_i`` ``(B, H, W, C)`` (no grad).
            state: The side state ``s_i`` (None for ``i = 0``).

        Returns:
            ``s_{i+1}``, ``(B, H, W, d)``.

        """
        if not autocast_active(activation.device.type):
            activation = activation.to(self.up.weight.dtype)
        ladder = self.ladders[index](activation)
        if state is not None:
            mu = self.gates()[index - 1].to(ladder.dtype)
            ladder = mu * ladder + (1 - mu) * state.to(ladder.dtype)
        return self.blocks[index](ladder)

    def extra_repr(self) -> str:
        """Gate temperature for ``print(model)``."""
        return f"temperature={self.temperature:g}"


def _ladder_forward(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Frozen backbone under ``no_grad``, side network beside it, their sum into the neck."""
    side: LadderSideNetwork = getattr(encoder, ATTRIBUTE)
    with torch.no_grad():
        x = encoder.patch_embed(x)
        if encoder.pos_embed is not None:
            x = x + encoder.pos_embed
    state = None
    for index, block in enumerate(encoder.blocks):
        state = side.step(index, x, state)
        with torch.no_grad():
            x = block(x)
    x = x + side.up(state).to(x.dtype)
    return encoder.neck(x.permute(0, 3, 1, 2))


def apply_lst(model: nn.Module, config: LSTConfig) -> None:
    """Attach a :class:`LadderSideNetwork` as ``image_encoder.side_network``; route the forward.

    The encoder keeps its class, blocks and keys; an instance-level ``forward`` (a
    ``functools.partial``, as activation checkpointing uses) runs backbone and side network.

    Raises:
        SettingsError: a TinyViT encoder.
        ValueError: not a SAM ViT encoder, or one already adapted.

    """
    encoder = vit_encoder(
        model,
        "lst",
        "LST's side network mirrors a plain stack of equal-width blocks, and "
        "TinyViT's stages change width and resolution",
    )
    if ATTRIBUTE in encoder._modules or "forward" in encoder.__dict__:
        raise ValueError("the image encoder already has an adapted forward")
    dim = encoder.blocks[0].norm1.weight.shape[0]
    side = LadderSideNetwork(
        encoder.blocks,
        side_width(dim, config),
        config.side_heads,
        config.side_mlp_ratio,
        config.gate_temperature,
    )
    encoder.add_module(ATTRIBUTE, side)
    encoder.__dict__["forward"] = functools.partial(_ladder_forward, encoder)


register_peft_method("lst", LSTConfig, LadderSideNetwork, apply_lst, position=6)
