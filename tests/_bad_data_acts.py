"""Acts and file makers for the data bad-input cases (``_bad_cases_data``, ``_labels``).

Every case acts through the public API (``fit``, ``predict``, ``evaluate``) on the good data
set of :meth:`World.data` (``data/train.csv``: 8 rows of ``images/synth_00N.png`` and
``masks/synth_00N.png``, 32x40 px, binary 0/255) or a variant of it. Label traps only warn.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from _bad_inputs import World
from PIL import Image

HW = (32, 40)
ROWS = [f"images/synth_{i:03d}.png,masks/synth_{i:03d}.png" for i in range(8)]


def fit_csv(text: str, name: str = "bad.csv", **kw: Any) -> Callable[[World], Any]:
    """Act: write ``data/<name>`` beside the good data and fit on it."""

    def act(world: World) -> Any:
        world.data()
        path = world.write(f"data/{name}", text)
        return world.segmentor(**kw).fit(path)

    return act


def table(*rows: str) -> str:
    return "image,label\n" + "".join(f"{row}\n" for row in rows)


def png_bytes(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def noise(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*HW, 3), dtype=np.uint8)


def bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    """A 1x1 PNG whose header claims ``width`` x ``height`` pixels (CRC fixed up)."""
    data = bytearray(png_bytes(np.zeros((1, 1), np.uint8)))
    ihdr = 8 + 8  # signature, then length + type of the IHDR chunk
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr - 4 : ihdr + 13]))
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


def with_file(relpath: str, content: bytes, row: str, **kw: Any) -> Callable[[World], Any]:
    """Act: the good data plus one file, listed in row 0 of a CSV with 7 good rows."""

    def act(world: World) -> Any:
        world.data()
        world.write(f"data/{relpath}", content)
        path = world.write("data/bad.csv", table(row, *ROWS[1:]))
        return world.segmentor(**kw).fit(path)

    return act


def with_mask(array: np.ndarray, name: str = "bad.png", **kw: Any) -> Callable[[World], Any]:
    """Act: row 0's mask replaced by ``array`` saved as ``masks/<name>``."""

    def act(world: World) -> Any:
        world.data()
        world.image(f"data/masks/{name}", array)
        row = f"images/synth_000.png,masks/{name}"
        path = world.write("data/bad.csv", table(row, *ROWS[1:]))
        return world.segmentor(**kw).fit(path)

    return act


def masks_all(make: Callable[[int], np.ndarray], n: int = 8, **kw: Any) -> Callable[[World], Any]:
    """Act: every training mask replaced by ``make(i)``."""

    def act(world: World) -> Any:
        world.data()
        rows = []
        for i in range(n):
            world.image(f"data/masks/trap_{i}.png", make(i))
            rows.append(f"images/synth_{i:03d}.png,masks/trap_{i}.png")
        return world.segmentor(**kw).fit(world.write("data/bad.csv", table(*rows)))

    return act


def blocks(values: tuple[int, ...], seed: int) -> np.ndarray:
    """A mask holding each of ``values`` in horizontal bands (offset by ``seed``)."""
    mask = np.zeros(HW, np.uint8)
    bands = np.array_split(np.arange(HW[0]), len(values))
    for k, band in enumerate(bands):
        mask[band] = values[(k + seed) % len(values)]
    return mask


def exif_rotated(world: World) -> Any:
    world.data()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    world.image("data/images/photo.jpg", noise(), exif=exif, quality=95)
    mask = np.zeros(HW[::-1], np.uint8)
    mask[5:15] = 255
    world.image("data/masks/photo.png", mask)
    path = world.write("data/bad.csv", table("images/photo.jpg,masks/photo.png", *ROWS[1:]))
    return world.segmentor().fit(path)


def dataframe_relative(world: World) -> Any:
    world.data()
    frame = pd.DataFrame({"image": ["images/synth_000.png"], "label": ["masks/synth_000.png"]})
    return world.segmentor().fit(frame)  # relative to the cwd, where there is no images/


def predict(data: Callable[[World], Any]) -> Callable[[World], Any]:
    def act(world: World) -> Any:
        predictor = world.fitted()
        return predictor.predict(data(world))

    return act


def evaluate(text: str) -> Callable[[World], Any]:
    def act(world: World) -> Any:
        predictor = world.fitted()
        world.data()
        return predictor.evaluate(world.write("data/eval.csv", text))

    return act


def truncated(array: np.ndarray, fmt: str, keep: float = 0.6) -> bytes:
    data = png_bytes(array, fmt)
    return data[: int(len(data) * keep)]


def not_utf8(world: World) -> Any:
    world.data()
    text = "image,label\nimágé.png,masks/synth_000.png\n".encode("latin-1")
    return world.segmentor().fit(world.write("data/bad.csv", text))


def evaluate_unknown_values(world: World) -> Any:
    predictor = world.fitted()
    world.data()
    world.image("data/masks/mc.png", blocks((0, 1, 2), 0))
    return predictor.evaluate(
        world.write("data/eval.csv", table("images/synth_008.png,masks/mc.png"))
    )


def tuning_overlap(world: World) -> Any:
    train = world.data()
    tuning = world.write(
        "data/tuning.csv", table(ROWS[0], "images/synth_008.png,masks/synth_008.png")
    )
    return world.segmentor().fit(train, tuning_data=tuning)


def unlabelled_validation(world: World) -> Any:
    world.data()
    rows, tuning = [], []
    for i in range(8):
        world.image(f"data/masks/mc_{i}.png", blocks((0, 1, 2), i))
        rows.append(f"images/synth_{i:03d}.png,masks/mc_{i}.png")
    for i in (8, 9):
        world.image(f"data/masks/void_{i}.png", np.full(HW, 255, np.uint8))
        tuning.append(f"images/synth_{i:03d}.png,masks/void_{i}.png")
    train = world.write("data/bad.csv", table(*rows))
    return world.segmentor().fit(train, tuning_data=world.write("data/val.csv", table(*tuning)))


EMPTY, FULL = np.zeros(HW, np.uint8), np.full(HW, 255, np.uint8)
