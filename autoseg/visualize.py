"""Writing predictions: mask PNGs and colour overlays (the user's colours, else a fixed palette)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from autoseg.data.io import read_image
from autoseg.problem import Problem

# Sasha Trubetskoy's 20 distinct colours; class id k gets PALETTE[k % 20].
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


def class_colours(problem: Problem) -> list[tuple[int, int, int]]:
    """One RGB colour per class id: the user's ``class_colors`` if given, else ``PALETTE``."""
    if problem.colors is not None:
        return [problem.colors.colour_of(k) for k in range(len(problem.classes))]
    return [PALETTE[k % len(PALETTE)] for k in range(len(problem.classes))]


def colorize(
    ids: np.ndarray, binary: bool, colours: Sequence[tuple[int, int, int]] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Return an RGB colour image and the mask of coloured pixels for class ids (H, W).

    ``colours[k]`` draws class id ``k`` (default: ``PALETTE``); binary foreground is red.
    """
    if binary:
        colored = ids > 0
        rgb = np.zeros((*ids.shape, 3), np.uint8)
        rgb[colored] = BINARY_FOREGROUND
        return rgb, colored
    colours = list(colours or ())
    lookup = np.array(
        [colours[k] if k < len(colours) else PALETTE[k % len(PALETTE)] for k in range(256)],
        np.uint8,
    )
    return lookup[ids], np.ones(ids.shape, bool)


def overlay(
    image: np.ndarray,
    ids: np.ndarray,
    binary: bool,
    alpha: float = 0.5,
    colours: Sequence[tuple[int, int, int]] | None = None,
) -> np.ndarray:
    """Blend class colours over an RGB image (H, W, 3) uint8."""
    rgb, colored = colorize(ids, binary, colours)
    out = image.astype(np.float32)
    out[colored] = (1 - alpha) * out[colored] + alpha * rgb[colored]
    return out.round().astype(np.uint8)


def _unique_stems(paths: Sequence[str]) -> list[str]:
    stems, seen = [], {}
    for path in paths:
        stem = Path(path).stem
        count = seen.get(stem, 0)
        seen[stem] = count + 1
        stems.append(stem if count == 0 else f"{stem}_{count}")
    return stems


def save_predictions(
    save_dir: Path, image_paths: Sequence[str], masks: Sequence[np.ndarray], problem: Problem
) -> None:
    """Write ``<stem>.png`` masks and ``overlays/<stem>.png`` for each image.

    Binary masks are saved as 0/255; multi-class masks as palette PNGs whose pixel values
    are the original class values (so they open as colours and read back as ids). With
    ``class_colors`` the palette and the overlays use the user's colours, so a predicted
    mask looks like a label mask.
    """
    overlay_dir = save_dir / "overlays"
    overlay_dir.mkdir(parents=True, exist_ok=True)
    binary = problem.problem_type == "binary"
    colours = class_colours(problem)
    to_ids = np.zeros(256, np.uint8)
    to_ids[list(problem.classes)] = np.arange(len(problem.classes))
    for path, stem, mask in zip(image_paths, _unique_stems(image_paths), masks, strict=True):
        if binary:
            Image.fromarray((mask * 255).astype(np.uint8)).save(save_dir / f"{stem}.png")
            ids = mask
        else:
            ids = to_ids[mask]
            png = Image.fromarray(mask.astype(np.uint8))
            # Mode L becomes P with the same values: the file reads back as class values.
            png.putpalette(_value_palette(problem.classes, colours))
            png.save(save_dir / f"{stem}.png")
        blended = overlay(read_image(path), ids, binary, colours=colours)
        Image.fromarray(blended).save(overlay_dir / f"{stem}.png")


def _value_palette(classes: Sequence[int], colours: Sequence[tuple[int, int, int]]) -> list[int]:
    """A 256-entry palette where original value ``classes[k]`` shows ``colours[k]``."""
    flat = [0] * (256 * 3)
    for value, colour in zip(classes, colours, strict=True):
        flat[3 * int(value) : 3 * int(value) + 3] = colour
    return flat
