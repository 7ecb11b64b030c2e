"""A small synthetic binary segmentation data set, made offline with scikit-image.

Each image shows one to four light, striped, speckled ellipses (the foreground) on a
cluttered background: smooth colour variation, mid-tone rectangles and triangles, darker
ellipses of a different colour and pixel noise. Shape alone does not identify the
foreground (there are distractor ellipses) and neither does brightness alone (some clutter
is bright), so a model has to learn colour and texture, yet it learns the task in minutes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from skimage.draw import ellipse, random_shapes
from skimage.filters import gaussian

from autoseg.data.io import PathLike

_MIN_SIDE, _MAX_SIDE = 16, 1024
_FOREGROUND_RGB = np.array([0.95, 0.78, 0.40])
_DISTRACTOR_RGB = np.array([0.30, 0.35, 0.65])


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
    colour = np.clip(_FOREGROUND_RGB + rng.normal(0, 0.04, size=3), 0, 1)
    speckle = rng.normal(0, 0.06, size=(height, width, 1))
    image[fg] = (colour * stripes[..., None] + speckle)[fg]
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

    Writes ``images/synth_XXX.png`` (RGB), ``masks/synth_XXX.png`` (0 background,
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
        image, mask = _render_pair(np.random.default_rng(stream), height, width)
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
