"""The ``vpt`` method: deep visual prompt tuning (Jia et al., "Visual Prompt Tuning", ECCV 2022).

VPT-deep inserts ``T`` learnable prompt tokens into the input of every transformer block and
drops the block's outputs at the prompt positions (the next block gets its own prompts). A
prompt's own output is discarded, so its whole effect on the image tokens is through the
keys and values it adds to the block's attention; :class:`PromptedBlock` computes exactly
that: the prompts pass through the block's ``norm1`` and ``qkv`` like tokens, and only the
image tokens are queries.

SAM's blocks attend over (B, H, W, C) grids, most of them in 14 x 14 windows. The same
per-block prompts are appended to the key/value sequence of *every* window (and of the whole
grid in the global blocks), as VPT does for Swin's windows: a window attends to its own
tokens and to the block's ``T`` prompts. Prompt keys get no relative-position bias (they have
no grid position), so the image-to-image logits keep SAM's decomposed rel-pos terms and the
image-to-prompt logits are the plain scaled dot products.

TinyViT (LiteMedSAM) works the same way in its attention stages
(:class:`PromptedTinyViTBlock`): each window's keys and values gain the block's prompts,
which get a zero offset bias (TinyViT's learned bias table has no entry for them); its
first, convolutional stage has no attention and gets no prompts.

VPT cannot start equal to the base model: any prompt, however small, takes part of every
softmax. The prompts are initialised as in the paper's code, uniform in ``+-sqrt(6 / (3 *
patch^2 + C))`` (Xavier for a patch-embedding-shaped tensor), without a zero-init gate.
Since they pass through the block's LayerNorm, only their direction matters, not their scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import Block, window_partition, window_unpartition
from torch import nn

from autoseg.errors import SettingsError
from autoseg.models.attention import rel_pos_logits
from autoseg.models.tiny_vit import TinyViT, TinyViTBlock, WindowAttention
from autoseg.peft.lora import adapter_dtype
from autoseg.peft.registry import PeftConfig, register_peft_method
from autoseg.rules import setting

__all__ = [
    "PromptedBlock",
    "PromptedTinyViTBlock",
    "VPTConfig",
    "apply_vpt",
    "prompted_attention",
    "prompted_window_attention",
    "vit_encoder",
]


@dataclass
class VPTConfig(PeftConfig):
    """VPT-deep's settings: ``num_tokens`` prompts per block.

    VPT searches the prompt length per task ({1, 5, 10, 50, 100, 200}); 12 reproduces the
    Conv-LoRA paper's VPT row: on ViT-H, ``depth * T * C = 32 * 12 * 1280 = 491,520``
    prompt parameters plus the 3,505,536 of the mask decoder make 3,997,056 = 4.00 M.

    Example:
        >>> VPTConfig().to_dict()
        {'method': 'vpt', 'num_tokens': 12}

    """

    method: ClassVar[str] = "vpt"
    num_tokens: int = setting(12, at_least=1)


def vit_encoder(model: nn.Module, method: str, why: str) -> nn.Module:
    """``model.image_encoder`` if it is a SAM ViT (it has ``blocks``, ``patch_embed``, ``neck``).

    Raises:
        SettingsError: the encoder is TinyViT (``why`` says why the method needs a ViT).
        ValueError: the encoder is something else.

    """
    encoder = model.image_encoder
    if isinstance(encoder, TinyViT):
        raise SettingsError(
            f"peft.method={method!r} is not available for the TinyViT backbone "
            f"(LiteMedSAM, lite_*): {why}. Choose a SAM ViT backbone (model.backbone=vit_b, "
            "vit_l or vit_h) or another peft.method (e.g. conv_lora or lora)."
        )
    if not all(hasattr(encoder, name) for name in ("blocks", "patch_embed", "neck")):
        raise ValueError(f"{method} needs a SAM ViT image encoder, got {type(encoder).__name__}")
    return encoder


def _grid_indicators(height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """One-hot (H * W, H + W): token ``i``'s row ``i // W``, then its column ``i % W``."""
    factory = {"dtype": like.dtype, "device": like.device}
    rows = torch.eye(height, **factory).repeat_interleave(width, dim=0)
    cols = torch.eye(width, **factory).repeat(height, 1)
    return torch.cat([rows, cols], dim=-1)


