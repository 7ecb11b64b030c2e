"""Band choice and per-band percentile scaling to uint8, for multi-band rasters.

Pure numpy (no rasterio): :mod:`autoseg.data.geotiff` reads the pixels and uses these rules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from autoseg.errors import SettingsError

DEFAULT_PERCENTILES: tuple[float, float] = (2.0, 98.0)
"""Per-band low and high percentiles mapped to 0 and 255."""
STATS_MAX_PIXELS = 2**22
"""Rasters with more pixels than this (2048 x 2048) get their percentiles from a decimated read."""


@dataclass(frozen=True)
class BandScale:
    """How one band maps to uint8: ``low`` -> 0, ``high`` -> 255, linear and clipped between.

    Example:
        >>> BandScale(band=1, low=100.0, high=200.0).apply(np.array([50, 150, 250])).tolist()
        [0, 128, 255]

    """

    band: int
    low: float
    high: float

    def apply(self, values: np.ndarray) -> np.ndarray:
        """Scale raw band values to uint8 (a constant band, ``high <= low``, gives zeros)."""
        if self.high <= self.low:
            return np.zeros(values.shape, dtype=np.uint8)
        low = np.float32(self.low)
        values = values.astype(np.float32, copy=False)
        values = np.where(np.isfinite(values), values, low)
        scaled = (values - low) * np.float32(255.0 / (self.high - self.low)) + np.float32(0.5)
        return np.clip(scaled, 0, 255).astype(np.uint8)


def choose_bands(
    count: int, bands: object = None, in_channels: int | None = None
) -> tuple[int, ...]:
    """Resolve the band choice for a raster with ``count`` bands (1-based, as GDAL counts).

    Defaults: bands 1-3 for 3+ bands, band 1 three times for 1 or 2 bands; with
    ``in_channels=N``, bands 1..N. A single chosen band is repeated to three channels.

    Args:
        count: Bands in the raster.
        bands: The user's choice, e.g. ``[3, 2, 1]``, or ``None`` for the default.
        in_channels: Channels the model takes (``None``: 3, RGB).

    Returns:
        One band number per output channel.

    Raises:
        SettingsError: A band is not in 1..count, or the number of bands is wrong.

    Example:
        >>> choose_bands(6, [4, 3, 2]), choose_bands(1), choose_bands(6, in_channels=4)
        ((4, 3, 2), (1, 1, 1), (1, 2, 3, 4))

    """
    if in_channels is not None and (
        isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1
    ):
        raise SettingsError(f"in_channels must be a positive integer, got {in_channels!r}.")
    wanted = 3 if in_channels is None else in_channels
    if bands is None:
        if in_channels is not None and count < in_channels:
            raise SettingsError(
                f"in_channels={in_channels} but the raster has only {count} band(s); "
                "lower in_channels or choose bands explicitly."
            )
        return tuple(range(1, wanted + 1)) if count >= wanted else (1,) * wanted
    chosen = tuple(bands) if isinstance(bands, list | tuple) else (bands,)
    for band in chosen:
        if isinstance(band, bool) or not isinstance(band, int | np.integer):
            raise SettingsError(f"bands must be integers (1-based), got {band!r} in {bands!r}.")
        if not 1 <= band <= count:
            raise SettingsError(
                f"band {band} does not exist: the raster has bands 1..{count} (1-based)."
            )
    if len(chosen) == 1 and in_channels is None:
        chosen = chosen * 3
    if len(chosen) != wanted:
        raise SettingsError(
            f"{len(chosen)} band(s) chosen ({list(chosen)}) but the model takes {wanted} "
            "channel(s); choose exactly that many bands or set in_channels to match."
        )
    return tuple(int(b) for b in chosen)


def percentile_range(
    values: np.ndarray, valid: np.ndarray, percentiles: tuple[float, float]
) -> tuple[float, float]:
    """The low and high percentiles of the valid, finite values (0, 0 when there are none)."""
    keep = valid & np.isfinite(values) if values.dtype.kind == "f" else valid
    data = values[keep]
    if data.size == 0:
        return 0.0, 0.0
    low, high = np.percentile(data, percentiles)
    return float(low), float(high)


def stats_shape(height: int, width: int, max_pixels: int) -> tuple[int, int] | None:
    """The decimated read shape for the percentiles, or ``None`` to use every pixel."""
    if height * width <= max_pixels:
        return None
    factor = math.sqrt(height * width / max_pixels)
    return max(1, int(height / factor)), max(1, int(width / factor))


def check_percentiles(percentiles: object) -> tuple[float, float]:
    """Validate ``(low, high)`` with ``0 <= low < high <= 100``."""
    try:
        low, high = (float(p) for p in percentiles)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        raise SettingsError(
            f"percentiles must be two numbers (low, high), got {percentiles!r}."
        ) from None
    if not 0.0 <= low < high <= 100.0:
        raise SettingsError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}.")
    return low, high
