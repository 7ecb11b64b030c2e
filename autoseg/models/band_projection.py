"""A learned 1x1 projection from N image bands to the three channels SAM was pretrained on.

Multispectral rasters (RGB + near-infrared, Sentinel-2 stacks, ...) have more bands than
SAM's RGB input. :class:`BandProjection` maps every pixel's N band values linearly to three
pixel values, before the backbone's normalisation. It starts as a pick of the three RGB bands
(by default the first three channels), so at initialisation the model sees exactly what a
3-band model would see on those bands; training then learns how much of the other bands to
mix in. Its weights are trainable and saved with the adapter.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

SAM_CHANNELS = 3
"""Channels of SAM's image encoder input."""


class BandProjection(nn.Module):
    """``(B, N, H, W)`` pixel values -> ``(B, 3, H, W)`` by a 1x1 convolution with bias.

    Args:
        in_channels: N, the bands the model takes (at least 1).
        rgb: The input channels (0-based) the three outputs start as; default ``(0, 1, 2)``.

    Example:
        >>> projection = BandProjection(4)
        >>> images = torch.arange(16.0).view(1, 4, 2, 2)
        >>> torch.equal(projection(images), images[:, :3])
        True

    """

    def __init__(self, in_channels: int, rgb: Sequence[int] = (0, 1, 2)) -> None:
        super().__init__()
        rgb = tuple(int(c) for c in rgb)
        if len(rgb) != SAM_CHANNELS or not all(0 <= c < in_channels for c in rgb):
            raise ValueError(
                f"rgb must name {SAM_CHANNELS} input channels in 0..{in_channels - 1}, got {rgb}"
            )
        self.in_channels = int(in_channels)
        self.rgb = rgb
        self.conv = nn.Conv2d(in_channels, SAM_CHANNELS, kernel_size=1, bias=True)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Set the weights to the RGB pick: output ``i`` is input channel ``rgb[i]``, no bias."""
        if self.conv.weight.is_meta:  # shapes only (parameter counts): nothing to fill
            return
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.zero_()
            for out, channel in enumerate(self.rgb):
                self.conv.weight[out, channel] = 1.0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Project ``(B, N, H, W)`` images (float or uint8 pixel values) to three channels."""
        if images.shape[1] != self.in_channels:
            raise ValueError(
                f"the model takes {self.in_channels}-band images (model.in_channels), got "
                f"{images.shape[1]} channel(s)"
            )
        pixels = images if images.is_floating_point() else images.float()
        return self.conv(pixels.to(self.conv.weight.dtype))

    def parameter_count(self) -> int:
        """Weights and biases: ``3 * N + 3``."""
        return sum(p.numel() for p in self.parameters())
