"""The Lightning data module: datasets and loaders for training and validation."""

from __future__ import annotations

from dataclasses import dataclass

import lightning as L
import pandas as pd
from torch.utils.data import DataLoader

from autoseg.config import DataConfig, EnvConfig
from autoseg.data.dataset import SegmentationDataset
from autoseg.data.transforms import RandomCrop, RandomFlipRotate
from autoseg.labels.problem import Problem
from autoseg.runtime import resolve_runtime


@dataclass(frozen=True)
class LoaderSettings:
    """How batches are loaded: sizes, worker processes, page-locked memory.

    Example:
        >>> from autoseg.config import EnvConfig
        >>> LoaderSettings.for_training(EnvConfig(accelerator="cpu", num_workers=-1))
        LoaderSettings(batch_size=2, eval_batch_size=4, num_workers=0, pin_memory=False)

    """

    batch_size: int = 2
    eval_batch_size: int = 4
    num_workers: int = 0
    pin_memory: bool = False

    @classmethod
    def for_training(cls, env: EnvConfig) -> LoaderSettings:
        """The loaders of a fit: batch sizes from ``env``, workers and pinning by the runtime."""
        runtime = resolve_runtime(env)
        return cls(env.batch_size, env.eval_batch_size, runtime.num_workers, runtime.pin_memory)


class SegmentationDataModule(L.LightningDataModule):
    """Builds the train (augmented, shuffled) and validation loaders for one run.

    Args:
        train_table: training rows (absolute image and label paths).
        val_table: validation rows.
        problem: the label space (turns masks into targets).
        data: input size and augmentation.
        loader: batch sizes and workers.
        seed: seed of the augmentation.
        in_channels: image channels the model takes (``model.in_channels``).

    Example:
        >>> import tempfile
        >>> from autoseg.data.prepare import prepare_training_data
        >>> from autoseg.data.synthetic import make_synthetic_binary
        >>> csv, _ = make_synthetic_binary(tempfile.mkdtemp(), n_images=8, split_test=1)
        >>> train, val, problem = prepare_training_data(csv)
        >>> dm = SegmentationDataModule(
        ...     train, val, problem, DataConfig(image_size=64), LoaderSettings()
        ... )
        >>> dm.setup("fit")
        >>> next(iter(dm.train_dataloader()))["image"].shape
        torch.Size([2, 3, 64, 64])

    """

    def __init__(
        self,
        train_table: pd.DataFrame,
        val_table: pd.DataFrame,
        problem: Problem,
        data: DataConfig,
        loader: LoaderSettings,
        seed: int = 0,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels  # model.in_channels: the bands each image is read with
        self.train_table = train_table
        self.val_table = val_table
        self.problem = problem
        self.data = data
        self.loader = loader
        self.seed = seed
        self.train_set: SegmentationDataset | None = None
        self.val_set: SegmentationDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        """Create the datasets (cheap: images are read lazily per item)."""
        data = self.data
        augment = RandomFlipRotate(
            hflip=data.hflip, vflip=data.vflip, rot90=data.rot90, seed=self.seed
        )
        common = {
            "image_size": data.image_size,
            "target_fn": self.problem.target,
            "in_channels": self.in_channels,
            "bands": None if data.bands is None else tuple(data.bands),
        }
        crop = None  # native-scale training crops; validation stays whole-image
        if data.crop_size is not None:
            crop = RandomCrop(data.crop_size, data.image_size, seed=self.seed)
        self.train_set = SegmentationDataset(self.train_table, augment=augment, crop=crop, **common)
        self.val_set = SegmentationDataset(self.val_table, **common)

    def _loader(self, dataset: SegmentationDataset, shuffle: bool, batch_size: int) -> DataLoader:
        workers = self.loader.num_workers
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=self.loader.pin_memory,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled, augmented training batches."""
        return self._loader(self.train_set, True, self.loader.batch_size)

    def val_dataloader(self) -> DataLoader:
        """Validation batches in order, no augmentation."""
        return self._loader(self.val_set, False, self.loader.eval_batch_size)
