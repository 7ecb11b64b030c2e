"""Batched inference: probabilities mapped back to each image's exact original size."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import groupby

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from autoseg.data.dataset import SegmentationDataset
from autoseg.data.io import image_size
from autoseg.data.multiband import read_model_image
from autoseg.data.transforms import ResizeInfo, restored_probabilities
from autoseg.labels.problem import Problem
from autoseg.models.segmenter import SamSegmenter
from autoseg.runtime import Runtime
from autoseg.tiling import AUTO_TILE_FACTOR, TileSettings, tiled_probabilities


def iter_probabilities(
    model: SamSegmenter,
    table: pd.DataFrame,
    runtime: Runtime,
    *,
    batch_size: int = 4,
    num_workers: int | None = None,
    tiling: TileSettings | None = None,
    say: Callable[[str], None] | None = None,
) -> Iterator[np.ndarray]:
    """Yield, per row of ``table`` in order, probabilities at the image's original size.

    The model runs on ``runtime.device`` with its threads, autocast to
    ``runtime.autocast_dtype`` (see :func:`autoseg.runtime.resolve_runtime` with
    ``inference=True``), loading with ``num_workers`` processes (``None``: the runtime's).
    Binary models give (H, W) foreground probabilities; multi-class models (K, H, W). Logits
    are resized before the sigmoid/softmax so borders stay smooth.

    With ``tiling`` (see :class:`~autoseg.tiling.TileSettings`), images are predicted in
    overlapping windows at the model's scale (:func:`~autoseg.tiling.tiled_probabilities`),
    ``batch_size`` windows per forward; ``"auto"`` decides per image from its header and
    tells ``say`` once how many images it tiles.
    """
    plan = _tiling_plan(model, table, tiling, say)
    position = 0
    for tiled, run in groupby(plan):
        rows = table.iloc[position : position + len(list(run))]
        position += len(rows)
        if not tiled:
            yield from _whole_images(model, rows, runtime, batch_size, num_workers)
            continue
        assert tiling is not None
        for path in rows["image"]:
            yield tiled_probabilities(
                model,
                read_model_image(path, model.in_channels, model.bands),
                runtime,
                tile_size=tiling.tile_size,
                overlap=tiling.overlap,
                batch_size=batch_size,
            )


def _tiling_plan(
    model: SamSegmenter,
    table: pd.DataFrame,
    tiling: TileSettings | None,
    say: Callable[[str], None] | None,
) -> list[bool]:
    """Per row, whether it is tiled; ``"auto"`` reads each image's size from its header."""
    if tiling is None or tiling.tile is False:
        return [False] * len(table)
    if tiling.tile is True:
        return [True] * len(table)
    size = model.image_size
    plan = [tiling.tiles(*image_size(path), size) for path in table["image"]]
    if any(plan) and say is not None:
        window = tiling.window(size)
        say(
            f'tile="auto": predicting {sum(plan)} of {len(plan)} image(s) whose longest side '
            f"exceeds {AUTO_TILE_FACTOR * window} px in {window} px windows "
            f"(overlap {tiling.overlap:g}) at the model's scale"
        )
    return plan


def _whole_images(
    model: SamSegmenter,
    table: pd.DataFrame,
    runtime: Runtime,
    batch_size: int,
    num_workers: int | None,
) -> Iterator[np.ndarray]:
    """Untiled: each whole image resized to the model input, outputs resized back."""
    dataset = SegmentationDataset(
        table[["image"]], model.image_size, in_channels=model.in_channels, bands=model.bands
    )
    workers = runtime.num_workers if num_workers is None else num_workers
    loader = DataLoader(
        dataset, batch_size=batch_size, num_workers=workers, pin_memory=runtime.pin_memory
    )
    runtime.prepare(model).eval().to(runtime.device)
    for batch in loader:
        # Each batch enters and leaves the contexts: the caller's code between two items
        # runs with its own threads and without autocast.
        yield from batch_probabilities(model, batch, runtime)


def batch_probabilities(
    model: SamSegmenter, batch: dict[str, torch.Tensor], runtime: Runtime
) -> list[np.ndarray]:
    """The restored probabilities of one loader batch."""
    device, dtype = runtime.device, runtime.autocast_dtype
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
    with runtime.threads(), torch.inference_mode():
        with autocast:
            images, valid_hw = batch["image"].to(device), batch["resized_hw"].to(device)
            logits = model(images, valid_hw).float().cpu()
        probabilities = []
        for item_logits, original, resized in zip(
            logits, batch["original_hw"], batch["resized_hw"], strict=True
        ):
            info = ResizeInfo(
                original_hw=tuple(original.tolist()),
                resized_hw=tuple(resized.tolist()),
                size=model.image_size,
            )
            probabilities.append(restored_probabilities(item_logits, info))
    return probabilities


def predict_masks(
    model: SamSegmenter,
    problem: Problem,
    table: pd.DataFrame,
    runtime: Runtime,
    *,
    batch_size: int = 4,
    tiling: TileSettings | None = None,
    say: Callable[[str], None] | None = None,
) -> list[np.ndarray]:
    """Class masks (H, W) uint8 in the user's original mask values, per row of ``table``."""
    probabilities = iter_probabilities(
        model, table, runtime, batch_size=batch_size, tiling=tiling, say=say
    )
    return [problem.to_original(probabilities_to_ids(p)) for p in probabilities]


def probabilities_to_ids(probabilities: np.ndarray) -> np.ndarray:
    """Class ids (H, W) uint8 from binary (H, W) or multi-class (K, H, W) probabilities."""
    if probabilities.ndim == 2:
        return (probabilities >= 0.5).astype(np.uint8)
    return probabilities.argmax(axis=0).astype(np.uint8)
