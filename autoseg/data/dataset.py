"""A torch ``Dataset`` serving SAM-ready images and targets from a data table."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from autoseg.data.io import read_image, read_mask
from autoseg.data.transforms import (
    RandomFlipRotate,
    ResizeInfo,
    image_to_tensor,
    pad_tensor,
    pad_to_square,
    resize_longest_side,
    resize_mask,
)
from autoseg.labels.masks import IGNORE_INDEX, MaskFormatError

DEFAULT_IMAGE_CACHE_BYTES = 512 << 20
"""512 MiB: about 2,700 images at 256 px, or 170 at 1024 px (uint8 RGB plus target)."""
_Decoded = tuple[np.ndarray, np.ndarray | None, ResizeInfo]


class SegmentationDataset(Dataset):
    """Images (and targets) from a table, resized and padded for SAM.

    Each item is a dict:

    * ``image``: ``(3, S, S)`` float32 pixel values 0..255, zero-padded at the bottom/right
      (the model normalises its valid region, ``resized_hw``, itself);
    * ``mask``: ``(S, S)`` int64 target ids, 255 (ignore) in the padding; only present when
      the table has a ``label`` column and ``target_fn`` is given;
    * ``index``: position of the row in the table (int);
    * ``original_hw``, ``resized_hw``: int64 tensors of shape ``(2,)``; see
      :func:`resize_info_from_item`.

    Args:
        table: Output of :func:`autoseg.data.load_table` (absolute paths).
        image_size: Side ``S`` of the square model input.
        target_fn: Turns a raw mask into ``(H, W)`` uint8 ids with 255 = ignore, e.g.
            :func:`autoseg.data.binary_target` or
            ``functools.partial(encode_multiclass, classes=[...])``.
        augment: Joint image/mask augmentation applied to the resized, unpadded arrays.
        cache_bytes: Cap on the decoded, resized images and targets kept in memory (per
            process: each ``DataLoader`` worker holds its own); later epochs skip reading
            and resizing them. Augmentation runs after the cache. 0 turns it off.

    Example:
        >>> import tempfile
        >>> from autoseg.data.synthetic import make_synthetic_binary
        >>> from autoseg.data.table import load_table
        >>> from autoseg.labels.masks import binary_target
        >>> csv, _ = make_synthetic_binary(tempfile.mkdtemp(), n_images=3, split_test=1)
        >>> item = SegmentationDataset(load_table(csv), 64, target_fn=binary_target)[0]
        >>> item["image"].shape, item["mask"].shape, item["resized_hw"].tolist()
        (torch.Size([3, 64, 64]), torch.Size([64, 64]), [48, 64])

    """

    def __init__(
        self,
        table: pd.DataFrame,
        image_size: int,
        target_fn: Callable[[np.ndarray], np.ndarray] | None = None,
        augment: RandomFlipRotate | None = None,
        cache_bytes: int = DEFAULT_IMAGE_CACHE_BYTES,
    ) -> None:
        if "image" not in table.columns:
            raise ValueError(f"table needs an 'image' column, has {list(table.columns)}")
        self.table = table
        self.image_size = int(image_size)
        self.target_fn = target_fn
        self.augment = augment
        # plain lists: cheap to index and to copy into worker processes
        self._images: list[str] = [str(p) for p in table["image"]]
        self._labels: list[str] | None = None
        if "label" in table.columns and target_fn is not None:
            self._labels = [str(p) for p in table["label"]]
        self.cache_bytes = int(cache_bytes)
        self.cached_bytes = 0
        self._cache: dict[int, _Decoded] = {}

    def __len__(self) -> int:
        return len(self._images)

    def _target(self, index: int, image_hw: tuple[int, int]) -> np.ndarray:
        assert self._labels is not None and self.target_fn is not None
        path = self._labels[index]
        try:
            target = self.target_fn(read_mask(path))
        except MaskFormatError as err:
            raise MaskFormatError(f"{path}: {err}") from err
        if tuple(target.shape) != tuple(image_hw):
            raise ValueError(
                f"{path}: mask size {tuple(target.shape)} differs from its image size "
                f"{tuple(image_hw)} ({self._images[index]})"
            )
        return target

    def _decoded(self, index: int) -> _Decoded:
        """The resized image and target of a row, read once while under the cap."""
        cached = self._cache.get(index)
        if cached is not None:  # copies: the caller may transform the arrays in place
            image, target, info = cached
            return image.copy(), None if target is None else target.copy(), info
        image = read_image(self._images[index])
        target = self._target(index, image.shape[:2]) if self._labels is not None else None
        resized, info = resize_longest_side(image, self.image_size)
        if target is not None:
            target = resize_mask(target, info)
        size = resized.nbytes + (0 if target is None else target.nbytes)
        if self.cached_bytes + size <= self.cache_bytes:
            keep = None if target is None else target.copy()
            self._cache[index] = (resized.copy(), keep, info)
            self.cached_bytes += size
        return resized, target, info

    def __getitem__(self, index: int) -> dict[str, Any]:
        resized, target, info = self._decoded(index)
        if self.augment is not None:
            resized, target = self.augment(resized, target)
            if resized.shape[:2] != tuple(info.resized_hw):  # a rotation swapped H and W
                info = ResizeInfo(info.original_hw[::-1], resized.shape[:2], info.size)
        item: dict[str, Any] = {
            "image": pad_tensor(image_to_tensor(resized), self.image_size),
            "index": int(index),
            "original_hw": torch.tensor(info.original_hw, dtype=torch.int64),
            "resized_hw": torch.tensor(info.resized_hw, dtype=torch.int64),
        }
        if target is not None:
            padded = pad_to_square(target, self.image_size, IGNORE_INDEX)
            item["mask"] = torch.from_numpy(padded.astype(np.int64))
        return item


def resize_info_from_item(item: Mapping[str, Any], position: int | None = None) -> ResizeInfo:
    """Rebuild the :class:`ResizeInfo` of a dataset item or of one element of a batch.

    Args:
        item: A dataset item, or a collated batch when ``position`` is given.
        position: Index within the batch; None for a single item.

    Returns:
        The geometry to pass to :func:`autoseg.data.restore_logits`.

    """
    original = item["original_hw"]
    resized = item["resized_hw"]
    if position is not None:
        original, resized = original[position], resized[position]
    size = int(item["image"].shape[-1])
    return ResizeInfo(
        original_hw=(int(original[0]), int(original[1])),
        resized_hw=(int(resized[0]), int(resized[1])),
        size=size,
    )
