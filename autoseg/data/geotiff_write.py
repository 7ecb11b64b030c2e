"""Writing masks and probabilities as GeoTIFF beside an input raster (extra ``autoseg[geo]``).

Outputs carry the input's CRS and transform, are tiled (256 x 256 blocks) and deflate
compressed (floating-point predictor for probabilities), and may be written window by window
into a file opened once, so that prediction can stream through a raster larger than memory.

Nodata: where the input was nodata (``valid == False``), masks hold :data:`MASK_NODATA`
(255, autoseg's ignore value, so class values must be 0..254), and probabilities hold the
input's nodata value when it is finite and outside 0..1 (e.g. -9999), otherwise NaN.

Writes are atomic: pixels go to a hidden temporary file in the target folder, renamed onto
the real name with :func:`os.replace` only when the writer closes without error. An
existing file is never replaced unless ``overwrite=True``.
"""

from __future__ import annotations

import importlib
import math
import os
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import numpy as np

from autoseg.data.geotiff import (
    PathLike,
    RasterInfo,
    Window,
    check_window,
    clip_window,
    import_rasterio,
)
from autoseg.errors import OutputExistsError, SettingsError

MASK_NODATA = 255
"""Mask value written where the input raster was nodata."""
BLOCK_SIZE = 256
"""Tile width and height of written GeoTIFFs."""

Kind = Literal["mask", "probabilities"]


def _probability_nodata(input_nodata: float | None) -> float:
    """The input's nodata when it cannot be mistaken for a probability, else NaN."""
    if input_nodata is None or not math.isfinite(input_nodata) or 0.0 <= input_nodata <= 1.0:
        return math.nan
    if float(np.float32(input_nodata)) != input_nodata:
        return math.nan
    return float(input_nodata)


def _colormap(class_colors: Mapping[int, Sequence[int]]) -> dict[int, tuple[int, ...]]:
    """Check ``{class value: (r, g, b[, a])}`` and give GDAL's RGBA color table."""
    table: dict[int, tuple[int, ...]] = {}
    for value, color in class_colors.items():
        rgba = tuple(int(c) for c in color)
        if not 0 <= int(value) < MASK_NODATA or len(rgba) not in (3, 4):
            raise SettingsError(
                f"class_colors maps class values 0..254 to (r, g, b) colors, got {value!r}: "
                f"{color!r}."
            )
        if not all(0 <= c <= 255 for c in rgba):
            raise SettingsError(f"color {color!r} of class {value!r} is not 0..255.")
        table[int(value)] = rgba if len(rgba) == 4 else (*rgba, 255)
    table.setdefault(MASK_NODATA, (0, 0, 0, 0))
    return table


def _profile(info: RasterInfo, kind: Kind, count: int, block_size: int) -> dict[str, Any]:
    """Creation options for a tiled, deflate-compressed GeoTIFF on the input's grid."""
    rasterio = import_rasterio()
    is_mask = kind == "mask"
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": info.width,
        "height": info.height,
        "count": 1 if is_mask else count,
        "dtype": "uint8" if is_mask else "float32",
        "crs": None if info.crs is None else rasterio.crs.CRS.from_user_input(info.crs),
        "transform": rasterio.Affine(*info.transform),
        "nodata": MASK_NODATA if is_mask else _probability_nodata(info.nodata),
        "tiled": True,
        "blockxsize": block_size,
        "blockysize": block_size,
        "compress": "deflate",
        "bigtiff": "IF_SAFER",  # streamed outputs of huge rasters may pass 4 GB
    }
    if not is_mask:
        profile["predictor"] = 3  # floating-point predictor
    return profile


