"""Images for models that take other bands than RGB (``data.bands``, ``model.in_channels``).

:func:`read_model_image` is what the data pipeline calls: plain RGB images go through
:func:`autoseg.data.io.read_image` as before; multi-band TIFFs and GeoTIFFs are read band by
band, each chosen band scaled to uint8 by its own percentiles (2nd..98th by default, uint8
bands kept as stored), the same rules as :mod:`autoseg.data.geotiff` uses for streamed
prediction, so a model is trained on the pixels it later predicts on. With rasterio (the
``autoseg[geo]`` extra) the file is read through GDAL (nodata and masks left out of the
percentiles and set to 0); without it, through ``tifffile`` (first page; the GDAL nodata
tag is honoured, internal masks are not).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

import numpy as np
import tifffile

from autoseg.data.geotiff_bands import (
    DEFAULT_PERCENTILES,
    BandScale,
    choose_bands,
    percentile_range,
)
from autoseg.data.io import PathLike, is_geotiff, read_image
from autoseg.data.transforms import (
    ResizeInfo,
    longest_side_shape,
    resize_image,
    resize_longest_side,
)
from autoseg.errors import AutosegError, SettingsError

RGB = 3
_TIFF_SUFFIXES = (".tif", ".tiff")
_GDAL_NODATA = 42113  # GDAL's private TIFF tag: the nodata value as text


class BandsError(AutosegError, ValueError):
    """An image's bands do not fit the model's ``model.in_channels`` / ``data.bands``."""


def _is_tiff(path: PathLike) -> bool:
    return str(path).lower().endswith(_TIFF_SUFFIXES)


def _has_rasterio() -> bool:
    return importlib.util.find_spec("rasterio") is not None


def needs_band_reader(path: PathLike, in_channels: int = RGB, bands: object = None) -> bool:
    """Whether ``path`` is read band by band rather than as a plain RGB image.

    True for every image when the model takes other than 3 channels or bands are chosen,
    and for GeoTIFFs (so 16-bit rasters get per-band scaling, as in streamed prediction).
    """
    if in_channels != RGB or bands is not None:
        return True
    return _is_tiff(path) and is_geotiff(path)


def _tiff_page(path: PathLike) -> tuple[np.ndarray, float | None]:
    """First page of a TIFF as ``(H, W, C)`` and its GDAL nodata value."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        array, axes = np.asarray(page.asarray()), page.axes
        tag = page.tags.get(_GDAL_NODATA)
    if array.ndim == 2:
        array = array[:, :, None]
    elif axes.startswith("S"):  # planar storage: (bands, H, W)
        array = np.moveaxis(array, 0, -1)
    if array.ndim != 3:
        raise BandsError(f"{path}: unsupported TIFF layout {axes} with shape {array.shape}.")
    try:
        nodata = None if tag is None else float(str(tag.value).strip("\x00 "))
    except ValueError:
        nodata = None
    return array, nodata


def _read_tifffile_bands(
    chosen: Sequence[int], array: np.ndarray, nodata: float | None
) -> np.ndarray:
    """Scale the chosen bands of a channels-last array as :mod:`autoseg.data.geotiff` does.

    Each band's percentiles leave out its own nodata pixels (GDAL's per-band mask); a pixel
    is valid when it is valid in every chosen band, and invalid pixels are 0.
    """
    height, width, _ = array.shape
    distinct = list(dict.fromkeys(chosen))
    keep = {
        band: np.ones((height, width), dtype=bool)
        if nodata is None
        else array[:, :, band - 1] != np.asarray(nodata).astype(array.dtype)
        for band in distinct
    }
    valid = np.logical_and.reduce([keep[band] for band in distinct])
    if array.dtype.kind == "f":
        valid &= np.isfinite(array[:, :, [b - 1 for b in distinct]]).all(axis=2)
    image = np.zeros((height, width, len(chosen)), dtype=np.uint8)
    for channel, band in enumerate(chosen):
        values = array[:, :, band - 1]
        if values.dtype == np.uint8:  # kept as stored, like 8-bit tiles
            scale = BandScale(band, 0.0, 255.0)
        else:
            scale = BandScale(band, *percentile_range(values, keep[band], DEFAULT_PERCENTILES))
        image[:, :, channel] = np.where(valid, scale.apply(values), 0)
    return image


