"""Streaming prediction over a GeoTIFF: windowed reads, a model per block, windowed writes.

A raster is described once (:func:`~autoseg.data.geotiff.describe_raster`: band choice and
per-band scaling from the whole raster), then cut into blocks of ``block_size`` pixels. Each
block is read with ``margin`` pixels of context on every side (clipped at the raster's
edges), predicted, cropped back to the block and written into the output GeoTIFFs (tiled,
compressed, with the input's CRS, transform and nodata). Memory is bounded by one block
with its margin, so a raster larger than memory streams through, and every block is scaled
exactly as the whole raster would be. Where the input is nodata, the outputs are nodata.

Outputs are written atomically: they appear only when the whole raster is done.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from autoseg.data.geotiff import (
    DEFAULT_PERCENTILES,
    GeoTiffReader,
    PathLike,
    RasterInfo,
    Window,
    describe_raster,
)
from autoseg.data.geotiff_write import GeoTiffWriter
from autoseg.data.multiband import resize_bands
from autoseg.data.transforms import image_to_tensor, pad_tensor
from autoseg.errors import OutputExistsError, SettingsError
from autoseg.inference import batch_probabilities, probabilities_to_ids
from autoseg.labels.problem import Problem
from autoseg.models.segmenter import SamSegmenter
from autoseg.runtime import Runtime
from autoseg.tiling import TileSettings, tiled_probabilities

BlockFunction = Callable[[np.ndarray], np.ndarray]
"""``(h, w, C)`` uint8 image -> float32 probabilities ``(h, w)`` (binary) or ``(K, h, w)``."""

DEFAULT_BLOCK_SIZE = 2048
"""Block side in pixels: a multiple of the output tiles (256), about 50 MB of input per block."""


@dataclass(frozen=True)
class RasterPrediction:
    """What a streamed prediction wrote: the output paths, the input's description, blocks."""

    mask: Path
    probabilities: Path | None
    info: RasterInfo
    blocks: int


def block_windows(height: int, width: int, block_size: int) -> Iterator[Window]:
    """The blocks ``(row_off, col_off, h, w)`` tiling a raster, row by row, clipped at edges.

    Example:
        >>> list(block_windows(3, 5, 4))
        [(0, 0, 3, 4), (0, 4, 3, 1)]

    """
    for row in range(0, height, block_size):
        for col in range(0, width, block_size):
            yield row, col, min(block_size, height - row), min(block_size, width - col)


def with_margin(block: Window, margin: int, height: int, width: int) -> Window:
    """The block grown by ``margin`` on every side, clipped to the raster.

    Example:
        >>> with_margin((0, 4, 3, 1), 2, 3, 5)
        (0, 2, 3, 3)

    """
    row, col, h, w = block
    top, left = max(0, row - margin), max(0, col - margin)
    bottom, right = min(height, row + h + margin), min(width, col + w + margin)
    return top, left, bottom - top, right - left


def check_outputs(source: Path, outputs: Sequence[Path | None], overwrite: bool) -> None:
    """Refuse, before any work, outputs that exist, repeat, or would replace the input.

    Raises:
        OutputExistsError: an output is the input raster, the same as another output, a
            folder, or exists while ``overwrite`` is false.
        FileNotFoundError: an output's folder does not exist.

    """
    given = [Path(p) for p in outputs if p is not None]
    resolved = [p.resolve() for p in given]
    for path, real in zip(given, resolved, strict=True):
        if real == source.resolve():
            raise OutputExistsError(
                f"{path} is the input raster; give another path so the input is kept."
            )
        if resolved.count(real) > 1:
            raise OutputExistsError(f"{path} is given for both outputs; give two paths.")
        if path.is_dir():
            raise OutputExistsError(f"{path} is a folder; give a .tif file path.")
        if path.exists() and not overwrite:
            raise OutputExistsError(
                f"{path} already exists; choose another name or pass overwrite=True."
            )
        if not path.parent.is_dir():
            raise FileNotFoundError(f"{path.parent}: no such folder for {path.name}.")