class GeoTiffWriter:
    """A mask or probability GeoTIFF on the grid of ``info``, written whole or window by window.

    Use it as a context manager: on a clean exit the file appears under ``path``; on an
    error the temporary file is removed and nothing appears.

    Args:
        path: The output ``.tif``.
        info: The input raster's description (grid, CRS, transform, nodata).
        kind: ``"mask"`` (uint8 class values, one band) or ``"probabilities"`` (float32).
        classes: Probability bands: the number of classes, or 1 for binary.
        class_colors: For masks, ``{class value: (r, g, b)}``, written as a color table.
        overwrite: Replace an existing file at ``path``.
        block_size: Tile size, a multiple of 16.

    Raises:
        OutputExistsError: ``path`` exists (and ``overwrite`` is false) or is a folder.
        SettingsError: An argument is out of range.

    Example:
        >>> import tempfile
        >>> from autoseg.data.geotiff import BandScale
        >>> info = RasterInfo(Path("in.tif"), 4, 2, 1, ("uint16",), "EPSG:32633",
        ...                   (10.0, 0.0, 5e5, 0.0, -10.0, 4.6e6), None, (1, 1, 1),
        ...                   (BandScale(1, 0.0, 1.0),) * 3, (2.0, 98.0))
        >>> out = Path(tempfile.mkdtemp()) / "mask.tif"
        >>> with GeoTiffWriter(out, info, "mask") as writer:
        ...     writer.write(np.ones((2, 2), np.uint8), (0, 0, 2, 2))
        ...     writer.write(np.zeros((2, 2), np.uint8), (0, 2, 2, 2))
        >>> sorted(p.name for p in out.parent.iterdir())
        ['mask.tif']

    """

    def __init__(
        self,
        path: PathLike,
        info: RasterInfo,
        kind: Kind = "mask",
        *,
        classes: int = 1,
        class_colors: Mapping[int, Sequence[int]] | None = None,
        overwrite: bool = False,
        block_size: int = BLOCK_SIZE,
    ) -> None:
        if kind not in ("mask", "probabilities"):
            raise SettingsError(f'kind must be "mask" or "probabilities", got {kind!r}.')
        if not isinstance(classes, int) or classes < 1:
            raise SettingsError(f"classes must be a positive integer, got {classes!r}.")
        if block_size < 16 or block_size % 16:
            raise SettingsError(f"block_size must be a multiple of 16, got {block_size}.")
        if class_colors is not None and kind != "mask":
            raise SettingsError("class_colors applies to masks only.")
        self.path, self.info, self.kind = Path(path), info, kind
        self._overwrite = overwrite
        self._check_target()
        profile = _profile(info, kind, classes, block_size)
        self.nodata: float = profile["nodata"]
        self.count: int = profile["count"]
        rasterio = import_rasterio()
        self._window = importlib.import_module("rasterio.windows").Window
        if not self.path.parent.is_dir():
            raise FileNotFoundError(f"{self.path.parent}: no such folder for {self.path.name}.")
        # GDAL creates the hidden file itself, so it gets the usual permissions (not 0600).
        self._tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(6)}.tmp")
        try:
            self._dataset = rasterio.open(self._tmp, "w", **profile)
            if class_colors:
                self._dataset.write_colormap(1, _colormap(class_colors))
        except BaseException:
            self._remove_tmp()
            raise

    def _check_target(self) -> None:
        """Refuse a folder, or an existing file unless overwriting was asked for."""
        if self.path.is_dir():
            raise OutputExistsError(f"{self.path} is a folder; give a .tif file path.")
        if self.path.exists() and not self._overwrite:
            raise OutputExistsError(
                f"{self.path} already exists; choose another name or pass overwrite=True."
            )

    def __enter__(self) -> GeoTiffWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()

    def _remove_tmp(self) -> None:
        for leftover in (self._tmp, self._tmp.with_name(self._tmp.name + ".aux.xml")):
            leftover.unlink(missing_ok=True)

    def abort(self) -> None:
        """Close and delete the temporary file; nothing appears under ``path``."""
        try:
            if not self._dataset.closed:
                self._dataset.close()
        finally:
            self._remove_tmp()

    def close(self) -> None:
        """Finish the file and move it onto ``path`` atomically."""
        try:
            self._dataset.close()
            self._check_target()
            os.replace(self._tmp, self.path)
        finally:
            self._remove_tmp()

    def _pixels(self, array: np.ndarray) -> np.ndarray:
        """Bring a mask ``(h, w)`` or probabilities ``(C, h, w)`` or ``(h, w)`` to 3-D."""
        array = np.asarray(array)
        if array.ndim == 2:
            array = array[None]
        if array.ndim != 3 or array.shape[0] != self.count:
            raise SettingsError(
                f"{self.kind} of shape {array.shape} do not fit a {self.count}-band output."
            )
        if self.kind == "probabilities":
            return array.astype(np.float32)
        if array.dtype.kind not in "biu":
            raise SettingsError(f"a mask holds integer class values, got dtype {array.dtype}.")
        if array.size and (array.min() < 0 or array.max() >= MASK_NODATA):
            raise SettingsError(
                f"mask values must be 0..{MASK_NODATA - 1} ({MASK_NODATA} marks nodata), "
                f"got {array.min()}..{array.max()}."
            )
        return array.astype(np.uint8)

    def write(
        self, array: np.ndarray, window: Window | None = None, valid: np.ndarray | None = None
    ) -> None:
        """Write a window ``(row_off, col_off, height, width)``, or the whole raster.

        Args:
            array: A mask ``(h, w)`` of class values, or probabilities ``(C, h, w)``
                (``(h, w)`` for binary), covering the window.
            window: Where it goes; parts outside the raster are dropped. ``None``: all of it.
            valid: ``(h, w)`` bool, ``False`` where the input was nodata (written as nodata).

        """
        pixels = self._pixels(array)
        height, width = pixels.shape[1:]
        where: Window = (0, 0, *self.info.shape) if window is None else check_window(window)
        if where[2:] != (height, width):
            raise SettingsError(f"{self.kind} of size {(height, width)} do not fit window {where}.")
        if valid is not None:
            if np.shape(valid) != (height, width):
                raise SettingsError(f"valid of shape {np.shape(valid)} does not fit {where}.")
            pixels = np.where(np.asarray(valid, bool)[None], pixels, pixels.dtype.type(self.nodata))
        clipped = clip_window(where, *self.info.shape)
        if clipped is None:
            return
        rows, cols, (r0, c0, hh, ww) = clipped
        region = self._window(c0, r0, ww, hh)
        self._dataset.write(np.ascontiguousarray(pixels[:, rows, cols]), window=region)


def write_mask(
    path: PathLike,
    mask: np.ndarray,
    info: RasterInfo,
    *,
    valid: np.ndarray | None = None,
    class_colors: Mapping[int, Sequence[int]] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a whole ``(H, W)`` mask of class values as a GeoTIFF; see :class:`GeoTiffWriter`.

    Returns:
        ``path``.

    """
    with GeoTiffWriter(
        path, info, "mask", class_colors=class_colors, overwrite=overwrite
    ) as writer:
        writer.write(mask, valid=valid)
    return Path(path)


def write_probabilities(
    path: PathLike,
    proba: np.ndarray,
    info: RasterInfo,
    *,
    valid: np.ndarray | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``(C, H, W)`` (or binary ``(H, W)``) probabilities as a float32 GeoTIFF.

    Returns:
        ``path``.

    """
    classes = 1 if np.ndim(proba) == 2 else int(np.shape(proba)[0])
    with GeoTiffWriter(path, info, "probabilities", classes=classes, overwrite=overwrite) as writer:
        writer.write(proba, valid=valid)
    return Path(path)
