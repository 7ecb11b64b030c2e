"""Input normalisation inside the model, on the valid (unpadded) region of each image.

Images reach the model as float pixel values 0..255, resized and zero-padded at the
bottom/right to a square, with each image's valid ``(h, w)``. The model normalises the valid
region as its backbone was pretrained and leaves the padding at 0, as SAM's own
``Sam.preprocess`` (normalise, then pad) does. Everything is vectorised over the batch, so
the forward exports (``torch.export``, ONNX) with one graph for every valid size.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

SAM_PIXEL_MEAN: tuple[float, float, float] = (123.675, 116.28, 103.53)
SAM_PIXEL_STD: tuple[float, float, float] = (58.395, 57.12, 57.375)


def valid_mask(images: torch.Tensor, valid_hw: torch.Tensor | None) -> torch.Tensor | None:
    """``(B, 1, H, W)`` bool mask of each image's top-left ``valid_hw[b]`` region.

    Args:
        images: ``(B, C, H, W)`` batch.
        valid_hw: ``(B, 2)`` integer ``(h, w)`` per image; None: every pixel is valid.

    Returns:
        The mask, or None when ``valid_hw`` is None.

    Example:
        >>> valid_mask(torch.zeros(1, 3, 2, 3), torch.tensor([[1, 2]]))[0, 0].int().tolist()
        [[1, 1, 0], [0, 0, 0]]

    """
    if valid_hw is None:
        return None
    height, width = images.shape[-2:]
    hw = valid_hw.to(images.device)
    rows = torch.arange(height, device=images.device)[None, :] < hw[:, :1]
    cols = torch.arange(width, device=images.device)[None, :] < hw[:, 1:]
    return (rows[:, :, None] & cols[:, None, :])[:, None]


def _finish(
    normalized: torch.Tensor, mask: torch.Tensor | None, like: torch.Tensor
) -> torch.Tensor:
    """Zero the padding and return in the input's floating dtype (float32 for integers)."""
    if mask is not None:
        normalized = torch.where(mask, normalized, 0.0)
    return normalized.to(like.dtype) if like.is_floating_point() else normalized


class MeanStdNormalization(nn.Module):
    """``(x - mean) / std`` per channel, with ``pixel_mean``/``pixel_std`` buffers as in SAM.

    The buffers are not saved in ``state_dict`` (they are the backbone's constants).

    Example:
        >>> norm = MeanStdNormalization(SAM_PIXEL_MEAN, SAM_PIXEL_STD)
        >>> out = norm(torch.full((1, 3, 2, 2), 255.0), torch.tensor([[1, 1]]))
        >>> round(out[0, 0, 0, 0].item(), 4), out[0, 0, 1, 1].item()
        (2.2489, 0.0)

    """

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("pixel_mean", torch.tensor(mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(-1, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor, valid_hw: torch.Tensor | None = None) -> torch.Tensor:
        """Normalise ``(B, C, H, W)`` pixel values; the padding beyond ``valid_hw`` stays 0."""
        normalized = (images.float() - self.pixel_mean.float()) / self.pixel_std.float()
        return _finish(normalized, valid_mask(images, valid_hw), images)


class MinMaxNormalization(nn.Module):
    """Map each image's own min..max (over its valid region, all channels) to 0..1.

    LiteMedSAM's preprocessing; a constant image becomes 0. With ``value_range`` set to
    ``(low, high)``, that range is used instead of each image's own (tiled prediction sets
    the whole image's range, so every window gets the same contrast).

    Example:
        >>> images = torch.tensor([[[[10.0, 30.0], [20.0, 99.0]]]])
        >>> MinMaxNormalization()(images, torch.tensor([[1, 2]]))[0, 0].tolist()
        [[0.0, 1.0], [0.0, 0.0]]

    """

    def __init__(self) -> None:
        super().__init__()
        self.value_range: tuple[float, float] | None = None

    def forward(self, images: torch.Tensor, valid_hw: torch.Tensor | None = None) -> torch.Tensor:
        """Normalise ``(B, C, H, W)`` pixel values; the padding beyond ``valid_hw`` stays 0."""
        pixels = images.float()
        mask = valid_mask(images, valid_hw)
        dims = (1, 2, 3)
        if self.value_range is not None:
            low, high = (torch.tensor(v, dtype=pixels.dtype) for v in self.value_range)
        elif mask is None:
            low, high = pixels.amin(dim=dims, keepdim=True), pixels.amax(dim=dims, keepdim=True)
        else:
            low = torch.where(mask, pixels, float("inf")).amin(dim=dims, keepdim=True)
            high = torch.where(mask, pixels, float("-inf")).amax(dim=dims, keepdim=True)
        normalized = (pixels - low) / torch.clamp(high - low, min=1e-8)
        return _finish(normalized, mask, images)


NORMALIZATIONS: dict[str, Callable[[], nn.Module]] = {
    "sam": lambda: MeanStdNormalization(SAM_PIXEL_MEAN, SAM_PIXEL_STD),
    "minmax": MinMaxNormalization,
}
"""A backbone's ``PretrainedWeights.normalization`` name -> the module that applies it."""


def build_normalization(name: str) -> nn.Module:
    """The normalisation module called ``name`` (see :data:`NORMALIZATIONS`).

    Raises:
        ValueError: an unknown name; the message lists the known ones.

    """
    if name not in NORMALIZATIONS:
        raise ValueError(f"unknown normalization {name!r}; choose one of {list(NORMALIZATIONS)}")
    return NORMALIZATIONS[name]()
