"""TinyViT image encoder as used by LiteMedSAM (and, with a strided stem, MobileSAM).

The module tree mirrors the published LiteMedSAM state_dict (``patch_embed.seq.*``,
``layers.i.blocks.j.*``, ``layers.i.downsample.*``, ``neck.*``) so its weights load strictly.
Layout differs from Meta's ViT in two ways worth knowing:

* feature maps travel between stages as (B, C, H, W); attention stages work on (B, H, W, C)
  and feed ``attn.qkv`` (a plain ``nn.Linear``) a token sequence of whole square windows,
  (B * windows, window * window, C), zero-padding the map to whole windows first;
* ``qkv``'s output is grouped per head, ``[q_h, k_h, v_h]`` for each head in turn, not
  ``[Q, K, V]`` across heads as in Meta's ViT.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from segment_anything.modeling.common import LayerNorm2d
from torch import nn

__all__ = ["ConvBN", "TinyViT", "TinyViTBlock", "WindowAttention"]


class ConvBN(nn.Sequential):
    """Bias-free ``Conv2d`` (child ``c``) followed by ``BatchNorm2d`` (child ``bn``).

    With the batch norm in eval mode (a ``SamSegmenter`` keeps it there, see its ``train``)
    it is a per-channel affine map, so it is folded into the conv's weight and bias: one
    conv instead of a conv and a pass over its output, the same result to float rounding.

    Example:
        >>> ConvBN(3, 8, kernel_size=3, stride=2, padding=1)(torch.zeros(1, 3, 8, 8)).shape
        torch.Size([1, 8, 4, 4])

    """

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        kernel_size: int = 1,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
        bn_weight_init: float = 1.0,
    ) -> None:
        super().__init__()
        self.c = nn.Conv2d(
            in_chans, out_chans, kernel_size, stride, padding, groups=groups, bias=False
        )
        self.bn = nn.BatchNorm2d(out_chans)
        nn.init.constant_(self.bn.weight, bn_weight_init)
        nn.init.zeros_(self.bn.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Conv then batch norm; folded into one conv while the batch norm is in eval mode."""
        bn, conv, after = self.bn, self.c, None
        wrapped = getattr(bn, "base", None)
        if not isinstance(bn, nn.BatchNorm2d) and isinstance(wrapped, nn.BatchNorm2d):
            # An adapter around the norm (SSF's layer) transforms its output: fold the norm
            # and apply the adapter's own transform after.
            bn, after = wrapped, getattr(self.bn, "scale_shift", None)
        foldable = type(bn) is nn.BatchNorm2d and not bn.training and bn.running_var is not None
        if not foldable or (bn is not self.bn and after is None):
            return super().forward(x)
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
        weight = conv.weight * scale.view(-1, 1, 1, 1)
        bias = bn.bias - bn.running_mean * scale
        y = F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
        return y if after is None else after(y)