def _band_count(path: PathLike) -> int:
    """Bands of the first page of a TIFF, from its header."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        return int(page.samplesperpixel)


def _choose(path: PathLike, count: int, in_channels: int, bands: object) -> tuple[int, ...]:
    """The bands to read, or a :class:`BandsError` naming the file and the fix."""
    if bands is None and in_channels != RGB and count != in_channels:
        raise BandsError(
            f"{path} has {count} band(s) but model.in_channels={in_channels}: give every "
            f"image {in_channels} bands, or choose {in_channels} of them with data.bands."
        )
    try:
        return choose_bands(count, bands, None if in_channels == RGB else in_channels)
    except SettingsError as err:
        raise BandsError(f"{path}: {err}") from None


def _not_a_tiff(path: PathLike, in_channels: int) -> BandsError:
    return BandsError(
        f"{path}: a model with model.in_channels={in_channels} reads multi-band TIFF images; "
        "this file is not a TIFF."
    )


def read_model_image(path: PathLike, in_channels: int = RGB, bands: object = None) -> np.ndarray:
    """Read an image as the model takes it: ``(H, W, in_channels)`` uint8.

    Args:
        path: An image file; other than 3 channels need a (multi-band) TIFF.
        in_channels: Channels the model takes (``model.in_channels``).
        bands: 1-based bands to use (``data.bands``), ``None`` for the default choice:
            bands 1..3 (or band 1 thrice) for RGB models, and every band for others.

    Raises:
        BandsError: the file's bands do not fit ``in_channels`` or ``bands``; the message
            names the file.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> path = Path(tempfile.mkdtemp()) / "four.tif"
        >>> tifffile.imwrite(path, np.arange(64, dtype=np.uint16).reshape(4, 4, 4))
        >>> read_model_image(path, in_channels=4).shape
        (4, 4, 4)

    """
    if not needs_band_reader(path, in_channels, bands):
        return read_image(path)
    if not _is_tiff(path):
        if in_channels != RGB:
            raise _not_a_tiff(path, in_channels)
        return read_image(path)[:, :, [b - 1 for b in _choose(path, RGB, RGB, bands)]]
    if _has_rasterio():
        from autoseg.data.geotiff import describe_raster, read_window

        chosen = _choose(path, _band_count(path), in_channels, bands)
        return read_window(describe_raster(path, list(chosen), in_channels=len(chosen))).image
    array, nodata = _tiff_page(path)
    chosen = _choose(path, array.shape[2], in_channels, bands)
    return _read_tifffile_bands(chosen, array, nodata)


def check_band_counts(
    paths: Sequence[PathLike], in_channels: int = RGB, bands: object = None
) -> None:
    """Check from the headers that every image has the bands the model needs.

    Raises:
        BandsError: the first image that does not fit; the message names it.

    """
    if in_channels == RGB and bands is None:
        return
    for path in paths:
        if _is_tiff(path):
            _choose(path, _band_count(path), in_channels, bands)
        elif in_channels != RGB:
            raise _not_a_tiff(path, in_channels)
        else:
            _choose(path, RGB, RGB, bands)


def resize_bands(image: np.ndarray, size: int) -> tuple[np.ndarray, ResizeInfo]:
    """:func:`~autoseg.data.transforms.resize_longest_side` for any number of channels.

    Three channels go through it unchanged; others are resized one channel at a time with
    the same filter (:func:`~autoseg.data.transforms.resize_image`).

    Example:
        >>> resize_bands(np.zeros((10, 20, 6), np.uint8), 8)[0].shape
        (4, 8, 6)

    """
    if image.ndim == 3 and image.shape[2] == RGB:
        return resize_longest_side(image, size)
    height, width = image.shape[:2]
    new_hw = longest_side_shape(height, width, size)
    info = ResizeInfo(original_hw=(height, width), resized_hw=new_hw, size=size)
    return resize_image(image, new_hw), info
