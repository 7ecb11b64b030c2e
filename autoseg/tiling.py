"""Tiled prediction: overlapping windows at the model's native scale, blended without seams.

The untiled path shrinks a whole image to the model input, so structures a few pixels wide
in a large image vanish. Here the image is cut into windows of ``tile_size`` pixels (the
model input by default, so windows are not resized at all) that overlap by ``overlap``;
each window is prepared exactly as the untiled path prepares a whole image (zero-padded at
the bottom/right to the model input, its valid size passed to the model, which normalises
it itself), and windows run ``batch_size`` at a time.

Blending: each window's probabilities are weighted by a separable cosine-squared (Hann)
window with a small floor (:func:`axis_weights`), accumulated in float32, and divided by
the accumulated weight. The weight of a pixel tapers to almost zero at the window's
border, where the next window takes over, so the blend is continuous; the division makes
the weights sum to one everywhere, image borders included. Because the grid is a product
of row and column starts and the weights are separable, the accumulated weight is the
outer product of two 1-D sums: memory is the output plus one batch of windows.

Models with per-image min-max normalisation (LiteMedSAM) get the whole image's range in
every window (after the band projection of multispectral models), so neighbouring windows
see the same pixel values as the untiled path does.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from autoseg.data.transforms import (
    ResizeInfo,
    resize_image,
    restore_logits,
    scaled_window_info,
    to_probabilities,
)
from autoseg.errors import SettingsError
from autoseg.models.normalization import MinMaxNormalization
from autoseg.runtime import Runtime

TILE_MODES = (False, True, "auto")
AUTO_TILE_FACTOR = 2
"""``tile="auto"`` tiles an image whose longest side exceeds this many window sides."""
MIN_TILE_SIZE = 16
MAX_OVERLAP = 0.9
WEIGHT_FLOOR = 1e-3
"""The blend weight at a window's border: positive, so every pixel has weight, and small,
so a window's border barely shows where its neighbour takes over."""


@dataclass(frozen=True)
class TileSettings:
    """How to tile: ``tile`` is ``False``, ``True`` or ``"auto"``; checked when built.

    Args:
        tile: ``False`` never, ``True`` always, ``"auto"`` images whose longest side exceeds
            :data:`AUTO_TILE_FACTOR` window sides.
        tile_size: window side in image pixels; ``None``: the model input (native scale).
        overlap: fraction of a window shared with its neighbour, ``0 <= overlap <= 0.9``.

    Example:
        >>> TileSettings("auto").tiles(height=300, width=100, model_size=64)
        True
        >>> TileSettings(True, overlap=1.5)
        Traceback (most recent call last):
        ...
        autoseg.errors.SettingsError: overlap must be a number with 0 <= overlap <= 0.9 ...

    """

    tile: bool | str = False
    tile_size: int | None = None
    overlap: float = 0.25

    def __post_init__(self) -> None:
        check_tile_options(self.tile, self.tile_size, self.overlap)

    def window(self, model_size: int) -> int:
        """The window side in image pixels for a model of input ``model_size``."""
        return int(model_size if self.tile_size is None else self.tile_size)

    def tiles(self, height: int, width: int, model_size: int) -> bool:
        """Whether an ``(height, width)`` image is predicted in windows."""
        if self.tile == "auto":
            return max(height, width) > AUTO_TILE_FACTOR * self.window(model_size)
        return bool(self.tile)


def check_tile_options(tile: Any, tile_size: Any, overlap: Any) -> None:
    """Refuse tiling arguments out of range, before any image is read.

    Raises:
        SettingsError: ``tile`` is not False/True/"auto", ``tile_size`` is not an integer
            >= 16 (or None), or ``overlap`` is not a number in [0, 0.9].

    """
    if not any(tile is mode or (isinstance(tile, str) and tile == mode) for mode in TILE_MODES):
        raise SettingsError(
            f'tile must be False, True or "auto" (tile images larger than {AUTO_TILE_FACTOR}x '
            f"the window), got {tile!r}."
        )
    if tile_size is not None and (
        isinstance(tile_size, bool) or not isinstance(tile_size, int) or tile_size < MIN_TILE_SIZE
    ):
        raise SettingsError(
            f"tile_size must be an integer >= {MIN_TILE_SIZE} (window side in image pixels) "
            f"or None for the model input, got {tile_size!r}."
        )
    number = isinstance(overlap, int | float) and not isinstance(overlap, bool)
    if not number or not 0 <= overlap <= MAX_OVERLAP:
        raise SettingsError(
            f"overlap must be a number with 0 <= overlap <= {MAX_OVERLAP} (the fraction of a "
            f"window shared with its neighbour, e.g. 0.25), got {overlap!r}."
        )


