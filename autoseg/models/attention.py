"""Fused attention for SAM's ViT encoder blocks: ``F.scaled_dot_product_attention``.

Meta's ``Attention`` materialises every (B * heads, N, N) map, adds the decomposed
relative-position bias ``rel_h + rel_w`` and softmaxes it; backward keeps the probabilities.
:class:`FusedAttention` keeps its parameters (``qkv``, ``proj``, ``rel_pos_h``,
``rel_pos_w``, same names and shapes, so checkpoints load strictly) and its token-map
interface (``qkv`` still sees the (B, H, W, C) map, as Conv-LoRA needs), and computes
the same function with one of these kernels (:data:`KERNELS`):

``"augmented"`` (the default)
    The bias folded into the dot product: q gets the per-query logits ``rel_h`` and
    ``rel_w`` as extra columns, k gets the matching one-hot row and column indicators, so
    ``q' k'^T = scale * q k^T + rel_h + rel_w`` and SDPA runs without a mask: no N x N
    tensor exists and flash kernels apply. v is zero-padded to the widened head (the CPU
    flash kernel wants equal widths). The dot products grow from ``d`` to ``d + H + W``
    columns (3x for ViT-B's global blocks), so its forward is slower than the mask's, but
    forward + backward runs fused and needs about 5x less memory than ``"explicit"``, and
    it takes the same kernel with grad enabled or not.
``"mask"``
    ``rel_h + rel_w`` broadcast into one additive ``attn_mask`` per (batch, head), then SDPA.
    The fastest forward on a CPU. But the bias needs a gradient whenever q has one, and
    no fused CPU kernel takes a grad-requiring mask: training falls back to SDPA's math
    path, which stores the probabilities and the (B, heads, N, N) bias; and the two paths
    differ in the last bits, so one model would give eval outputs that depend on grad mode.
``"explicit"``
    Meta's own forward, unchanged (the reference).

``benchmarks/bench_attention.py`` measures the three; its table is in
``benchmarks/README.md``. :func:`set_attention_kernel` switches a whole model, TinyViT's
:class:`~autoseg.models.tiny_vit.WindowAttention` included (``"mask"`` or ``"explicit"``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import Attention, get_rel_pos
from torch import nn

__all__ = [
    "DEFAULT_KERNEL",
    "KERNELS",
    "FusedAttention",
    "fuse_vit_attention",
    "rel_pos_logits",
    "set_attention_kernel",
]

KERNELS = ("augmented", "mask", "explicit")
DEFAULT_KERNEL = "augmented"


def rel_pos_logits(
    q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """SAM's decomposed rel-pos logits of each query over key rows and key columns.

    Args:
        q: Queries (..., H * W, d), unscaled, in row-major grid order.
        rel_pos_h: Height table (L_h, d); resampled to ``2 * H - 1`` as Meta's ``get_rel_pos``.
        rel_pos_w: Width table (L_w, d).
        size: The (H, W) token grid (queries and keys share it).

    Returns:
        ``rel_h`` (..., H * W, H) and ``rel_w`` (..., H * W, W): the bias of query ``i``
        towards key ``j`` is ``rel_h[i, row(j)] + rel_w[i, col(j)]``.

    Example:
        >>> rel_h, rel_w = rel_pos_logits(torch.ones(2, 6, 4), torch.ones(3, 4),
        ...                               torch.ones(5, 4), (2, 3))
        >>> rel_h.shape, rel_w.shape, rel_h[0, 0, 0].item()
        (torch.Size([2, 6, 2]), torch.Size([2, 6, 3]), 4.0)

    """
    height, width = size
    table_h = get_rel_pos(height, height, rel_pos_h).to(q.dtype)  # (H, H, d)
    table_w = get_rel_pos(width, width, rel_pos_w).to(q.dtype)  # (W, W, d)
    grid = q.unflatten(-2, (height, width))  # (..., H, W, d)
    rel_h = torch.einsum("...hwc,hkc->...hwk", grid, table_h)
    rel_w = torch.einsum("...hwc,wkc->...hwk", grid, table_w)
    return rel_h.flatten(-3, -2), rel_w.flatten(-3, -2)


def _indicators(size: tuple[int, int], like: torch.Tensor) -> torch.Tensor:
    """One-hot key columns (H * W, H + W): key ``j``'s row, then its column."""
    height, width = size
    rows = torch.arange(height, device=like.device).repeat_interleave(width)
    cols = torch.arange(width, device=like.device).repeat(height)
    eye_h = torch.eye(height, dtype=like.dtype, device=like.device)
    eye_w = torch.eye(width, dtype=like.dtype, device=like.device)
    return torch.cat([eye_h[rows], eye_w[cols]], dim=-1)


