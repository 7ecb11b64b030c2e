"""Batched inference: probabilities mapped back to each image's exact original size."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from autoseg.data.dataset import SegmentationDataset
from autoseg.data.transforms import ResizeInfo, restore_logits
from autoseg.labels.problem import Problem
from autoseg.models.segmenter import SamSegmenter
from autoseg.runtime import Runtime


def iter_probabilities(
    model: SamSegmenter,
    table: pd.DataFrame,
    runtime: Runtime,
    *,
    batch_size: int = 4,
    num_workers: int = 0,
) -> Iterator[np.ndarray]:
    """Yield, per row of ``table`` in order, probabilities at the image's original size.

    The model runs on ``runtime.device``, autocast to ``runtime.autocast_dtype`` on a GPU
    (see :func:`autoseg.runtime.resolve_runtime` with ``inference=True``). Binary models give
    (H, W) foreground probabilities; multi-class models (K, H, W). Logits are resized before
    the sigmoid/softmax so borders stay smooth.
    """
    dataset = SegmentationDataset(table[["image"]], image_size=model.image_size)
    loader = DataLoader(
        dataset, batch_size=batch_size, num_workers=num_workers, pin_memory=runtime.pin_memory
    )
    device, precision = runtime.device, runtime.autocast_dtype
    model.eval().to(device)
    autocast = precision is not None and device.type == "cuda"
    with torch.inference_mode(), torch.autocast(device.type, dtype=precision, enabled=autocast):
        for batch in loader:
            images, valid_hw = batch["image"].to(device), batch["resized_hw"].to(device)
            logits = model(images, valid_hw).float().cpu()
            for item_logits, original, resized in zip(
                logits, batch["original_hw"], batch["resized_hw"], strict=True
            ):
                info = ResizeInfo(
                    original_hw=tuple(original.tolist()),
                    resized_hw=tuple(resized.tolist()),
                    size=model.image_size,
                )
                restored = restore_logits(item_logits, info)
                if restored.shape[0] == 1:
                    yield torch.sigmoid(restored[0]).numpy().astype(np.float32)
                else:
                    yield restored.softmax(dim=0).numpy().astype(np.float32)


def predict_masks(
    model: SamSegmenter,
    problem: Problem,
    table: pd.DataFrame,
    runtime: Runtime,
    *,
    batch_size: int = 4,
) -> list[np.ndarray]:
    """Class masks (H, W) uint8 in the user's original mask values, per row of ``table``."""
    probabilities = iter_probabilities(model, table, runtime, batch_size=batch_size)
    return [problem.to_original(probabilities_to_ids(p)) for p in probabilities]


def probabilities_to_ids(probabilities: np.ndarray) -> np.ndarray:
    """Class ids (H, W) uint8 from binary (H, W) or multi-class (K, H, W) probabilities."""
    if probabilities.ndim == 2:
        return (probabilities >= 0.5).astype(np.uint8)
    return probabilities.argmax(axis=0).astype(np.uint8)