class _PatchEmbed(nn.Module):
    """Two Conv-BN layers with a GELU between; stride 1 uses 1x1 kernels (LiteMedSAM)."""

    def __init__(self, in_chans: int, dim: int, stride: int) -> None:
        super().__init__()
        kernel, pad = (1, 0) if stride == 1 else (3, 1)
        self.seq = nn.Sequential(
            ConvBN(in_chans, dim // 2, kernel, stride, pad),
            nn.GELU(),
            ConvBN(dim // 2, dim, kernel, stride, pad),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class _MBConv(nn.Module):
    """Inverted residual: expand 1x1, depthwise 3x3, project 1x1, add, GELU."""

    def __init__(self, dim: int, expand_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = ConvBN(dim, hidden)
        self.conv2 = ConvBN(hidden, hidden, 3, 1, 1, groups=hidden)
        # Zero-init of the last BN makes a freshly built block an identity map (plus GELU).
        self.conv3 = ConvBN(hidden, dim, bn_weight_init=0.0)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.conv1(x))
        y = self.act(self.conv2(y))
        return self.act(x + self.conv3(y))


class _PatchMerging(nn.Module):
    """Change width (1x1), downsample (depthwise 3x3, ``stride``), mix (1x1)."""

    def __init__(self, dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.conv1 = ConvBN(dim, out_dim)
        self.conv2 = ConvBN(out_dim, out_dim, 3, stride, 1, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))
        return self.conv3(x)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside one square window, with a learned offset bias.

    The bias is one scalar per head and per absolute (dy, dx) offset between two window
    cells; ``attention_bias_idxs`` maps every cell pair to its offset index
    ``|dy| * window + |dx|``. The index is rebuilt from the window size, so it is kept out
    of the state_dict.

    ``kernel`` picks the computation: ``"mask"`` hands the bias to
    ``F.scaled_dot_product_attention`` as an additive mask, so the (windows, heads, N, N)
    probabilities are never stored; ``"explicit"`` is ``softmax(q k^T * scale + bias) v``
    written out, the reference; ``"auto"`` (the default) is ``"explicit"`` in training mode
    on the CPU and ``"mask"`` otherwise: on the CPU the fused kernel's forward is the
    fastest and its backward the slowest of the two (LiteMedSAM 256 px, bf16, 2 threads:
    about 0.96 s against 1.42 s per Conv-LoRA training step). The two agree to float
    rounding. :func:`~autoseg.models.attention.set_attention_kernel` switches a whole
    model.

    Example:
        >>> attn = WindowAttention(dim=32, num_heads=2, window_size=4)
        >>> attn(torch.zeros(5, 16, 32)).shape
        torch.Size([5, 16, 32])

    """

    KERNELS = ("auto", "mask", "explicit")
    kernel: str = "auto"

    def __init__(self, dim: int, num_heads: int, window_size: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.window_size = window_size
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window_size**2))
        self.register_buffer("attention_bias_idxs", _offset_index(window_size), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attend within each window: (B', window*window, C) -> same shape."""
        b, n, c = x.shape
        qkv = self.qkv(self.norm(x)).view(b, n, self.num_heads, 3 * self.head_dim)
        q, k, v = qkv.transpose(1, 2).split(self.head_dim, dim=-1)
        bias = self.attention_biases[:, self.attention_bias_idxs].to(q.dtype)
        if self.kernel == "explicit" or (
            self.kernel == "auto" and self.training and x.device.type == "cpu"
        ):
            logits = (q * self.head_dim**-0.5) @ k.transpose(-2, -1) + bias
            out = logits.softmax(dim=-1) @ v
        else:
            # 4-D, not (heads, N, N): SDPA's fused CPU kernel refuses a 3-D mask and falls
            # back to its math path, 6x slower on 7 x 7 windows (measured, torch 2.14).
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias[None])
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


def _offset_index(window: int) -> torch.Tensor:
    """Index (window^2, window^2) of the offset ``|dy| * window + |dx|`` between two cells."""
    cells = torch.arange(window * window)
    rows, cols = cells // window, cells % window
    dy = (rows[:, None] - rows[None, :]).abs()
    dx = (cols[:, None] - cols[None, :]).abs()
    return dy * window + dx


class _FeedForward(nn.Module):
    """Pre-norm MLP: LayerNorm, Linear, GELU, Linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """Windowed attention, depthwise 3x3 conv, MLP; works on (B, H, W, C) maps.

    Example:
        >>> block = TinyViTBlock(dim=32, num_heads=2, window_size=4)
        >>> block(torch.zeros(1, 6, 6, 32)).shape
        torch.Size([1, 6, 6, 32])

    """

    def __init__(self, dim: int, num_heads: int, window_size: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.window_size = window_size
        self.attn = WindowAttention(dim, num_heads, window_size)
        self.local_conv = ConvBN(dim, dim, 3, 1, 1, groups=dim)
        self.mlp = _FeedForward(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Transform a (B, H, W, C) map; H and W need not be multiples of the window."""
        x = x + self._attend_windows(x)
        x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + self.mlp(x)

    def _attend_windows(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        win = self.window_size
        pad_h, pad_w = -h % win, -w % win
        # Padding happens before the attention's LayerNorm and the padded cells are not
        # masked: that is what the pretrained weights saw, even at the native size.
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        nh, nw = (h + pad_h) // win, (w + pad_w) // win
        windows = x.view(b, nh, win, nw, win, c).transpose(2, 3).reshape(-1, win * win, c)
        out = self.attn(windows).view(b, nh, nw, win, win, c).transpose(2, 3)
        return out.reshape(b, nh * win, nw * win, c)[:, :h, :w]


class _ConvStage(nn.Module):
    def __init__(
        self, dim: int, depth: int, expand_ratio: float, downsample: nn.Module | None
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(_MBConv(dim, expand_ratio) for _ in range(depth))
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class _AttentionStage(nn.Module):
    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        downsample: nn.Module | None,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TinyViTBlock(dim, num_heads, window_size, mlp_ratio) for _ in range(depth)
        )
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        for block in self.blocks:
            x = block(x)
        x = x.permute(0, 3, 1, 2)
        return x if self.downsample is None else self.downsample(x)


class TinyViT(nn.Module):
    """Hierarchical TinyViT encoder with SAM's neck: (B, 3, S, S) -> (B, out_chans, h, w).

    Stage 0 is MBConv blocks; later stages are windowed-attention blocks. A patch-merging
    layer follows every stage but the last, with ``merge_strides[i]`` as its stride, so the
    output stride is ``stem_stride * prod(merge_strides)`` (4 for LiteMedSAM). Any input size
    divisible by that stride works: attention pads each map to whole windows.

    Args:
        img_size: nominal input size (recorded only; the forward accepts other sizes).
        embed_dims: width of each stage.
        depths: blocks per stage.
        num_heads: attention heads per stage (the entry for stage 0 is unused).
        window_sizes: attention window per stage (the entry for stage 0 is unused).
        mlp_ratio: MLP hidden width over block width.
        mbconv_expand_ratio: MBConv hidden width over block width.
        stem_stride: 1 for LiteMedSAM's 1x1 stem, 2 for MobileSAM's 3x3 stride-2 stem.
        merge_strides: stride of each patch merging (one fewer than stages).
        in_chans: input channels.
        out_chans: channels of the output embedding (SAM's prompt dimension).

    Example:
        >>> enc = TinyViT(64, embed_dims=(16, 32, 32, 64), depths=(1, 1, 1, 1),
        ...               num_heads=(1, 2, 2, 2), window_sizes=(5, 5, 4, 3), out_chans=32)
        >>> enc(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 32, 16, 16])

    """

    def __init__(
        self,
        img_size: int,
        embed_dims: Sequence[int] = (64, 128, 160, 320),
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (2, 4, 5, 10),
        window_sizes: Sequence[int] = (7, 7, 14, 7),
        mlp_ratio: float = 4.0,
        mbconv_expand_ratio: float = 4.0,
        stem_stride: int = 1,
        merge_strides: Sequence[int] = (2, 2, 1),
        in_chans: int = 3,
        out_chans: int = 256,
    ) -> None:
        super().__init__()
        n = len(embed_dims)
        per_stage = (len(depths), len(num_heads), len(window_sizes))
        if per_stage != (n, n, n) or len(merge_strides) != n - 1:
            raise ValueError(
                "embed_dims, depths, num_heads, window_sizes need one entry per "
                "stage and merge_strides one fewer"
            )
        self.img_size = img_size
        # Both stem convs carry the stem stride.
        self.stride = stem_stride**2 * math.prod(merge_strides)
        self.patch_embed = _PatchEmbed(in_chans, embed_dims[0], stem_stride)
        self.layers = nn.ModuleList()
        for i in range(n):
            merge = None
            if i < n - 1:
                merge = _PatchMerging(embed_dims[i], embed_dims[i + 1], merge_strides[i])
            if i == 0:
                stage = _ConvStage(embed_dims[0], depths[0], mbconv_expand_ratio, merge)
            else:
                stage = _AttentionStage(
                    embed_dims[i], depths[i], num_heads[i], window_sizes[i], mlp_ratio, merge
                )
            self.layers.append(stage)
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )
        self.apply(_init_linear)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed images (B, C, S, S) into (B, out_chans, S / stride, S / stride)."""
        cache = self.__dict__.get("prefix_cache")  # see autoseg.models.prefix_cache
        x = self.forward_prefix(x) if cache is None else cache(self.forward_prefix, x)
        for stage in self.layers[1:]:
            x = stage(x)
        return self.neck(x)

    def forward_prefix(self, x: torch.Tensor) -> torch.Tensor:
        """The patch embedding and conv stage 0 (with its patch merging): no adapters there."""
        return self.layers[0](self.patch_embed(x))


def _init_linear(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
