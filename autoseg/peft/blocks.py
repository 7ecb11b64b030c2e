"""Where the baseline methods attach in SAM's ViT and in TinyViT: blocks, sublayers, ops.

Shared by ``adapter`` (after each block's attention and MLP), ``ssf`` (after every op of the
encoder) and any other method that wraps layers in place, keeping each wrapped layer's name
so state-dict keys only gain a level (``...attn.proj.base.weight``).
"""

from __future__ import annotations

from collections.abc import Callable

from segment_anything.modeling.common import LayerNorm2d
from torch import nn

from autoseg.models.activation_checkpointing import encoder_blocks
from autoseg.models.tiny_vit import ConvBN

__all__ = ["channel_axis", "encoder_ops", "sublayer_outputs", "transformer_blocks", "wrap_child"]

Select = Callable[[nn.Module, nn.Module], bool]


def transformer_blocks(encoder: nn.Module) -> list[nn.Module]:
    """The encoder's blocks that have an attention and an MLP sublayer, in order.

    SAM ViT: every ``blocks[i]``; TinyViT: the attention stages' blocks (its first stage's
    MBConv blocks are convolutional and have neither).

    Example:
        >>> from autoseg.models.segmenter import build_segmenter
        >>> len(transformer_blocks(build_segmenter("lite_tiny")[0].image_encoder))
        3

    """
    return [b for b in encoder_blocks(encoder) if hasattr(b, "attn") and hasattr(b, "mlp")]


def _last_linear_name(module: nn.Module) -> str:
    names = [name for name, child in module.named_children() if isinstance(child, nn.Linear)]
    if not names:
        raise ValueError(f"{type(module).__name__} has no nn.Linear child")
    return names[-1]


def sublayer_outputs(block: nn.Module) -> list[tuple[nn.Module, str]]:
    """``(parent, child name)`` of the linear layer that ends the attention and the MLP.

    ``attn.proj`` for both encoders; ``mlp.lin2`` in SAM ViT, ``mlp.fc2`` in TinyViT. The
    sublayer's output (before the residual sum) is that layer's output.
    """
    return [(block.attn, "proj"), (block.mlp, _last_linear_name(block.mlp))]


def channel_axis(parent: nn.Module, module: nn.Module) -> int | None:
    """The channel axis of ``module``'s output if SSF scales it, else None.

    Linear layers and LayerNorms work on channels-last tokens (axis -1); convolutions,
    ``LayerNorm2d`` and batch norm on NCHW maps (axis 1). The convolution inside TinyViT's
    ``ConvBN`` is skipped: its batch norm, the op's output, is scaled instead.
    """
    if isinstance(module, nn.Linear | nn.LayerNorm):
        return -1
    if isinstance(module, LayerNorm2d | nn.BatchNorm2d):
        return 1
    if isinstance(module, nn.Conv2d) and not isinstance(parent, ConvBN):
        return 1
    return None


def encoder_ops(encoder: nn.Module, select: Select) -> list[tuple[nn.Module, str]]:
    """``(parent, child name)`` of every registered child under ``encoder`` that is selected.

    Collected before anything is replaced, so a wrapper is never itself visited.
    """
    return [
        (parent, name)
        for parent in encoder.modules()
        for name, child in parent.named_children()
        if select(parent, child)
    ]


def wrap_child(parent: nn.Module, name: str, wrap: Callable[[nn.Module], nn.Module]) -> None:
    """Replace ``parent.<name>`` by ``wrap(parent.<name>)`` under the same name."""
    setattr(parent, name, wrap(getattr(parent, name)))