def _check_block_options(block_size: object, margin: object) -> tuple[int, int]:
    for name, value, low in (("block_size", block_size, 16), ("margin", margin, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise SettingsError(f"{name} must be an integer >= {low}, got {value!r}.")
    return int(block_size), int(margin)  # type: ignore[call-overload]


def _probabilities_of(function: BlockFunction, image: np.ndarray) -> np.ndarray:
    """Call the block function and check that its output covers the block."""
    probabilities = np.asarray(function(image), dtype=np.float32)
    if probabilities.ndim not in (2, 3) or probabilities.shape[-2:] != image.shape[:2]:
        raise ValueError(
            f"the block function returned shape {probabilities.shape} for a block of "
            f"{image.shape[:2]}; it must return (h, w) or (K, h, w) probabilities."
        )
    return probabilities


def predict_raster(
    block_probabilities: BlockFunction,
    source: PathLike | RasterInfo,
    mask_path: PathLike,
    probabilities_path: PathLike | None = None,
    *,
    to_mask: Callable[[np.ndarray], np.ndarray] = probabilities_to_ids,
    bands: object = None,
    in_channels: int | None = None,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
    block_size: int = DEFAULT_BLOCK_SIZE,
    margin: int = 256,
    class_colors: Mapping[int, Sequence[int]] | None = None,
    overwrite: bool = False,
    say: Callable[[str], None] | None = None,
) -> RasterPrediction:
    """Predict a raster block by block and write its mask (and probabilities) as GeoTIFFs.

    Args:
        block_probabilities: The model on one block, see :data:`BlockFunction`.
        source: The input GeoTIFF, or its description (then ``bands``, ``in_channels``
            and ``percentiles`` are those of the description).
        mask_path: Output ``.tif`` of class values (uint8; 255 where the input is nodata).
        probabilities_path: Optional output ``.tif`` of float32 probabilities, one band per
            class (one band, the foreground, for binary).
        to_mask: Probabilities -> class values, e.g. via ``Problem.to_original``.
        bands: 1-based bands to read (e.g. ``[3, 2, 1]``); ``None``: the default choice.
        in_channels: Channels the block function takes (``None``: 3).
        percentiles: Per-band percentiles mapped to 0 and 255.
        block_size: Block side in pixels.
        margin: Context read around each block (and cropped away); at least the block
            function's reach, so that blocks join as if the raster were predicted whole.
        class_colors: ``{class value: (r, g, b)}`` written as the mask's color table.
        overwrite: Replace existing outputs.
        say: Progress messages (``None``: silent).

    Returns:
        The :class:`RasterPrediction`.

    Raises:
        OutputExistsError: An output exists (without ``overwrite``) or is the input.
        SettingsError: ``block_size``/``margin`` or the band choice is invalid.

    Example:
        >>> import tempfile, rasterio
        >>> folder = Path(tempfile.mkdtemp())
        >>> with rasterio.open(folder / "in.tif", "w", driver="GTiff", width=40, height=30,
        ...                    count=1, dtype="uint16", crs="EPSG:32633",
        ...                    transform=rasterio.Affine(10, 0, 5e5, 0, -10, 4.6e6)) as f:
        ...     f.write(np.arange(1200, dtype="uint16").reshape(1, 30, 40))
        >>> bright = lambda image: (image[:, :, 0] / 255.0).astype(np.float32)
        >>> done = predict_raster(bright, folder / "in.tif", folder / "mask.tif",
        ...                       block_size=16, margin=0)
        >>> done.blocks, rasterio.open(done.mask).crs.to_string()
        (6, 'EPSG:32633')

    """
    size, reach = _check_block_options(block_size, margin)
    path = source.path if isinstance(source, RasterInfo) else Path(source)
    outputs = (Path(mask_path), None if probabilities_path is None else Path(probabilities_path))
    check_outputs(path, outputs, overwrite)
    info = (
        source
        if isinstance(source, RasterInfo)
        else describe_raster(path, bands, in_channels=in_channels, percentiles=percentiles)
    )
    blocks = list(block_windows(info.height, info.width, size))
    if say is not None:
        say(f"Predicting {path.name} ({info.height} x {info.width} px) in {len(blocks)} block(s).")
    writers: list[GeoTiffWriter] = []
    try:
        with GeoTiffReader(info) as reader:
            for block in blocks:
                _predict_block(
                    block,
                    reach,
                    reader,
                    block_probabilities,
                    to_mask,
                    writers,
                    outputs,
                    class_colors,
                    overwrite,
                )
    except BaseException:
        for writer in writers:
            writer.abort()
        raise
    for writer in writers:
        writer.close()
    return RasterPrediction(outputs[0], outputs[1], info, len(blocks))


def _predict_block(
    block: Window,
    margin: int,
    reader: GeoTiffReader,
    function: BlockFunction,
    to_mask: Callable[[np.ndarray], np.ndarray],
    writers: list[GeoTiffWriter],
    outputs: tuple[Path, Path | None],
    class_colors: Mapping[int, Sequence[int]] | None,
    overwrite: bool,
) -> None:
    """Read one block with its margin, predict, crop the margin away, write."""
    info = reader.info
    read = with_margin(block, margin, info.height, info.width)
    image, valid = reader.read(read)
    probabilities = _probabilities_of(function, image)
    rows = slice(block[0] - read[0], block[0] - read[0] + block[2])
    cols = slice(block[1] - read[1], block[1] - read[1] + block[3])
    probabilities, valid = probabilities[..., rows, cols], valid[rows, cols]
    if not writers:  # the class count is known from the first block
        classes = 1 if probabilities.ndim == 2 else probabilities.shape[0]
        writers.append(
            GeoTiffWriter(outputs[0], info, "mask", class_colors=class_colors, overwrite=overwrite)
        )
        if outputs[1] is not None:
            writers.append(
                GeoTiffWriter(
                    outputs[1], info, "probabilities", classes=classes, overwrite=overwrite
                )
            )
    writers[0].write(to_mask(probabilities), block, valid)
    if len(writers) > 1:
        writers[1].write(probabilities, block, valid)


def untiled_probabilities(model: SamSegmenter, image: np.ndarray, runtime: Runtime) -> np.ndarray:
    """Probabilities of one ``(h, w, C)`` image resized whole to the model input and back.

    The untiled path of :func:`~autoseg.inference.iter_probabilities`, on an array.
    """
    resized, resize = resize_bands(image, model.image_size)
    batch = {
        "image": pad_tensor(image_to_tensor(resized), model.image_size)[None],
        "original_hw": torch.tensor([resize.original_hw]),
        "resized_hw": torch.tensor([resize.resized_hw]),
    }
    runtime.prepare(model).eval().to(runtime.device)
    return batch_probabilities(model, batch, runtime)[0]


def model_block_function(
    model: SamSegmenter,
    runtime: Runtime,
    *,
    tile: bool | str = True,
    tile_size: int | None = None,
    overlap: float = 0.25,
    batch_size: int = 4,
) -> BlockFunction:
    """The block function of a model: tiled windows at native scale, or the whole block.

    ``tile="auto"`` tiles blocks whose longest side exceeds twice the window (as
    ``predict(tile="auto")`` does images).
    """
    settings = TileSettings(tile, tile_size, overlap)

    def block_probabilities(image: np.ndarray) -> np.ndarray:
        if settings.tiles(*image.shape[:2], model.image_size):
            return tiled_probabilities(
                model, image, runtime, tile_size=tile_size, overlap=overlap, batch_size=batch_size
            )
        return untiled_probabilities(model, image, runtime)

    return block_probabilities


def predict_geotiff(
    model: SamSegmenter,
    problem: Problem,
    runtime: Runtime,
    source: PathLike,
    out_mask: PathLike,
    out_probabilities: PathLike | None = None,
    *,
    overwrite: bool = False,
    tile: bool | str = True,
    tile_size: int | None = None,
    overlap: float = 0.25,
    batch_size: int = 4,
    bands: Sequence[int] | None = None,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
    block_size: int = DEFAULT_BLOCK_SIZE,
    margin: int | None = None,
    say: Callable[[str], None] | None = None,
) -> RasterPrediction:
    """Predict a GeoTIFF with a fitted model and write its mask (and probabilities).

    The facade's ``SemanticSegmentor.predict_geotiff`` in one call: the raster's bands are
    those the model was trained on (``data.bands``, unless ``bands`` is given), mask values
    are the problem's original mask values (color problems get their colors as the mask's
    color table), and the raster streams through in blocks (:func:`predict_raster`).

    Args:
        model: The fitted segmenter.
        problem: Its label space.
        runtime: Device and precision (``resolve_runtime(env, inference=True)``).
        source: The input GeoTIFF.
        out_mask: The mask ``.tif`` to write.
        out_probabilities: Optional probabilities ``.tif``.
        overwrite: Replace existing outputs (the input is never replaced).
        tile: ``True`` windows at the model's native scale, ``"auto"`` only for large
            blocks, ``False`` each block resized whole to the model input.
        tile_size: Window side in pixels (``None``: the model input).
        overlap: Window overlap (0 .. 0.9).
        batch_size: Windows per forward pass.
        bands: 1-based bands to read; ``None``: the model's.
        percentiles: Per-band percentiles mapped to 0 and 255.
        block_size: Block side in pixels.
        margin: Context around each block; ``None``: half a window.
        say: Progress messages.

    Raises:
        OutputExistsError: An output exists (without ``overwrite``) or is the input.
        SettingsError: An option is out of range or the bands do not fit the model.

    """
    settings = TileSettings(tile, tile_size, overlap)  # checked before any work
    window = settings.window(model.image_size)
    chosen = model.bands if bands is None else tuple(bands)
    colors = None
    if problem.colors is not None:
        colors = {cid: (r, g, b) for r, g, b, cid in problem.colors.entries if cid < 255}
    function = model_block_function(
        model, runtime, tile=tile, tile_size=tile_size, overlap=overlap, batch_size=batch_size
    )
    return predict_raster(
        function,
        source,
        out_mask,
        out_probabilities,
        to_mask=lambda p: problem.to_original(probabilities_to_ids(p)),
        bands=None if chosen is None else list(chosen),
        in_channels=None if model.in_channels == 3 else model.in_channels,
        percentiles=percentiles,
        block_size=block_size,
        margin=math.ceil(window / 2) if margin is None else margin,
        class_colors=colors,
        overwrite=overwrite,
        say=say,
    )
