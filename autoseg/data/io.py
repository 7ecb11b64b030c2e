"""Reading images and masks from disk into plain numpy arrays.

Images always come back as ``(H, W, 3)`` uint8 RGB so that every later step can assume one
format. Masks come back with their raw stored values (class ids, 0/255, palette indices) so
that the mask helpers in :mod:`autoseg.labels.masks` decide what the values mean.

Pixels are returned in stored order: EXIF orientation tags are ignored, because annotation
masks are drawn on the stored pixel grid and rotating only the photo would misalign them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, UnidentifiedImageError

PathLike = str | os.PathLike[str]

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
"""File name endings treated as images when a folder is listed."""

_TIFF_SUFFIXES = (".tif", ".tiff")
# PIL modes whose pixels PIL decodes at full precision; other TIFF modes with more than
# 8 bits per sample are squeezed to 8 bits by keeping the high byte, which turns 12-bit
# microscopy data into an almost black image, so those go through tifffile instead.
_PIL_HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I", "F")
_LOW_PERCENTILE = 0.5
_HIGH_PERCENTILE = 99.5
_EXIF_ORIENTATION = 0x0112


def _needs_tifffile(img: Image.Image) -> bool:
    """Whether PIL would lose precision on this already-opened TIFF."""
    if img.format != "TIFF" or img.mode in _PIL_HIGH_DEPTH_MODES:
        return False
    bits = img.tag_v2.get(258, (8,))  # 258 = BitsPerSample
    bits = bits if isinstance(bits, tuple) else (bits,)
    sample_format = img.tag_v2.get(339, 1)  # 339 = SampleFormat, 3 = IEEE float
    sample_format = sample_format[0] if isinstance(sample_format, tuple) else sample_format
    return max(bits) > 8 or sample_format == 3


def _read_tiff_array(path: PathLike) -> np.ndarray:
    """First page of a TIFF as ``(H, W)`` or ``(H, W, C)``, channels last."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        array, axes = np.asarray(page.asarray()), page.axes
    if array.ndim == 3 and axes.startswith("S"):
        array = np.moveaxis(array, 0, -1)  # planar (C, H, W) storage, any band count
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3):
        raise ValueError(f"{path}: unsupported TIFF layout with shape {array.shape}")
    return array


def _open_pixels(path: PathLike) -> tuple[np.ndarray | None, Image.Image | None]:
    """Open with PIL, or return the tifffile array when PIL cannot read the file faithfully."""
    is_tiff = str(path).lower().endswith(_TIFF_SUFFIXES)
    try:
        img = Image.open(path)
    except UnidentifiedImageError:
        if not is_tiff:
            raise
        return _read_tiff_array(path), None
    if _needs_tifffile(img):
        img.close()
        return _read_tiff_array(path), None
    img.seek(0)  # multi-page files: first page only
    return None, img