def prompted_attention(attn: nn.Module, x: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
    """SAM's rel-pos attention over a token map with ``T`` extra key/value tokens.

    Always one ``F.scaled_dot_product_attention`` call (the rel-pos bias folded into q/k as
    in :class:`~autoseg.models.attention.FusedAttention`'s ``"augmented"`` kernel), whatever
    ``attn.kernel`` says; the parity test writes it out against Meta's explicit formula.

    Args:
        attn: A SAM ViT attention module (``qkv``, ``proj``, ``num_heads``, ``scale``,
            ``use_rel_pos`` and, with rel-pos, ``rel_pos_h``/``rel_pos_w``).
        x: ``(B, H, W, C)`` map (one window or the whole grid), already normalised.
        prompts: ``(T, C)`` normalised prompt tokens, shared by the whole batch.

    Returns:
        ``(B, H, W, C)``: the image tokens' outputs; the prompts are keys and values only.

    """
    batch, height, width, _ = x.shape
    heads = attn.num_heads
    qkv = attn.qkv(x).reshape(batch, height * width, 3, heads, -1)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, heads, N, d)
    head_dim = q.shape[-1]
    prompt_kv = attn.qkv(prompts).reshape(-1, 3, heads, head_dim).permute(1, 2, 0, 3)
    prompt_k, prompt_v = (t.to(q.dtype).expand(batch, -1, -1, -1) for t in prompt_kv[1:])
    scale = attn.scale
    if attn.use_rel_pos:
        # The bias as extra q/k columns (FusedAttention's "augmented" kernel): prompt keys
        # get zero columns, i.e. no rel-pos bias, and no N x N tensor is built.
        rel_h, rel_w = rel_pos_logits(q, attn.rel_pos_h, attn.rel_pos_w, (height, width))
        q = torch.cat([q * scale, rel_h, rel_w], dim=-1)
        k = torch.cat([k, _grid_indicators(height, width, k).expand(*k.shape[:-1], -1)], -1)
        prompt_k = F.pad(prompt_k, (0, height + width))
        scale = 1.0
    keys = torch.cat([k, prompt_k], dim=2)
    values = F.pad(torch.cat([v, prompt_v], dim=2), (0, q.shape[-1] - head_dim))
    out = F.scaled_dot_product_attention(q, keys, values, scale=scale)[..., :head_dim]
    return attn.proj(out.transpose(1, 2).reshape(batch, height, width, -1))


def new_prompts(num_tokens: int, like: torch.Tensor, patch_size: int) -> nn.Parameter:
    """``(T, C)`` prompts, uniform in VPT's ``+-sqrt(6 / (3 * patch^2 + C))``.

    ``like`` is a ``(C,)`` weight of the block (its width, device and dtype are read).
    """
    if num_tokens < 1:
        raise ValueError(f"num_tokens must be >= 1, got {num_tokens}")
    dim = like.shape[0]
    factory = {"device": like.device, "dtype": adapter_dtype(like.dtype)}
    prompts = nn.Parameter(torch.empty(num_tokens, dim, **factory))
    bound = math.sqrt(6.0 / (3 * patch_size**2 + dim))
    nn.init.uniform_(prompts, -bound, bound)
    return prompts


