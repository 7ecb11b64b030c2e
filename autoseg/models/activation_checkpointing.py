"""Activation checkpointing of the image encoder's blocks (recompute in backward, save memory).

Each transformer block of the image encoder (Meta's ViT ``image_encoder.blocks[i]``; the
MBConv and attention blocks of our TinyViT, ``image_encoder.layers[i].blocks[j]``) gets an
instance-level ``forward`` that runs the class's own forward through
``torch.utils.checkpoint.checkpoint(..., use_reentrant=False)``. Only the block's inputs
are kept; its activations are recomputed when backward reaches it.

Why the non-reentrant variant: the reentrant one runs the forward under ``no_grad`` and
rebuilds the graph only inside backward, so a tensor that leaves the block by a side
channel rather than as an output -- Conv-LoRA's gate stores its load-balancing loss on the
``qkv`` layer -- has no gradient. The non-reentrant one records a normal graph and only
drops the saved tensors, so the balance loss trains the gate as without checkpointing.
The RNG state is stashed and restored (``preserve_rng_state``), so the gate's noise and
hence the routing are the same in the recompute, and the autocast state is replayed.

Why patch ``forward`` instead of wrapping the block in a module: a wrapper adds a level to
the module tree, so every key would change (``blocks.0.attn...`` becoming
``blocks.0.block.attn...``) and adapters saved with and without checkpointing would no
longer load into each other; ``torch.distributed``'s ``CheckpointWrapper`` needs
state-dict hooks to hide its prefix for that reason. A ``functools.partial`` of a
module-level function, stored in the block's ``__dict__``, leaves the module tree (hence
``state_dict``, ``named_parameters``, hooks and ``repr``) untouched; ``nn.Module.__call__``
picks it up because an instance attribute shadows the class's ``forward``. It survives
``copy.deepcopy`` (the partial's reference to its block is re-pointed at the copy) and
pickling (the function is importable), and removing it restores the class's forward.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = [
    "checkpointed_blocks",
    "disable_activation_checkpointing",
    "enable_activation_checkpointing",
    "encoder_blocks",
]


def _checkpointed_forward(block: nn.Module, *args: Any, **kwargs: Any) -> Any:
    """Run ``block``'s class forward, through a non-reentrant checkpoint while training.

    Recomputing pays off only where backward would otherwise keep the block's activations:
    in training mode, with grad enabled (``no_grad`` and ``inference_mode`` build no graph),
    and when the block has a trainable parameter or a grad-requiring tensor input (a frozen
    block fed a constant input, e.g. TinyViT's first conv stage under PEFT, saves nothing).
    """
    forward = type(block).forward
    if block.training and torch.is_grad_enabled() and _builds_graph(block, args, kwargs):
        return checkpoint(forward, block, *args, use_reentrant=False, **kwargs)
    return forward(block, *args, **kwargs)


def _builds_graph(block: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether running ``block`` on these inputs would record an autograd graph."""
    inputs = (*args, *kwargs.values())
    if any(isinstance(x, torch.Tensor) and x.requires_grad for x in inputs):
        return True
    return any(p.requires_grad for p in block.parameters())


def _is_checkpointed(block: nn.Module) -> bool:
    forward = block.__dict__.get("forward")
    return isinstance(forward, functools.partial) and forward.func is _checkpointed_forward


def encoder_blocks(model: nn.Module) -> list[nn.Module]:
    """The blocks of a SAM image encoder that activation checkpointing wraps, in order.

    Args:
        model: A model with an ``image_encoder`` child (e.g. ``SamSegmenter``), or the
            image encoder itself.

    Returns:
        ``image_encoder.blocks`` for Meta's ViT; every ``layers[i].blocks[j]`` (the MBConv
        stage's conv blocks and the attention blocks) for TinyViT.

    Raises:
        ValueError: If the encoder has neither layout.

    Example:
        >>> from autoseg.models.segmenter import build_segmenter
        >>> model, _ = build_segmenter("lite_tiny")
        >>> [type(b).__name__ for b in encoder_blocks(model)]
        ['_MBConv', 'TinyViTBlock', 'TinyViTBlock', 'TinyViTBlock']

    """
    encoder = getattr(model, "image_encoder", model)
    blocks = getattr(encoder, "blocks", None)
    if isinstance(blocks, nn.ModuleList):
        return list(blocks)
    layers = getattr(encoder, "layers", None)
    if isinstance(layers, nn.ModuleList):
        stages = [getattr(stage, "blocks", None) for stage in layers]
        if stages and all(isinstance(stage, nn.ModuleList) for stage in stages):
            return [block for stage in stages for block in stage]
    raise ValueError(
        f"no transformer blocks found in {type(encoder).__name__}: expected Meta's ViT "
        "(image_encoder.blocks) or TinyViT (image_encoder.layers[i].blocks)"
    )


def enable_activation_checkpointing(model: nn.Module) -> int:
    """Make every image-encoder block recompute its activations in backward, in place.

    Trades compute (about one more encoder forward per step) for memory: a block keeps only
    its input for backward. Applies in training mode with grad enabled; in eval mode, under
    ``torch.no_grad`` or ``torch.inference_mode`` the blocks run as before. Gradients,
    including the Conv-LoRA balance loss's, equal those without checkpointing (the gate's
    noise is replayed from the saved RNG state). Module tree and ``state_dict`` keys do not
    change, so weights and adapters load across the two settings. Call it before or after
    :func:`~autoseg.peft.apply_peft`; calling it again changes nothing.

    Batch-norm layers in training mode would update their running statistics once more in
    the recompute; ``SamSegmenter`` keeps them in eval mode (the encoder is frozen).

    Args:
        model: A model with an ``image_encoder`` child, or the image encoder itself.

    Returns:
        The number of checkpointed blocks (the same on a repeated call).

    Raises:
        ValueError: If the encoder has no recognised blocks (see :func:`encoder_blocks`).

    Example:
        >>> from autoseg.models.segmenter import build_segmenter
        >>> model, _ = build_segmenter("vit_tiny")
        >>> enable_activation_checkpointing(model)
        2
        >>> enable_activation_checkpointing(model)
        2

    """
    blocks = encoder_blocks(model)
    for block in blocks:
        if not _is_checkpointed(block):
            # Set through __dict__: nn.Module.__setattr__ would do the same for a
            # non-tensor, non-module value, but this states that it is a plain attribute.
            block.__dict__["forward"] = functools.partial(_checkpointed_forward, block)
    return len(blocks)


def disable_activation_checkpointing(model: nn.Module) -> int:
    """Undo :func:`enable_activation_checkpointing`: blocks run their class's forward again.

    Args:
        model: A model with an ``image_encoder`` child, or the image encoder itself.

    Returns:
        The number of blocks that were checkpointed.

    Example:
        >>> from autoseg.models.segmenter import build_segmenter
        >>> model, _ = build_segmenter("vit_tiny")
        >>> enable_activation_checkpointing(model)
        2
        >>> disable_activation_checkpointing(model), checkpointed_blocks(model)
        (2, 0)

    """
    restored = 0
    for block in encoder_blocks(model):
        if _is_checkpointed(block):
            del block.__dict__["forward"]
            restored += 1
    return restored


def checkpointed_blocks(model: nn.Module) -> int:
    """Count the image-encoder blocks that currently checkpoint their activations.

    Args:
        model: A model with an ``image_encoder`` child, or the image encoder itself.

    Returns:
        How many of :func:`encoder_blocks` are checkpointed.

    Example:
        >>> from autoseg.models.segmenter import build_segmenter
        >>> model, _ = build_segmenter("lite_tiny")
        >>> checkpointed_blocks(model), enable_activation_checkpointing(model)
        (0, 4)

    """
    return sum(_is_checkpointed(block) for block in encoder_blocks(model))