def window_starts(length: int, window: int, overlap: float) -> list[int]:
    """Start offsets of windows covering ``[0, length)``, spread evenly, the last flush.

    Neighbours overlap by at least ``overlap * window`` pixels.

    Example:
        >>> window_starts(200, 64, 0.25), window_starts(50, 64, 0.25)
        ([0, 45, 91, 136], [0])

    """
    if length <= window:
        return [0]
    stride = window * (1.0 - overlap)
    count = math.ceil((length - window) / stride - 1e-9) + 1
    return [round(i * (length - window) / (count - 1)) for i in range(count)]


def axis_weights(extent: int, floor: float = WEIGHT_FLOOR) -> np.ndarray:
    """The 1-D blend weights of a window ``extent`` pixels long: cosine-squared with a floor.

    Example:
        >>> [round(float(w), 3) for w in axis_weights(4)]
        [0.147, 0.854, 0.854, 0.147]

    """
    ramp = np.sin(np.pi * (np.arange(extent) + 0.5) / extent) ** 2
    return (floor + (1.0 - floor) * ramp).astype(np.float32)


def accumulated_weights(length: int, window: int, overlap: float) -> np.ndarray:
    """Sum over the windows along one axis of their weights, per pixel (all positive)."""
    extent = min(window, length)
    weights, total = axis_weights(extent), np.zeros(length, np.float32)
    for start in window_starts(length, window, overlap):
        total[start : start + extent] += weights
    return total


@contextlib.contextmanager
def _image_wide_normalization(model: nn.Module, image: np.ndarray) -> Iterator[None]:
    """Normalise every window by the whole image's min..max if the model uses min-max.

    Per-window statistics would give each window a different contrast (a seam); the untiled
    path takes the range over the whole image, and so does this.
    """
    norm = getattr(model, "normalize", None)
    if not isinstance(norm, MinMaxNormalization):
        yield
        return
    norm.value_range = _pixel_range(model, image)
    try:
        yield
    finally:
        norm.value_range = None


def _pixel_range(model: nn.Module, image: np.ndarray, rows: int = 256) -> tuple[float, float]:
    """Min and max of the pixels the normalisation sees: after the band projection, if any.

    The projection (``model.in_channels`` > 3) is per pixel, so it runs on ``rows`` image
    rows at a time: memory stays one strip, not a projected copy of the image.
    """
    projection = getattr(model, "band_projection", None)
    if projection is None:
        return float(image.min()), float(image.max())
    device = next(projection.parameters()).device
    low, high = float("inf"), float("-inf")
    for top in range(0, image.shape[0], rows):
        strip = torch.from_numpy(np.ascontiguousarray(image[top : top + rows]))
        projected = projection(strip.permute(2, 0, 1)[None].float().to(device))
        low, high = min(low, projected.min().item()), max(high, projected.max().item())
    return low, high


def _window_batch(
    image: np.ndarray, starts: list[tuple[int, int]], extent: tuple[int, int], info: ResizeInfo
) -> torch.Tensor:
    """``(B, C, S, S)`` float32 pixel values of the windows, zero-padded bottom/right."""
    (rows, cols), (new_h, new_w) = extent, info.resized_hw
    batch = torch.zeros(len(starts), image.shape[2], info.size, info.size)
    for i, (top, left) in enumerate(starts):
        window = image[top : top + rows, left : left + cols]
        if (new_h, new_w) != (rows, cols):
            window = resize_image(window, (new_h, new_w))
        pixels = torch.from_numpy(np.ascontiguousarray(window)).permute(2, 0, 1)
        batch[i, :, :new_h, :new_w] = pixels.float()
    return batch