class FusedAttention(Attention):
    """Meta's rel-pos ``Attention`` computed by ``scaled_dot_product_attention``.

    Build it from an existing block's attention with :meth:`from_attention` (the
    parameters are taken over, not copied), or like Meta's class. ``kernel`` picks the
    computation, one of :data:`KERNELS`; all three give the same result and gradients.

    Example:
        >>> attn = FusedAttention(32, num_heads=2, use_rel_pos=True, input_size=(4, 4))
        >>> x = torch.randn(3, 4, 4, 32)
        >>> out = attn(x)
        >>> attn.kernel = "explicit"
        >>> out.shape, torch.allclose(out, attn(x), atol=1e-6)
        (torch.Size([3, 4, 4, 32]), True)

    """

    kernel: str = DEFAULT_KERNEL

    @classmethod
    def from_attention(cls, attn: Attention, kernel: str = DEFAULT_KERNEL) -> FusedAttention:
        """A fused twin of ``attn`` that owns ``attn``'s very parameters and submodules.

        Nothing is allocated or initialised (it works on the meta device), and the
        state-dict keys, their order and their shapes are ``attn``'s.

        Example:
            >>> meta = Attention(64, num_heads=4, use_rel_pos=True, input_size=(14, 14))
            >>> fused = FusedAttention.from_attention(meta)
            >>> fused.qkv is meta.qkv, list(fused.state_dict()) == list(meta.state_dict())
            (True, True)

        """
        fused = cls.__new__(cls)
        nn.Module.__init__(fused)
        fused.num_heads = attn.num_heads
        fused.scale = attn.scale
        fused.use_rel_pos = attn.use_rel_pos
        fused.qkv = attn.qkv
        fused.proj = attn.proj
        if attn.use_rel_pos:
            fused.rel_pos_h = attn.rel_pos_h
            fused.rel_pos_w = attn.rel_pos_w
        fused.kernel = _checked(kernel, KERNELS)
        return fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attend over a (B, H, W, C) token map (a window or the whole grid)."""
        if self.kernel == "explicit":
            return super().forward(x)
        batch, height, width, _ = x.shape
        qkv = self.qkv(x).reshape(batch, height * width, 3, self.num_heads, -1)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, heads, N, d) each
        if not self.use_rel_pos:
            out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        elif _checked(self.kernel, KERNELS) == "augmented":
            out = self._augmented(q, k, v, (height, width))
        else:
            out = self._masked(q, k, v, (height, width))
        out = out.transpose(1, 2).reshape(batch, height, width, -1)
        return self.proj(out)

    def _masked(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, size: tuple[int, int]
    ) -> torch.Tensor:
        """Route A: ``rel_h + rel_w`` as one additive (B, heads, N, N) mask."""
        rel_h, rel_w = rel_pos_logits(q, self.rel_pos_h, self.rel_pos_w, size)
        height, width = size
        bias = rel_h.unsqueeze(-1) + rel_w.unsqueeze(-2)  # (B, heads, N, H, W)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias.flatten(-2), scale=self.scale)

    def _augmented(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, size: tuple[int, int]
    ) -> torch.Tensor:
        """Route B: the bias as extra q/k columns, so SDPA runs without any mask."""
        rel_h, rel_w = rel_pos_logits(q, self.rel_pos_h, self.rel_pos_w, size)
        head_dim = q.shape[-1]
        q_wide = torch.cat([q * self.scale, rel_h, rel_w], dim=-1)
        ones = _indicators(size, k).expand(*k.shape[:-1], -1)
        k_wide = torch.cat([k, ones], dim=-1)
        v_wide = F.pad(v, (0, q_wide.shape[-1] - head_dim))
        out = F.scaled_dot_product_attention(q_wide, k_wide, v_wide, scale=1.0)
        return out[..., :head_dim]


def fuse_vit_attention(encoder: nn.Module, kernel: str = DEFAULT_KERNEL) -> int:
    """Swap every Meta ``Attention`` under ``encoder`` for a :class:`FusedAttention`.

    Args:
        encoder: Meta's ``ImageEncoderViT`` (or any module holding its blocks).
        kernel: One of :data:`KERNELS`.

    Returns:
        How many attention modules were swapped (already fused ones are left alone).

    Example:
        >>> from segment_anything.modeling import ImageEncoderViT
        >>> enc = ImageEncoderViT(img_size=64, embed_dim=32, depth=2, num_heads=2,
        ...                       use_rel_pos=True, window_size=2, global_attn_indexes=(1,))
        >>> fuse_vit_attention(enc), type(enc.blocks[1].attn).__name__
        (2, 'FusedAttention')

    """
    _checked(kernel, KERNELS)
    swapped = 0
    for parent in list(encoder.modules()):
        for name, child in parent.named_children():
            if isinstance(child, Attention) and not isinstance(child, FusedAttention):
                setattr(parent, name, FusedAttention.from_attention(child, kernel))
                swapped += 1
    return swapped


def set_attention_kernel(model: nn.Module, kernel: str) -> int:
    """Switch every fused attention module under ``model`` to ``kernel``.

    SAM ViT blocks (:class:`FusedAttention`) take any of :data:`KERNELS`; TinyViT's
    ``WindowAttention`` (its bias is a learned table, not rel-pos logits) takes ``"mask"``
    and ``"explicit"`` and is left as it is for ``"augmented"``.

    Args:
        model: Any module, e.g. a ``SamSegmenter`` or an image encoder.
        kernel: One of :data:`KERNELS`.

    Returns:
        How many modules were switched.

    Example:
        >>> attn = FusedAttention(32, num_heads=2, use_rel_pos=True, input_size=(4, 4))
        >>> set_attention_kernel(nn.Sequential(attn), "augmented"), attn.kernel
        (1, 'augmented')

    """
    _checked(kernel, KERNELS)
    switched = 0
    for module in model.modules():
        kernels = getattr(type(module), "KERNELS", None)
        if isinstance(module, FusedAttention) or (kernels is not None and kernel in kernels):
            module.kernel = kernel
            switched += 1
    return switched


def _checked(kernel: str, allowed: tuple[str, ...]) -> str:
    if kernel not in allowed:
        raise ValueError(f"attention kernel must be one of {allowed}, got {kernel!r}")
    return kernel
