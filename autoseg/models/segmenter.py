"""Prompt-free SAM for semantic segmentation: frozen encoder, one mask token per class."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from segment_anything.modeling import MaskDecoder
from torch import nn

from autoseg.models.backbones import SamParts, build_sam_parts
from autoseg.models.band_projection import SAM_CHANNELS, BandProjection
from autoseg.models.normalization import build_normalization


class MaskHead(nn.Module):
    """SAM's mask decoder without prompts or IoU head, with one output token per class.

    Each class token (and its hypernetwork MLP) starts as a copy of SAM's single-mask
    token, so a binary head at initialisation reproduces SAM's single-mask output. The IoU
    token stays: the decoder's transformer was trained with it in first position.

    Example:
        >>> parts = build_sam_parts("vit_tiny")
        >>> head = MaskHead(parts.mask_decoder, num_classes=3)
        >>> head.class_tokens.shape[0]
        3

    """

    def __init__(self, decoder: MaskDecoder, num_classes: int) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.transformer = decoder.transformer
        self.output_upscaling = decoder.output_upscaling
        self.iou_token = decoder.iou_token
        single_mask_token = decoder.mask_tokens.weight[:1].detach()
        self.class_tokens = nn.Parameter(single_mask_token.repeat(num_classes, 1).clone())
        self.class_mlps = nn.ModuleList(
            copy.deepcopy(decoder.output_hypernetworks_mlps[0]) for _ in range(num_classes)
        )

    def forward(
        self, image_embeddings: torch.Tensor, image_pe: torch.Tensor, dense_prompt: torch.Tensor
    ) -> torch.Tensor:
        """Return low-resolution logits (B, K, 4h, 4w) from embeddings (B, C, h, w)."""
        batch = image_embeddings.shape[0]
        tokens = torch.cat([self.iou_token.weight, self.class_tokens], dim=0)
        tokens = tokens.unsqueeze(0).expand(batch, -1, -1)
        src = image_embeddings + dense_prompt
        pos = image_pe.expand(batch, -1, -1, -1)
        hidden, src = self.transformer(src, pos, tokens)
        b, c, h, w = image_embeddings.shape
        upscaled = self.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
        class_out = hidden[:, 1 : 1 + self.num_classes]
        hyper = torch.stack([mlp(class_out[:, i]) for i, mlp in enumerate(self.class_mlps)], dim=1)
        flat = upscaled.flatten(2)
        return (hyper @ flat).view(b, self.num_classes, *upscaled.shape[-2:])


class SamSegmenter(nn.Module):
    """SAM run prompt-free: normalise -> image encoder -> no-mask prompt -> class-token head.

    The model carries its input contract: ``image_size`` (the square side it expects),
    ``in_channels`` (image bands; above 3 a learned :class:`BandProjection`,
    ``band_projection``, maps them to SAM's three, else ``band_projection`` is None) and
    its backbone's normalisation (``normalize``, with SAM's ``pixel_mean``/``pixel_std``
    buffers or LiteMedSAM's per-image min-max), so callers pass plain pixel values.
    ``bands`` records which bands of a multi-band TIFF the images are read from (1-based,
    ``None``: the default choice), so prediction reads them as training did.
    ``Sam.forward`` runs under ``no_grad``, so training calls the three parts directly.

    Example:
        >>> model, _ = build_segmenter("vit_tiny", num_classes=1)
        >>> images = torch.zeros(2, 3, 64, 64)  # pixel values 0..255, zero-padded
        >>> model(images, valid_hw=torch.tensor([[64, 48], [32, 64]])).shape
        torch.Size([2, 1, 64, 64])

    """

    def __init__(
        self,
        parts: SamParts,
        num_classes: int,
        in_channels: int = SAM_CHANNELS,
        bands: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = int(in_channels)
        self.bands = None if bands is None else tuple(int(b) for b in bands)
        # None for RGB models, so their weights and saved adapters stay as they were.
        self.band_projection = BandProjection(in_channels) if in_channels != SAM_CHANNELS else None
        self.normalize = build_normalization(parts.weights.normalization)
        self.image_encoder = parts.image_encoder
        self.prompt_encoder = parts.prompt_encoder
        self.mask_head = MaskHead(parts.mask_decoder, num_classes)
        self.image_size = parts.image_size
        self.num_classes = num_classes

    def train(self, mode: bool = True) -> SamSegmenter:
        """Set train/eval mode, keeping batch-norm layers in eval mode always.

        The encoder is frozen, and so are its batch-norm statistics (TinyViT has them):
        updating them on small batches would drift the backbone, and they are not part of
        the saved adapter.
        """
        super().train(mode)
        for module in self.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        return self

    def forward(self, images: torch.Tensor, valid_hw: torch.Tensor | None = None) -> torch.Tensor:
        """Return logits (B, K, S, S) at the input resolution.

        Args:
            images: ``(B, in_channels, S, S)`` pixel values 0..255 (float or uint8),
                zero-padded at the bottom/right beyond each image's valid region.
            valid_hw: ``(B, 2)`` valid ``(h, w)`` per image; None: the whole input is valid.

        """
        return self.decode(self.embed(images, valid_hw), images.shape[-2:])

    def embed(self, images: torch.Tensor, valid_hw: torch.Tensor | None = None) -> torch.Tensor:
        """Image embeddings: band projection (if any), normalisation, image encoder."""
        if self.band_projection is not None:
            images = self.band_projection(images)
        return self.image_encoder(self.normalize(images, valid_hw))

    def decode(self, embeddings: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        """Logits ``(B, K, *size)`` from image embeddings, with the no-prompt embeddings."""
        _, dense = self.prompt_encoder(points=None, boxes=None, masks=None)
        image_pe = self.prompt_encoder.get_dense_pe()
        low_res = self.mask_head(embeddings, image_pe.to(embeddings.dtype), dense)
        return F.interpolate(low_res, size=tuple(size), mode="bilinear", align_corners=False)


def build_segmenter(
    backbone: str,
    num_classes: int = 1,
    image_size: int | None = None,
    checkpoint: str | None = None,
    pretrained: bool = True,
    in_channels: int = SAM_CHANNELS,
    bands: tuple[int, ...] | None = None,
) -> tuple[SamSegmenter, SamParts]:
    """Build a prompt-free SAM segmenter and return it with the backbone's build record.

    ``in_channels`` above 3 adds the band projection; ``bands`` is recorded on the model.
    """
    parts = build_sam_parts(
        backbone, image_size=image_size, checkpoint=checkpoint, pretrained=pretrained
    )
    return SamSegmenter(parts, num_classes, in_channels, bands), parts
