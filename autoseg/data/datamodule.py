"""The Lightning data module: datasets and loaders for training and validation."""

from __future__ import annotations

import lightning as L
import pandas as pd
from torch.utils.data import DataLoader

from autoseg.config import Config
from autoseg.data.dataset import SegmentationDataset
from autoseg.data.transforms import RandomFlipRotate
from autoseg.problem import Problem


class SegmentationDataModule(L.LightningDataModule):
    """Builds the train (augmented, shuffled) and validation loaders for one run.

    Example:
        >>> dm = SegmentationDataModule(train, val, problem, config, "sam")  # doctest: +SKIP
        >>> trainer.fit(task, datamodule=dm)  # doctest: +SKIP

    """

    def __init__(
        self,
        train_table: pd.DataFrame,
        val_table: pd.DataFrame,
        problem: Problem,
        config: Config,
        normalization: str,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.train_table = train_table
        self.val_table = val_table
        self.problem = problem
        self.config = config
        self.normalization = normalization
        self.seed = seed
        self.train_set: SegmentationDataset | None = None
        self.val_set: SegmentationDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        """Create the datasets (cheap: images are read lazily per item)."""
        data = self.config.data
        augment = RandomFlipRotate(
            hflip=data.hflip, vflip=data.vflip, rot90=data.rot90, seed=self.seed
        )
        common = {
            "image_size": data.image_size,
            "normalization": self.normalization,
            "target_fn": self.problem.target,
        }
        self.train_set = SegmentationDataset(self.train_table, augment=augment, **common)
        self.val_set = SegmentationDataset(self.val_table, **common)

    def _loader(self, dataset: SegmentationDataset, shuffle: bool, batch_size: int) -> DataLoader:
        workers = self.config.env.num_workers
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=self.config.env.accelerator == "gpu",
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled, augmented training batches."""
        return self._loader(self.train_set, True, self.config.env.batch_size)

    def val_dataloader(self) -> DataLoader:
        """Validation batches in order, no augmentation."""
        return self._loader(self.val_set, False, self.config.env.eval_batch_size)
