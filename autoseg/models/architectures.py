"""The shapes of SAM's parts, apart from any weights: ViT and TinyViT encoders, the decoder.

Each architecture is a frozen dataclass that builds its modules for one square input size.
Encoders also say how many input pixels one embedding cell covers (``stride``), whether they
can be built on the meta device and take a checkpoint's tensors as their own, and how to fit
a checkpoint made for another input size.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial

import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, TwoWayTransformer
from torch import nn

from autoseg.models.attention import DEFAULT_KERNEL, fuse_vit_attention
from autoseg.models.resample import resample_vit_state_dict
from autoseg.models.tiny_vit import TinyViT

__all__ = ["DecoderArch", "TinyVitEncoder", "VitEncoder"]


@dataclass(frozen=True)
class VitEncoder:
    """Meta's ``ImageEncoderViT``: windowed blocks with a few global ones, rel-pos attention.

    Each block's ``attn`` is a :class:`~autoseg.models.attention.FusedAttention` (Meta's
    parameters and state-dict keys, computed by ``scaled_dot_product_attention``);
    ``attention`` is its kernel, one of :data:`~autoseg.models.attention.KERNELS`
    (``"explicit"`` runs Meta's own forward).

    Example:
        >>> VitEncoder(embed_dim=64, depth=2, num_heads=2, global_attn_indexes=(1,)).stride
        16

    """

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    window_size: int = 14
    patch_size: int = 16
    attention: str = DEFAULT_KERNEL

    @property
    def stride(self) -> int:
        """Input pixels per embedding cell."""
        return self.patch_size

    # Built on the meta device, a ViT takes the checkpoint's tensors as its own (assign=True):
    # no throw-away random init (seconds for ViT-H) and no second copy in memory.
    loads_on_meta = True

    def build(self, size: int, out_chans: int) -> nn.Module:
        """The encoder for ``size`` x ``size`` inputs, ``out_chans`` embedding channels."""
        encoder = ImageEncoderViT(
            img_size=size,
            patch_size=self.patch_size,
            embed_dim=self.embed_dim,
            depth=self.depth,
            num_heads=self.num_heads,
            mlp_ratio=4.0,
            out_chans=out_chans,
            qkv_bias=True,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            use_rel_pos=True,
            window_size=self.window_size,
            global_attn_indexes=self.global_attn_indexes,
        )
        fuse_vit_attention(encoder, self.attention)
        return encoder

    def fit_state_dict(
        self, state: Mapping[str, torch.Tensor], shapes: Mapping[str, torch.Size]
    ) -> dict[str, torch.Tensor]:
        """Resample the checkpoint's grid-sized position tables to the built input size."""
        return resample_vit_state_dict(state, shapes)


@dataclass(frozen=True)
class TinyVitEncoder:
    """TinyViT (LiteMedSAM's encoder): a conv stage, then windowed attention stages.

    Example:
        >>> TinyVitEncoder((64, 128, 160, 320), (2, 2, 6, 2), (2, 4, 5, 10), (7, 7, 14, 7)).stride
        4

    """

    stage_dims: tuple[int, ...]
    stage_depths: tuple[int, ...]
    stage_heads: tuple[int, ...]
    stage_windows: tuple[int, ...]
    stem_stride: int = 1
    merge_strides: tuple[int, ...] = (2, 2, 1)

    @property
    def stride(self) -> int:
        """Input pixels per embedding cell (both stem convs carry the stem stride)."""
        stride = self.stem_stride**2
        for step in self.merge_strides:
            stride *= step
        return stride

    # TinyViT is small and has non-persistent buffers that the meta device would leave empty.
    loads_on_meta = False

    def build(self, size: int, out_chans: int) -> nn.Module:
        """The encoder for ``size`` x ``size`` inputs, ``out_chans`` embedding channels."""
        return TinyViT(
            size,
            embed_dims=self.stage_dims,
            depths=self.stage_depths,
            num_heads=self.stage_heads,
            window_sizes=self.stage_windows,
            stem_stride=self.stem_stride,
            merge_strides=self.merge_strides,
            out_chans=out_chans,
        )

    def fit_state_dict(
        self, state: Mapping[str, torch.Tensor], shapes: Mapping[str, torch.Size]
    ) -> dict[str, torch.Tensor]:
        """TinyViT's tensors do not depend on the input size: the checkpoint fits as it is."""
        return dict(state)


@dataclass(frozen=True)
class DecoderArch:
    """SAM's prompt encoder and two-way-transformer mask decoder (``out_chans`` wide)."""

    out_chans: int = 256
    mask_in_chans: int = 16
    depth: int = 2
    mlp_dim: int = 2048
    num_heads: int = 8
    iou_head_hidden_dim: int = 256

    def build(self, size: int, grid: int) -> tuple[PromptEncoder, MaskDecoder]:
        """The prompt encoder and mask decoder for a ``grid`` x ``grid`` image embedding."""
        prompt_encoder = PromptEncoder(
            embed_dim=self.out_chans,
            image_embedding_size=(grid, grid),
            input_image_size=(size, size),
            mask_in_chans=self.mask_in_chans,
        )
        transformer = TwoWayTransformer(
            depth=self.depth,
            embedding_dim=self.out_chans,
            mlp_dim=self.mlp_dim,
            num_heads=self.num_heads,
        )
        mask_decoder = MaskDecoder(
            transformer_dim=self.out_chans,
            transformer=transformer,
            num_multimask_outputs=3,
            iou_head_depth=3,
            iou_head_hidden_dim=self.iou_head_hidden_dim,
        )
        return prompt_encoder, mask_decoder
