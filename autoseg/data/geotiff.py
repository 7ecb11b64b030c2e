"""GeoTIFF rasters (extra ``autoseg[geo]``): band choice, per-band scaling, windowed reads.

A raster is first described once (:func:`describe_raster`): its size, CRS, transform,
nodata, the chosen bands and each band's scaling. Every read after that, of the whole raster
or of any window, uses that same description, so a raster larger than memory can stream
through window by window and each window is scaled exactly as the whole image would be.

Scaling: each chosen band is mapped to uint8 by its own percentiles (default 2nd..98th, the
cumulative-count cut of remote-sensing viewers), computed once on the whole raster, or on a
decimated read of at most :data:`STATS_MAX_PIXELS` pixels for big rasters. Nodata pixels
(the nodata value, an internal mask or alpha band, NaN) are left out of the percentiles and
reported by every read as ``valid == False`` (their image pixels are 0). uint8 bands are
kept as stored unless ``stretch_uint8=True``, so an 8-bit mosaic reads like the 8-bit PNG
tiles a model was trained on.

rasterio is imported only when a GeoTIFF is used; without it a
:class:`GeoExtraMissingError` says how to install it.
"""

from __future__ import annotations

import importlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any, NamedTuple

import numpy as np

from autoseg.data.geotiff_bands import (
    DEFAULT_PERCENTILES,
    STATS_MAX_PIXELS,
    BandScale,
    check_percentiles,
    choose_bands,
    percentile_range,
    stats_shape,
)
from autoseg.errors import AutosegError, SettingsError

__all__ = [
    "DEFAULT_PERCENTILES",
    "STATS_MAX_PIXELS",
    "BandScale",
    "GeoExtraMissingError",
    "GeoTiffError",
    "GeoTiffReader",
    "RasterInfo",
    "RasterRead",
    "Window",
    "choose_bands",
    "check_window",
    "clip_window",
    "describe_raster",
    "import_rasterio",
    "read_geotiff",
    "read_window",
]

PathLike = str | os.PathLike[str]
Window = tuple[int, int, int, int]
"""A window as ``(row_off, col_off, height, width)`` in pixels; it may extend past the edges."""


class GeoExtraMissingError(AutosegError, ImportError):
    """A GeoTIFF feature was used, but rasterio (the ``autoseg[geo]`` extra) is not installed."""


class GeoTiffError(AutosegError, ValueError):
    """A file cannot be read as a raster."""


def import_rasterio() -> ModuleType:
    """Import rasterio, or raise :class:`GeoExtraMissingError` naming the extra to install.

    Returns:
        The ``rasterio`` module.

    Raises:
        GeoExtraMissingError: rasterio is not installed.

    """
    try:
        return importlib.import_module("rasterio")
    except ImportError as err:
        raise GeoExtraMissingError(
            "GeoTIFF support needs rasterio, which is not installed; "
            "install the extra with: pip install autoseg[geo]"
        ) from err


@dataclass(frozen=True)
class RasterInfo:
    """What later code needs to read a raster window by window and write outputs beside it.

    Attributes:
        path: The raster file.
        width: Columns.
        height: Rows.
        count: Bands in the file.
        dtypes: Each band's stored dtype, e.g. ``("uint16", "uint16", ...)``.
        crs: The CRS as ``"EPSG:32633"`` or WKT; ``None`` when the file has none.
        transform: The affine geotransform ``(a, b, c, d, e, f)`` in rasterio's order:
            ``x = a * col + b * row + c``, ``y = d * col + e * row + f``.
        nodata: The file's nodata value, or ``None``.
        bands: The chosen bands, 1-based, one per output channel.
        scales: The scaling of each chosen band, in the order of ``bands``.
        percentiles: The percentiles the scales were computed at.

    """

    path: Path
    width: int
    height: int
    count: int
    dtypes: tuple[str, ...]
    crs: str | None
    transform: tuple[float, float, float, float, float, float]
    nodata: float | None
    bands: tuple[int, ...]
    scales: tuple[BandScale, ...]
    percentiles: tuple[float, float]

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)``."""
        return self.height, self.width

    @property
    def channels(self) -> int:
        """Channels of every read: ``len(bands)``."""
        return len(self.bands)


class RasterRead(NamedTuple):
    """The pixels of one read: ``image`` (H, W, C) uint8 and ``valid`` (H, W) bool."""

    image: np.ndarray
    valid: np.ndarray


def _band_scales(
    dataset: Any,
    bands: tuple[int, ...],
    percentiles: tuple[float, float],
    stretch_uint8: bool,
    max_pixels: int,
) -> tuple[BandScale, ...]:
    """Compute each distinct chosen band's scale once, band by band to bound memory."""
    shape = stats_shape(dataset.height, dataset.width, max_pixels)
    by_band: dict[int, BandScale] = {}
    for band in dict.fromkeys(bands):
        if dataset.dtypes[band - 1] == "uint8" and not stretch_uint8:
            by_band[band] = BandScale(band, 0.0, 255.0)
            continue
        values = dataset.read(band, out_shape=shape)  # nearest decimation when shape is set
        valid = dataset.read_masks(band, out_shape=shape) > 0
        by_band[band] = BandScale(band, *percentile_range(values, valid, percentiles))
    return tuple(by_band[band] for band in bands)


