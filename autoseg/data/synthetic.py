"""Small synthetic segmentation data sets (binary and multi-class), made offline.

Each image shows one to four light, striped, speckled ellipses (the foreground) on a
cluttered background: smooth color variation, mid-tone rectangles and triangles, darker
ellipses of a different color and pixel noise. Shape alone does not identify the
foreground (there are distractor ellipses) and neither does brightness alone (some clutter
is bright), so a model has to learn color and texture, yet it learns the task in minutes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from skimage.draw import ellipse, random_shapes, rectangle
from skimage.filters import gaussian

from autoseg.data.io import PathLike

_MIN_SIDE, _MAX_SIDE = 16, 1024
_FOREGROUND_RGB = np.array([0.95, 0.78, 0.40])
_DISTRACTOR_RGB = np.array([0.30, 0.35, 0.65])
# image colors of multi-class foreground classes 1, 2, ... (class 0 is the background)
_CLASS_RGB = np.array(
    [
        [0.95, 0.78, 0.40],
        [0.20, 0.45, 0.95],
        [0.90, 0.25, 0.30],
        [0.30, 0.85, 0.35],
        [0.85, 0.40, 0.90],
        [0.10, 0.90, 0.90],
        [0.98, 0.98, 0.98],
    ]
)
SYNTHETIC_VOID_RGB = (255, 255, 255)
"""Color of ignored (void) pixels in the RGB masks of :func:`make_synthetic_multiclass`."""


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Cluttered float RGB background in [0, 1]."""
    base = rng.uniform(0.2, 0.5, size=3)
    smooth = gaussian(
        rng.normal(size=(height, width, 3)), sigma=min(height, width) / 8, channel_axis=-1
    )
    smooth /= np.abs(smooth).max() + 1e-8
    image = np.clip(base + 0.15 * smooth, 0, 1)
    shapes, _ = random_shapes(
        (height, width),
        max_shapes=8,
        min_shapes=3,
        min_size=max(4, min(height, width) // 10),
        max_size=max(8, min(height, width) // 3),
        shape=None,
        intensity_range=((30, 230),) * 3,
        allow_overlap=True,
        rng=int(rng.integers(2**31)),
        channel_axis=-1,
    )
    clutter = (shapes < 255).any(axis=-1)
    image[clutter] = 0.45 * image[clutter] + 0.55 * shapes[clutter] / 255.0
    return image


def _random_ellipse(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, ...]:
    """Pixel coordinates of a random rotated ellipse, possibly cut by the border."""
    side = min(height, width)
    radii = rng.uniform(0.08, 0.22, size=2) * side
    center = rng.uniform(0.1, 0.9, size=2) * (height, width)
    return ellipse(
        center[0],
        center[1],
        max(radii[0], 2),
        max(radii[1], 2),
        shape=(height, width),
        rotation=rng.uniform(-np.pi, np.pi),
    )


def _render_pair(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, ...]:
    """One uint8 RGB image and its 0/255 mask."""
    image = _background(rng, height, width)
    for _ in range(int(rng.integers(0, 3))):
        rows, cols = _random_ellipse(rng, height, width)
        image[rows, cols] = _DISTRACTOR_RGB + rng.normal(0, 0.05, size=3)
    mask = np.zeros((height, width), dtype=np.uint8)
    for _ in range(int(rng.integers(1, 5))):
        rows, cols = _random_ellipse(rng, height, width)
        mask[rows, cols] = 255
    fg = mask > 0
    period, angle = rng.uniform(4, 9), rng.uniform(0, np.pi)
    yy, xx = np.mgrid[0:height, 0:width]
    stripes = 0.88 + 0.12 * np.sin((yy * np.sin(angle) + xx * np.cos(angle)) * 2 * np.pi / period)
    color = np.clip(_FOREGROUND_RGB + rng.normal(0, 0.04, size=3), 0, 1)
    speckle = rng.normal(0, 0.06, size=(height, width, 1))
    image[fg] = (color * stripes[..., None] + speckle)[fg]
    image += rng.normal(0, 0.04, size=image.shape)
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8), mask


def make_synthetic_binary(
    folder: PathLike,
    n_images: int = 24,
    size: tuple[int, int] = (96, 128),
    seed: int = 0,
    split_test: int = 8,
) -> tuple[Path, Path]:
    """Write a small synthetic binary segmentation data set in autoseg's input format.

    Writes ``images/synth_NNN.png`` (RGB), ``masks/synth_NNN.png`` (0 background,
    255 foreground) and ``train.csv`` / ``test.csv`` (columns ``image,label``, paths
    relative to ``folder``). The last ``split_test`` images form the test split. The same
    arguments always give the same files.

    Args:
        folder: Output folder (created if needed; existing files are overwritten).
        n_images: Total number of image/mask pairs.
        size: ``(height, width)`` of every image, each side 16..1024.
        seed: Random seed.
        split_test: Number of pairs in ``test.csv``; at least 1 and below ``n_images``.

    Returns:
        Paths of ``train.csv`` and ``test.csv``.

    Raises:
        ValueError: Invalid ``n_images``, ``size`` or ``split_test``.

    Example:
        >>> train_csv, test_csv = make_synthetic_binary("demo_data", n_images=12, split_test=4)

    """
    return _write_dataset(folder, n_images, size, seed, split_test, _render_pair)


def _write_dataset(
    folder: PathLike,
    n_images: int,
    size: tuple[int, int],
    seed: int,
    split_test: int,
    render: Callable[[np.random.Generator, int, int], tuple[np.ndarray, np.ndarray]],
) -> tuple[Path, Path]:
    """Check the arguments, render every pair, write PNGs and the two CSVs."""
    height, width = (int(s) for s in size)
    if not (_MIN_SIDE <= height <= _MAX_SIDE and _MIN_SIDE <= width <= _MAX_SIDE):
        raise ValueError(f"size sides must be within {_MIN_SIDE}..{_MAX_SIDE}, got {size}")
    if not 1 <= split_test < n_images:
        raise ValueError(
            f"split_test must be at least 1 and below n_images={n_images}, got {split_test}"
        )
    root = Path(folder)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    # one child stream per image so an image does not depend on how many came before it
    streams = np.random.SeedSequence(seed).spawn(n_images)
    rows = []
    for i, stream in enumerate(streams):
        image, mask = render(np.random.default_rng(stream), height, width)
        name = f"synth_{i:03d}.png"
        Image.fromarray(image).save(root / "images" / name)
        Image.fromarray(mask).save(root / "masks" / name)
        rows.append({"image": f"images/{name}", "label": f"masks/{name}"})
    table = pd.DataFrame(rows)
    n_train = n_images - split_test
    train_csv, test_csv = root / "train.csv", root / "test.csv"
    table.iloc[:n_train].to_csv(train_csv, index=False)
    table.iloc[n_train:].to_csv(test_csv, index=False)
    return train_csv, test_csv


def _random_rectangle(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, ...]:
    """Pixel coordinates of a random axis-aligned rectangle inside the image."""
    side = min(height, width)
    extent = np.maximum(rng.uniform(0.15, 0.4, size=2) * side, 3).astype(int)
    top = int(rng.integers(0, max(1, height - extent[0])))
    left = int(rng.integers(0, max(1, width - extent[1])))
    rows, cols = rectangle((top, left), extent=tuple(extent), shape=(height, width))
    return rows.ravel(), cols.ravel()


def _render_multiclass(
    rng: np.random.Generator, height: int, width: int, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """One uint8 RGB image and its class-id mask (0..K-1, 255 = void)."""
    image = _background(rng, height, width)
    ids = np.zeros((height, width), dtype=np.uint8)
    for k in range(1, num_classes):
        # odd classes are ellipses, even ones rectangles; color and texture tell them apart
        draw = _random_ellipse if k % 2 else _random_rectangle
        color = np.clip(_CLASS_RGB[k - 1] + rng.normal(0, 0.03, size=3), 0, 1)
        for _ in range(int(rng.integers(1, 3))):
            rows, cols = draw(rng, height, width)
            ids[rows, cols] = k
            texture = rng.normal(0, 0.05 * (1 + k % 3), size=(len(rows), 3))
            image[rows, cols] = color + texture
    # a small patch the "annotator" left unlabelled: it must be ignored, never learned
    side = max(2, min(height, width) // 12)
    top, left = int(rng.integers(0, height - side)), int(rng.integers(0, width - side))
    ids[top : top + side, left : left + side] = 255
    image += rng.normal(0, 0.03, size=image.shape)
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8), ids


def _mask_writer(
    num_classes: int,
    values: Sequence[int] | None,
    rgb_colors: Sequence[Sequence[int]] | None,
) -> Callable[[np.ndarray], np.ndarray]:
    """Check ``values``/``rgb_colors`` and return the function that turns ids into a mask."""
    if not 2 <= num_classes <= len(_CLASS_RGB) + 1:
        raise ValueError(f"num_classes must be within 2..{len(_CLASS_RGB) + 1}, got {num_classes}")
    if values is not None and rgb_colors is not None:
        raise ValueError("give values (class-id masks) or rgb_colors (color masks), not both")
    if rgb_colors is not None:
        colors = np.array(rgb_colors, dtype=np.int64).reshape(-1, 3)
        if len(colors) != num_classes or len({tuple(c) for c in colors}) != num_classes:
            raise ValueError(f"rgb_colors needs {num_classes} distinct colors, got {rgb_colors}")
        if (
            (colors < 0).any()
            or (colors > 255).any()
            or SYNTHETIC_VOID_RGB in map(tuple, colors.tolist())
        ):
            raise ValueError(
                f"rgb_colors must be 0..255 and not the void color {SYNTHETIC_VOID_RGB}"
            )
        lookup = np.zeros((256, 3), np.uint8)
        lookup[:num_classes] = colors
        lookup[255] = SYNTHETIC_VOID_RGB
        return lambda ids: lookup[ids]
    table = list(range(num_classes)) if values is None else [int(v) for v in values]
    if (
        len(table) != num_classes
        or len(set(table)) != num_classes
        or not all(0 <= v < 255 for v in table)
    ):
        raise ValueError(f"values needs {num_classes} distinct values in 0..254, got {values}")
    lookup = np.full(256, 255, np.uint8)
    lookup[:num_classes] = table
    return lambda ids: lookup[ids]


def make_synthetic_multiclass(
    folder: PathLike,
    n_images: int = 24,
    size: tuple[int, int] = (96, 128),
    seed: int = 0,
    split_test: int = 8,
    num_classes: int = 3,
    values: Sequence[int] | None = None,
    rgb_colors: Sequence[Sequence[int]] | None = None,
) -> tuple[Path, Path]:
    """Write a small synthetic multi-class data set in autoseg's input format.

    Class 0 is a cluttered background; class ``k >= 1`` is drawn as one or two ellipses
    (odd ``k``) or rectangles (even ``k``) with its own color and texture. Every image also
    has a small void patch (mask value 255, to be ignored). Files: ``images/synth_NNN.png``,
    ``masks/synth_NNN.png``, ``train.csv`` and ``test.csv`` (last ``split_test`` images).

    Args:
        folder: Output folder (created if needed; existing files are overwritten).
        n_images: Total number of image/mask pairs.
        size: ``(height, width)`` of every image, each side 16..1024.
        seed: Random seed; the same arguments always give the same files.
        split_test: Number of pairs in ``test.csv``; at least 1 and below ``n_images``.
        num_classes: Number of classes including the background, 2..8.
        values: Mask value of each class (default ``0..K-1``), e.g. ``(0, 3, 7)`` for
            non-contiguous class ids. Void stays 255.
        rgb_colors: If given, masks are RGB color PNGs: class ``k`` is ``rgb_colors[k]``
            and void pixels are :data:`SYNTHETIC_VOID_RGB` (white).

    Returns:
        Paths of ``train.csv`` and ``test.csv``.

    Raises:
        ValueError: Invalid sizes, counts, values or colors.

    Example:
        >>> train_csv, test_csv = make_synthetic_multiclass("mc", 12, values=(0, 3, 7))

    """
    to_mask = _mask_writer(num_classes, values, rgb_colors)

    def render(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, ...]:
        image, ids = _render_multiclass(rng, height, width, num_classes)
        return image, to_mask(ids)

    return _write_dataset(folder, n_images, size, seed, split_test, render)
