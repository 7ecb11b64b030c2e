"""A torch ``Dataset`` serving SAM-ready images and targets from a data table."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from autoseg.data.io import read_mask
from autoseg.data.multiband import check_band_counts, read_model_image, resize_bands
from autoseg.data.transforms import (
    RandomCrop,
    RandomFlipRotate,
    ResizeInfo,
    image_to_tensor,
    pad_tensor,
    pad_to_square,
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
    * ``original_hw``, ``resized_hw``: int64 tensors of shape ``(2,)``, the geometry
      :class:`~autoseg.data.transforms.ResizeInfo` holds.

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
        crop: Random native-resolution crop taken instead of the whole-image resize
            (``data.crop_size``); a fresh crop per item, so these items are not cached.
        in_channels: Image channels the model takes (``model.in_channels``); ``image`` is
            then ``(in_channels, S, S)``, read by :func:`~autoseg.data.multiband.read_model_image`.
        bands: 1-based bands of multi-band TIFFs to read (``data.bands``); ``None``: default.

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
        crop: RandomCrop | None = None,
        in_channels: int = 3,
        bands: tuple[int, ...] | None = None,
    ) -> None:
        if "image" not in table.columns:
            raise ValueError(f"table needs an 'image' column, has {list(table.columns)}")
        # The model's bands (model.in_channels, data.bands): checked from the headers now,
        # so a file with the wrong bands fails before training, not in the middle of it.
        self.in_channels, self.bands = int(in_channels), bands
        check_band_counts(list(table["image"]), self.in_channels, bands)
        self.table = table
        self.image_size = int(image_size)
        self.target_fn = target_fn
        self.augment = augment
        self.crop = crop
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
        image = read_model_image(self._images[index], self.in_channels, self.bands)
        target = self._target(index, image.shape[:2]) if self._labels is not None else None
        if self.crop is not None:
            return self.crop(image, target)
        resized, info = resize_bands(image, self.image_size)
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