def _open(rasterio: ModuleType, path: Path) -> Any:
    """Open a raster for reading, with a clear error when it is missing or not a raster."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such raster file.")
    try:
        with warnings.catch_warnings():  # plain TIFFs are fine: their crs is None
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            return rasterio.open(path)
    except rasterio.errors.RasterioIOError as err:
        raise GeoTiffError(f"{path}: not a raster GDAL can read ({err}).") from err


def describe_raster(
    path: PathLike,
    bands: object = None,
    *,
    in_channels: int | None = None,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
    stretch_uint8: bool = False,
    max_stats_pixels: int = STATS_MAX_PIXELS,
) -> RasterInfo:
    """Describe a raster and fix its band choice and per-band scaling for every later read.

    Args:
        path: A GeoTIFF (any raster GDAL reads works).
        bands: Bands to use, 1-based (e.g. ``[3, 2, 1]``); see :func:`choose_bands`.
        in_channels: Channels the model takes; ``None`` means 3 (RGB).
        percentiles: Per-band percentiles mapped to 0 and 255.
        stretch_uint8: Also stretch uint8 bands (by default they are kept as stored).
        max_stats_pixels: Above this many pixels, percentiles come from a decimated read.

    Returns:
        The raster's :class:`RasterInfo`.

    Raises:
        GeoExtraMissingError: rasterio is not installed.
        FileNotFoundError: The file does not exist.
        GeoTiffError: The file is not a readable raster.
        SettingsError: The band choice or the percentiles are invalid.

    Example:
        >>> import tempfile, rasterio
        >>> path = Path(tempfile.mkdtemp()) / "one.tif"
        >>> with rasterio.open(path, "w", driver="GTiff", width=4, height=2, count=1,
        ...                    dtype="uint16", crs="EPSG:32633",
        ...                    transform=rasterio.Affine(10, 0, 500000, 0, -10, 4600000)) as f:
        ...     f.write(np.arange(8, dtype="uint16").reshape(1, 2, 4))
        >>> info = describe_raster(path, percentiles=(0, 100))
        >>> info.crs, info.bands, info.scales[0].high
        ('EPSG:32633', (1, 1, 1), 7.0)

    """
    low_high = check_percentiles(percentiles)
    rasterio = import_rasterio()
    path = Path(path)
    with _open(rasterio, path) as dataset:
        chosen = choose_bands(dataset.count, bands, in_channels)
        crs = dataset.crs
        return RasterInfo(
            path=path,
            width=int(dataset.width),
            height=int(dataset.height),
            count=int(dataset.count),
            dtypes=tuple(str(d) for d in dataset.dtypes),
            crs=None if crs is None else crs.to_string(),
            transform=tuple(float(v) for v in dataset.transform[:6]),  # type: ignore[arg-type]
            nodata=None if dataset.nodata is None else float(dataset.nodata),
            bands=chosen,
            scales=_band_scales(dataset, chosen, low_high, stretch_uint8, max_stats_pixels),
            percentiles=low_high,
        )


def check_window(window: object) -> Window:
    """Validate ``(row_off, col_off, height, width)`` with a positive height and width."""
    try:
        row, col, height, width = (int(v) for v in window)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        raise SettingsError(
            f"a window is (row_off, col_off, height, width), got {window!r}."
        ) from None
    if height < 1 or width < 1:
        raise SettingsError(f"a window needs a positive height and width, got {window!r}.")
    return row, col, height, width


def clip_window(window: Window, height: int, width: int) -> tuple[slice, slice, Window] | None:
    """The part of ``window`` inside a ``height`` x ``width`` raster.

    Returns:
        ``(rows, cols, inner)``: slices of the window's array that lie inside, and the inside
        part as a window of the raster; ``None`` when the window lies wholly outside.

    Example:
        >>> clip_window((-2, 5, 4, 10), 10, 12)
        (slice(2, 4, None), slice(0, 7, None), (0, 5, 2, 7))

    """
    row, col, h, w = window
    r0, r1 = max(row, 0), min(row + h, height)
    c0, c1 = max(col, 0), min(col + w, width)
    if r1 <= r0 or c1 <= c0:
        return None
    rows, cols = slice(r0 - row, r1 - row), slice(c0 - col, c1 - col)
    return rows, cols, (r0, c0, r1 - r0, c1 - c0)


class GeoTiffReader:
    """Reads windows of one raster, opened once, with the band choice and scaling of ``info``.

    Use it as a context manager; :meth:`read` accepts windows that extend past the edges
    (boundless): the outside part is 0 and not valid. The inside part is read directly, not
    through rasterio's ``boundless=True`` (a VRT), so the edges match the whole-image read.

    Example:
        >>> import tempfile, rasterio
        >>> path = Path(tempfile.mkdtemp()) / "r.tif"
        >>> with rasterio.open(path, "w", driver="GTiff", width=4, height=4, count=3,
        ...                    dtype="uint8") as f:
        ...     f.write(np.full((3, 4, 4), 9, dtype="uint8"))
        >>> with GeoTiffReader(describe_raster(path)) as reader:
        ...     image, valid = reader.read((2, 2, 4, 4))
        >>> image[:, :, 0].tolist()[1], valid.sum()
        ([9, 9, 0, 0], np.int64(4))

    """

    def __init__(self, info: RasterInfo) -> None:
        self.info = info
        rasterio = import_rasterio()
        self._window = importlib.import_module("rasterio.windows").Window
        self._dataset = _open(rasterio, info.path)
        if (self._dataset.height, self._dataset.width) != info.shape:
            self._dataset.close()
            raise GeoTiffError(f"{info.path} changed since it was described; describe it again.")

    def __enter__(self) -> GeoTiffReader:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the file."""
        self._dataset.close()

    def read(self, window: Window | None = None) -> RasterRead:
        """Read a window ``(row_off, col_off, height, width)``, or the whole raster.

        Returns:
            ``(image, valid)``: ``(h, w, channels)`` uint8 and ``(h, w)`` bool, ``False`` at
            nodata and outside the raster (where the image is 0).

        """
        info = self.info
        row, col, h, w = (0, 0, *info.shape) if window is None else check_window(window)
        image = np.zeros((h, w, info.channels), dtype=np.uint8)
        valid = np.zeros((h, w), dtype=bool)
        clipped = clip_window((row, col, h, w), *info.shape)
        if clipped is None:
            return RasterRead(image, valid)
        rows, cols, (r0, c0, hh, ww) = clipped
        distinct = list(dict.fromkeys(info.bands))
        region = self._window(c0, r0, ww, hh)  # rasterio's order: col_off, row_off, width, height
        data = self._dataset.read(distinct, window=region)
        ok = (self._dataset.read_masks(distinct, window=region) > 0).all(axis=0)
        if data.dtype.kind == "f":
            ok &= np.isfinite(data).all(axis=0)
        for channel, (band, scale) in enumerate(zip(info.bands, info.scales, strict=True)):
            image[rows, cols, channel] = np.where(ok, scale.apply(data[distinct.index(band)]), 0)
        valid[rows, cols] = ok
        return RasterRead(image, valid)