class PromptedBlock(nn.Module):
    """A frozen SAM ViT block whose attention also sees this block's ``T`` prompt tokens.

    Computes Meta's ``Block.forward`` with :func:`prompted_attention` in place of the
    attention call: every window (or the global grid) attends to its tokens and the prompts.

    Args:
        base: The block to wrap; frozen in place and kept as ``self.base``.
        num_tokens: Prompt length ``T``.
        patch_size: The encoder's patch size, for the paper's uniform init bound.

    Example:
        >>> block = Block(dim=32, num_heads=2, use_rel_pos=True, window_size=2,
        ...               input_size=(2, 2))
        >>> prompted = PromptedBlock(block, num_tokens=3)
        >>> prompted(torch.randn(1, 4, 4, 32)).shape
        torch.Size([1, 4, 4, 32])
        >>> [n for n, p in prompted.named_parameters() if p.requires_grad]
        ['prompts']

    """

    def __init__(self, base: Block, num_tokens: int = 12, patch_size: int = 16) -> None:
        super().__init__()
        if not isinstance(base, Block):
            raise TypeError(f"PromptedBlock wraps a SAM ViT Block, got {type(base).__name__}")
        self.base = base.requires_grad_(False)
        self.prompts = new_prompts(num_tokens, base.norm1.weight, patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Transform a ``(B, H, W, C)`` map like the base block, with prompts in attention."""
        block = self.base
        shortcut = x
        x = block.norm1(x)
        prompts = block.norm1(self.prompts.to(x.dtype))
        window = block.window_size
        if window > 0:
            height, width = x.shape[1], x.shape[2]
            x, pad_hw = window_partition(x, window)
        x = prompted_attention(block.attn, x, prompts)
        if window > 0:
            x = window_unpartition(x, window, pad_hw, (height, width))
        x = shortcut + x
        return x + block.mlp(block.norm2(x))

    def extra_repr(self) -> str:
        """Prompt length next to the module tree in ``print(model)``."""
        return f"num_tokens={self.prompts.shape[0]}"


def prompted_window_attention(
    attn: WindowAttention, windows: torch.Tensor, prompts: torch.Tensor
) -> torch.Tensor:
    """TinyViT's window attention with ``T`` extra key/value tokens (zero offset bias).

    Args:
        attn: A TinyViT :class:`~autoseg.models.tiny_vit.WindowAttention`.
        windows: ``(B', window * window, C)`` token windows (not yet normalised).
        prompts: ``(T, C)`` prompt tokens (normalised here by the attention's own norm).

    Returns:
        ``(B', window * window, C)``: the window tokens' outputs.

    """
    b, n, c = windows.shape
    heads, head_dim = attn.num_heads, attn.head_dim
    qkv = attn.qkv(attn.norm(windows)).view(b, n, heads, 3 * head_dim)
    q, k, v = qkv.transpose(1, 2).split(head_dim, dim=-1)
    prompt_qkv = attn.qkv(attn.norm(prompts)).view(-1, heads, 3 * head_dim).transpose(0, 1)
    _, prompt_k, prompt_v = (
        t.to(q.dtype).expand(b, -1, -1, -1) for t in prompt_qkv.split(head_dim, dim=-1)
    )
    bias = attn.attention_biases[:, attn.attention_bias_idxs].to(q.dtype)
    bias = F.pad(bias, (0, prompts.shape[0]))  # the learned offset bias has no prompt entry
    bias = bias[None]  # a 3-D mask would push SDPA off its fused CPU kernel (see tiny_vit)
    keys, values = torch.cat([k, prompt_k], dim=2), torch.cat([v, prompt_v], dim=2)
    out = F.scaled_dot_product_attention(q, keys, values, attn_mask=bias)
    return attn.proj(out.transpose(1, 2).reshape(b, n, c))


class PromptedTinyViTBlock(nn.Module):
    """A frozen TinyViT attention block whose windows also attend to ``T`` prompt tokens.

    The same per-block prompts join every window's keys and values, with a zero offset bias
    (as for Swin in the VPT paper); the depthwise conv and the MLP are the base block's.

    Args:
        base: The block to wrap; frozen in place and kept as ``self.base``.
        num_tokens: Prompt length ``T``.
        patch_size: For the uniform init bound: the encoder's total stride (4 in LiteMedSAM).

    Example:
        >>> block = PromptedTinyViTBlock(TinyViTBlock(dim=32, num_heads=2, window_size=4), 3)
        >>> block(torch.zeros(1, 6, 6, 32)).shape
        torch.Size([1, 6, 6, 32])

    """

    def __init__(self, base: TinyViTBlock, num_tokens: int = 12, patch_size: int = 4) -> None:
        super().__init__()
        if not isinstance(base, TinyViTBlock):
            raise TypeError(f"PromptedTinyViTBlock wraps a TinyViTBlock, got {type(base)}")
        self.base = base.requires_grad_(False)
        self.prompts = new_prompts(num_tokens, base.attn.norm.weight, patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Transform a ``(B, H, W, C)`` map like the base block, with prompts in attention."""
        block = self.base
        x = x + self._attend_windows(x)
        x = block.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + block.mlp(x)

    def _attend_windows(self, x: torch.Tensor) -> torch.Tensor:
        """``TinyViTBlock._attend_windows`` with :func:`prompted_window_attention`."""
        b, h, w, c = x.shape
        win = self.base.window_size
        pad_h, pad_w = -h % win, -w % win
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        nh, nw = (h + pad_h) // win, (w + pad_w) // win
        windows = x.view(b, nh, win, nw, win, c).transpose(2, 3).reshape(-1, win * win, c)
        out = prompted_window_attention(self.base.attn, windows, self.prompts.to(x.dtype))
        out = out.view(b, nh, nw, win, win, c).transpose(2, 3)
        return out.reshape(b, nh * win, nw * win, c)[:, :h, :w]

    def extra_repr(self) -> str:
        """Prompt length next to the module tree in ``print(model)``."""
        return f"num_tokens={self.prompts.shape[0]}"


def apply_vpt(model: nn.Module, config: VPTConfig) -> None:
    """Wrap every attention block of the image encoder in a prompted block, in place.

    SAM ViT: every ``blocks[i]`` becomes a :class:`PromptedBlock`. TinyViT: every attention
    block becomes a :class:`PromptedTinyViTBlock` (the first stage's MBConv blocks have no
    attention to prompt).

    Raises:
        ValueError: an encoder with neither layout, or one already prompted.

    """
    encoder = model.image_encoder
    tokens = config.num_tokens
    if isinstance(encoder, TinyViT):
        stages = [stage.blocks for stage in encoder.layers]
        if any(isinstance(b, PromptedTinyViTBlock) for blocks in stages for b in blocks):
            raise ValueError("the TinyViT blocks are already prompted (adapted twice?)")
        for blocks in stages:
            for i, block in enumerate(blocks):
                if isinstance(block, TinyViTBlock):
                    blocks[i] = PromptedTinyViTBlock(block, tokens, encoder.stride)
        return
    blocks = getattr(encoder, "blocks", None)
    if not isinstance(blocks, nn.ModuleList) or not hasattr(encoder, "patch_embed"):
        raise ValueError(f"vpt needs a SAM ViT or TinyViT encoder, got {type(encoder).__name__}")
    if not all(isinstance(block, Block) for block in blocks):
        raise ValueError("the image encoder's blocks are not plain SAM ViT blocks (adapted?)")
    patch_size = encoder.patch_embed.proj.kernel_size[0]
    for i, block in enumerate(blocks):
        blocks[i] = PromptedBlock(block, tokens, patch_size)


register_peft_method("vpt", VPTConfig, PromptedBlock, apply_vpt, position=5)