def scale_to_uint8(array: np.ndarray) -> np.ndarray:
    """Map any numeric array to uint8 with a per-image 0.5..99.5 percentile stretch.

    The stretch keeps a few hot or dead pixels from flattening the contrast of 12/16-bit and
    float images. All channels share one range so color balance is preserved. A constant
    image becomes all zeros. uint8 input is returned unchanged and bool input maps to 0/255.

    Args:
        array: Array of any numeric or bool dtype.

    Returns:
        uint8 array of the same shape.

    """
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    values = array.astype(np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(array.shape, dtype=np.uint8)
    low, high = np.percentile(values[finite], [_LOW_PERCENTILE, _HIGH_PERCENTILE])
    if high <= low:
        return np.zeros(array.shape, dtype=np.uint8)
    values = np.nan_to_num(values, nan=low, posinf=high, neginf=low)
    scaled = (values - low) * (255.0 / (high - low))
    return np.clip(scaled + 0.5, 0, 255).astype(np.uint8)


def _writable(array: np.ndarray) -> np.ndarray:
    """Return a C-contiguous, writable array (arrays viewing PIL's buffer are read-only)."""
    if array.flags.c_contiguous and array.flags.writeable:
        return array
    return np.array(array, order="C")


def _to_rgb(array: np.ndarray) -> np.ndarray:
    """Bring an ``(H, W)`` or ``(H, W, C)`` array to three channels."""
    if array.ndim == 2:
        return np.repeat(array[:, :, None], 3, axis=2)
    if array.shape[2] >= 3:
        return array[:, :, :3]  # alpha / extra channels dropped
    return np.repeat(array[:, :, :1], 3, axis=2)  # grey + alpha


def read_image(path: PathLike) -> np.ndarray:
    """Read an image file as an ``(H, W, 3)`` uint8 RGB array.

    PNG, JPEG, TIFF and BMP are supported (anything PIL opens works too). Conversions:

    * grayscale and 1-bit images are replicated to three channels;
    * palette images are converted to their RGB colors;
    * RGBA / LA images lose their alpha channel (it is dropped, not composited);
    * 16-bit, 32-bit and float images (including multi-channel TIFFs, read with
      ``tifffile``) are stretched per image so that the 0.5th..99.5th percentile maps to
      0..255 (see :func:`scale_to_uint8`). 16-bit RGB PNGs are an exception: PIL keeps
      their high byte only.
    * only the first page of multi-page files is read; EXIF orientation is ignored.

    Args:
        path: Image file.

    Returns:
        ``(H, W, 3)`` uint8 array.

    Raises:
        FileNotFoundError: The file does not exist.
        PIL.UnidentifiedImageError: The file is not an image PIL or tifffile can read.

    """
    array, img = _open_pixels(path)
    if img is not None:
        with img:
            keep = img.mode in _PIL_HIGH_DEPTH_MODES or img.mode in ("RGB", "L")
            array = np.asarray(img if keep else img.convert("RGB"))
    return _writable(_to_rgb(scale_to_uint8(array)))


def read_mask(path: PathLike) -> np.ndarray:
    """Read a mask file with its raw stored values.

    * L, I;16, I and F images: ``(H, W)`` with the stored values and dtype;
    * palette (P) images: ``(H, W)`` palette *indices* (not colors), which is how most
      annotation tools store class ids;
    * 1-bit images and bool arrays: ``(H, W)`` uint8 0/1;
    * LA / PA images: the L values / palette indices, alpha dropped;
    * RGB / RGBA images: ``(H, W, 3)`` uint8, alpha dropped.

    Args:
        path: Mask file.

    Returns:
        ``(H, W)`` array of raw values, or ``(H, W, 3)`` uint8 for color masks.

    Raises:
        FileNotFoundError: The file does not exist.
        PIL.UnidentifiedImageError: The file is not an image PIL or tifffile can read.

    """
    array, img = _open_pixels(path)
    if img is not None:
        with img:
            if img.mode in ("LA", "PA"):
                array = np.asarray(img)[:, :, 0]
            elif img.mode in ("RGBA", "RGBX", "CMYK", "YCbCr", "HSV", "LAB"):
                array = np.asarray(img.convert("RGB"))
            else:
                array = np.asarray(img)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    if array.ndim == 3:
        array = array[:, :, 0] if array.shape[2] < 3 else array[:, :, :3]
    return _writable(array)


def image_size(path: PathLike) -> tuple[int, int]:
    """Return ``(H, W)`` of an image from its header, without decoding the pixels.

    Args:
        path: Image or mask file.

    Returns:
        ``(height, width)``.

    Raises:
        FileNotFoundError: The file does not exist.
        PIL.UnidentifiedImageError: The file is not an image PIL or tifffile can read.

    """
    try:
        with Image.open(path) as img:
            width, height = img.size
            return height, width
    except UnidentifiedImageError:
        if not str(path).lower().endswith(_TIFF_SUFFIXES):
            raise
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        return int(page.imagelength), int(page.imagewidth)


def decode_image(path: PathLike) -> tuple[tuple[int, int], int]:
    """Decode every pixel of an image file, to prove it is whole; return its size.

    Used by the pre-training check: a header alone does not show that a file is truncated.
    The pixels are decoded but not converted (no RGB conversion or percentile scaling).

    Args:
        path: Image or mask file.

    Returns:
        ``((height, width), orientation)``, the EXIF orientation tag (1..8, 1 = none).

    Raises:
        FileNotFoundError: The file does not exist.
        PIL.UnidentifiedImageError: The file is not an image PIL or tifffile can read.
        OSError: The file is truncated or damaged.
        PIL.Image.DecompressionBombError: The header claims more pixels than PIL allows.

    """
    array, img = _open_pixels(path)
    if img is None:
        assert array is not None
        return (int(array.shape[0]), int(array.shape[1])), 1
    with img:
        img.load()
        orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
        width, height = img.size
    return (height, width), orientation if isinstance(orientation, int) else 1


def list_images(folder: PathLike) -> list[Path]:
    """List the image files directly inside a folder, sorted by name.

    Args:
        folder: Folder to list (not searched recursively).

    Returns:
        Paths whose suffix is one of :data:`IMAGE_EXTENSIONS` (case-insensitive).

    """
    return sorted(
        p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )


# GeoTIFF tags (GeoTIFF 1.1 spec): the key directory holds the CRS, the others the transform.
_GEO_KEY_DIRECTORY = 34735
_MODEL_PIXEL_SCALE = 33550
_MODEL_TIEPOINT = 33922
_MODEL_TRANSFORMATION = 34264
_MODEL_TYPE_KEY = 1024  # 1 projected, 2 geographic, 3 geocentric
_CRS_KEYS = (2048, 3072)  # GeographicTypeGeoKey, ProjectedCSTypeGeoKey
_GEO_TAGS = (_GEO_KEY_DIRECTORY, _MODEL_PIXEL_SCALE, _MODEL_TIEPOINT, _MODEL_TRANSFORMATION)
_IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def _has_crs(geo_keys: tuple[int, ...]) -> bool:
    """Whether a GeoKeyDirectory names a model type or a CRS."""
    entries = geo_keys[4 : 4 + 4 * geo_keys[3]] if len(geo_keys) >= 4 else ()
    for i in range(0, len(entries) - 3, 4):
        key, location, value = entries[i], entries[i + 1], entries[i + 3]
        if location == 0 and value and (key == _MODEL_TYPE_KEY or key in _CRS_KEYS):
            return True
    return False


def _geotransform(tags: dict[int, tuple[float, ...]]) -> tuple[float, ...] | None:
    """The affine ``(a, b, c, d, e, f)`` from the model tags, or ``None`` without one."""
    matrix = tags.get(_MODEL_TRANSFORMATION, ())
    if len(matrix) == 16:
        return matrix[0], matrix[1], matrix[3], matrix[4], matrix[5], matrix[7]
    tie, scale = tags.get(_MODEL_TIEPOINT, ()), tags.get(_MODEL_PIXEL_SCALE, ())
    if len(tie) == 6 and len(scale) >= 2:
        i, j, _, x, y, _ = tie
        return scale[0], 0.0, x - i * scale[0], 0.0, -scale[1], y + j * scale[1]
    return None


def is_geotiff(path: PathLike) -> bool:
    """Whether a file is a georeferenced TIFF: it has a CRS or a non-identity geotransform.

    Read from the TIFF's own GeoTIFF tags with ``tifffile`` (no rasterio needed); sidecar
    files (``.tfw``, ``.aux.xml``) are not consulted. Several tie points (ground control
    points) also count. :func:`read_image` reads GeoTIFFs as plain TIFFs; code that wants
    georeferencing, band choice and nodata uses :mod:`autoseg.data.geotiff` for these files.

    Args:
        path: Any file; non-TIFF names and files that are not TIFFs give ``False``.

    Returns:
        ``True`` for a GeoTIFF.

    Raises:
        FileNotFoundError: The file does not exist.

    Example:
        >>> import tempfile
        >>> plain = Path(tempfile.mkdtemp()) / "plain.tif"
        >>> tifffile.imwrite(plain, np.zeros((4, 4), np.uint16))
        >>> is_geotiff(plain)
        False

    """
    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: no such file.")
    if not str(path).lower().endswith(_TIFF_SUFFIXES):
        return False
    try:
        with tifffile.TiffFile(path) as tif:
            page_tags = tif.pages[0].tags
            tags = {
                code: tuple(np.ravel(page_tags[code].value).tolist())
                for code in _GEO_TAGS
                if code in page_tags
            }
    except (tifffile.TiffFileError, ValueError, IndexError):
        return False
    if _has_crs(tuple(int(v) for v in tags.get(_GEO_KEY_DIRECTORY, ()))):
        return True
    if len(tags.get(_MODEL_TIEPOINT, ())) > 6:
        return True
    transform = _geotransform(tags)
    return transform is not None and tuple(float(v) for v in transform) != _IDENTITY
