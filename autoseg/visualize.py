"""Writing predictions: mask PNGs and color overlays (the user's colors, else a fixed palette)."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image

from autoseg.data.io import read_image
from autoseg.labels.problem import Problem
from autoseg.outputs import PredictionFolder

# Sasha Trubetskoy's 20 distinct colors; class id k gets PALETTE[k % 20].
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (220, 190, 255),
    (170, 110, 40),
    (255, 250, 200),
    (128, 0, 0),
    (170, 255, 195),
    (128, 128, 0),
    (255, 215, 180),
    (0, 0, 128),
    (128, 128, 128),
)
BINARY_FOREGROUND = PALETTE[0]


def colors_by_class_id(problem: Problem) -> list[tuple[int, int, int]]:
    """One RGB color per class id: the user's ``class_colors`` if given, else ``PALETTE``."""
    if problem.colors is not None:
        return [problem.colors.color_of(k) for k in range(len(problem.classes))]
    return [PALETTE[k % len(PALETTE)] for k in range(len(problem.classes))]


def colorize(
    ids: np.ndarray, binary: bool, colors: Sequence[tuple[int, int, int]] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Return an RGB color image and the mask of colored pixels for class ids (H, W).

    ``colors[k]`` draws class id ``k`` (default: ``PALETTE``); binary foreground is red.
    """
    if binary:
        colored = ids > 0
        rgb = np.zeros((*ids.shape, 3), np.uint8)
        rgb[colored] = BINARY_FOREGROUND
        return rgb, colored
    colors = list(colors or ())
    lookup = np.array(
        [colors[k] if k < len(colors) else PALETTE[k % len(PALETTE)] for k in range(256)],
        np.uint8,
    )
    return lookup[ids], np.ones(ids.shape, bool)


def overlay(
    image: np.ndarray,
    ids: np.ndarray,
    binary: bool,
    alpha: float = 0.5,
    colors: Sequence[tuple[int, int, int]] | None = None,
) -> np.ndarray:
    """Blend class colors over an RGB image (H, W, 3) uint8."""
    rgb, colored = colorize(ids, binary, colors)
    out = image.astype(np.float32)
    out[colored] = (1 - alpha) * out[colored] + alpha * rgb[colored]
    return out.round().astype(np.uint8)


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def save_predictions(
    folder: PredictionFolder,
    image_paths: Sequence[str],
    masks: Sequence[np.ndarray],
    problem: Problem,
) -> None:
    """Write ``<stem>.png`` masks and ``overlays/<stem>.png`` for each image into ``folder``.

    Binary masks are saved as 0/255; multi-class masks as palette PNGs whose pixel values
    are the original class values (so they open as colors and read back as ids). With
    ``class_colors`` the palette and the overlays use the user's colors, so a predicted
    mask looks like a label mask. ``folder`` was checked before inference (see
    :class:`~autoseg.outputs.PredictionFolder`); each file is written atomically.
    """
    binary = problem.is_binary
    colors = colors_by_class_id(problem)
    to_ids = np.zeros(256, np.uint8)
    to_ids[list(problem.classes)] = np.arange(len(problem.classes))
    folder.begin()
    try:
        for path, mask, mask_file, overlay_file in zip(
            image_paths, masks, folder.masks, folder.overlays, strict=True
        ):
            if binary:
                png = Image.fromarray((mask * 255).astype(np.uint8))
                ids = mask
            else:
                ids = to_ids[mask]
                png = Image.fromarray(mask.astype(np.uint8))
                # Mode L becomes P with the same values: the file reads back as class values.
                png.putpalette(_value_palette(problem.classes, colors))
            folder.write(mask_file, _png_bytes(png))
            blended = overlay(read_image(path), ids, binary, colors=colors)
            folder.write(overlay_file, _png_bytes(Image.fromarray(blended)))
    finally:
        folder.finish()


def _value_palette(classes: Sequence[int], colors: Sequence[tuple[int, int, int]]) -> list[int]:
    """A 256-entry palette where original value ``classes[k]`` shows ``colors[k]``."""
    flat = [0] * (256 * 3)
    for value, color in zip(classes, colors, strict=True):
        flat[3 * int(value) : 3 * int(value) + 3] = color
    return flat