def _probabilities(
    model: nn.Module, batch: torch.Tensor, info: ResizeInfo, runtime: Runtime
) -> torch.Tensor:
    """Probabilities ``(B, K, h, w)`` (float32, CPU) of a window batch at window size."""
    device, dtype = runtime.device, runtime.autocast_dtype
    valid = torch.tensor([info.resized_hw] * len(batch), dtype=torch.int64, device=device)
    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        logits = model(batch.to(device), valid).float().cpu()
    return to_probabilities(torch.stack([restore_logits(item, info) for item in logits]))


def _check_call(image: np.ndarray, tile_size: Any, overlap: Any, batch_size: Any) -> None:
    """Refuse the arguments of :func:`tiled_probabilities` before any forward pass."""
    check_tile_options(True, tile_size, overlap)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise SettingsError(f"batch_size must be an integer >= 1, got {batch_size!r}.")
    if image.ndim != 3 or min(image.shape) < 1:
        raise ValueError(f"expected an (H, W, C) image, got shape {image.shape}")


def tiled_probabilities(
    model: nn.Module,
    image: np.ndarray,
    runtime: Runtime,
    *,
    tile_size: int | None = None,
    overlap: float = 0.25,
    batch_size: int = 4,
) -> np.ndarray:
    """Probabilities of one image predicted in overlapping, blended windows.

    Args:
        model: a segmenter taking ``(B, C, S, S)`` pixel values with valid sizes (its
            ``image_size`` is ``S``), as :class:`~autoseg.models.segmenter.SamSegmenter`.
        image: ``(H, W, C)`` pixel values (uint8 as read by autoseg), any channel count
            the model takes.
        runtime: device, threads and precision (see :func:`autoseg.runtime.resolve_runtime`).
        tile_size: window side in image pixels; ``None``: ``model.image_size`` (windows
            are not resized). Other sizes scale each window by ``image_size / tile_size``.
        overlap: fraction of a window shared with its neighbour (0 .. 0.9).
        batch_size: windows per forward pass.

    Returns:
        float32 probabilities like :func:`~autoseg.inference.iter_probabilities` items:
        binary (H, W) foreground, multi-class (K, H, W).

    Raises:
        SettingsError: ``tile_size``/``overlap`` out of range, or ``batch_size`` < 1.
        ValueError: ``image`` is not ``(H, W, C)``.

    """
    _check_call(image, tile_size, overlap, batch_size)
    height, width = image.shape[:2]
    size = int(model.image_size)
    window = size if tile_size is None else tile_size
    extent = (min(window, height), min(window, width))
    info = scaled_window_info(*extent, window, size)
    weights = torch.from_numpy(np.outer(axis_weights(extent[0]), axis_weights(extent[1])))
    # A lazy grid: its size grows with the image area, so it is not held as a list.
    grid = itertools.product(
        window_starts(height, window, overlap), window_starts(width, window, overlap)
    )
    total: np.ndarray | None = None
    runtime.prepare(model).eval().to(runtime.device)
    with runtime.threads(), torch.inference_mode(), _image_wide_normalization(model, image):
        while starts := list(itertools.islice(grid, batch_size)):
            probabilities = _probabilities(
                model, _window_batch(image, starts, extent, info), info, runtime
            )
            if total is None:  # the class count is known after the first forward
                total = np.zeros((probabilities.shape[1], height, width), np.float32)
            for (top, left), item in zip(starts, probabilities * weights, strict=True):
                total[:, top : top + extent[0], left : left + extent[1]] += item.numpy()
    assert total is not None
    # Divide by the accumulated weight, the outer product of the two axes' sums, in place.
    total *= (1.0 / accumulated_weights(height, window, overlap))[:, None]
    total *= (1.0 / accumulated_weights(width, window, overlap))[None, :]
    return total[0] if total.shape[0] == 1 else total