def read_window(info: RasterInfo, window: Window | None = None) -> RasterRead:
    """Read one window (or the whole raster) of a described raster; see :class:`GeoTiffReader`.

    Example:
        >>> import tempfile, rasterio
        >>> path = Path(tempfile.mkdtemp()) / "w.tif"
        >>> with rasterio.open(path, "w", driver="GTiff", width=3, height=3, count=1,
        ...                    dtype="uint8") as f:
        ...     f.write(np.full((1, 3, 3), 5, dtype="uint8"))
        >>> read_window(describe_raster(path), (1, 1, 2, 2)).image.shape
        (2, 2, 3)

    """
    with GeoTiffReader(info) as reader:
        return reader.read(window)


def read_geotiff(
    path: PathLike,
    bands: object = None,
    *,
    in_channels: int | None = None,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
    stretch_uint8: bool = False,
) -> RasterRead:
    """Read a whole GeoTIFF as ``(image, valid)``; arguments as in :func:`describe_raster`.

    Example:
        >>> import tempfile, rasterio
        >>> path = Path(tempfile.mkdtemp()) / "g.tif"
        >>> with rasterio.open(path, "w", driver="GTiff", width=5, height=2, count=4,
        ...                    dtype="float32", nodata=-1) as f:
        ...     f.write(np.arange(40, dtype="float32").reshape(4, 2, 5))
        >>> image, valid = read_geotiff(path, [4, 3, 2])
        >>> image.shape, image.dtype, bool(valid.all())
        ((2, 5, 3), dtype('uint8'), True)

    """
    info = describe_raster(
        path,
        bands,
        in_channels=in_channels,
        percentiles=percentiles,
        stretch_uint8=stretch_uint8,
    )
    return read_window(info)
