from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from autoseg.data import (
    RandomFlipRotate,
    ResizeInfo,
    SegmentationDataset,
    load_table,
    make_synthetic_binary,
    read_mask,
    restore_logits,
    validate_table,
)
from autoseg.labels.masks import (
    MaskFormatError,
    binary_target,
    encode_multiclass,
)

SIZE = 64


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_synthetic_binary(tmp_path_factory.mktemp("synth"), n_images=6, split_test=2)


def test_synthetic_data_set_is_valid_binary_and_deterministic(
    synthetic: tuple[Path, Path], tmp_path: Path
) -> None:
    train_csv, test_csv = synthetic
    train, test = load_table(train_csv), load_table(test_csv)
    assert (len(train), len(test)) == (4, 2)
    validate_table(train)
    validate_table(test)
    masks = [read_mask(p) for p in train.label]
    assert all(set(np.unique(m)) <= {0, 255} for m in masks)
    assert all(m.shape == (96, 128) and 0 < (m == 255).mean() < 0.8 for m in masks)
    again, _ = make_synthetic_binary(tmp_path, n_images=6, split_test=2)
    first = train_csv.parent / "images" / "synth_003.png"
    assert first.read_bytes() == (again.parent / "images" / "synth_003.png").read_bytes()
    with pytest.raises(ValueError):
        make_synthetic_binary(tmp_path, n_images=4, split_test=4)


def test_item_shapes_dtypes_and_padding(synthetic: tuple[Path, Path]) -> None:
    dataset = SegmentationDataset(load_table(synthetic[0]), SIZE, target_fn=binary_target)
    assert len(dataset) == 4
    item = dataset[1]
    assert item["image"].shape == (3, SIZE, SIZE) and item["image"].dtype == torch.float32
    assert item["mask"].shape == (SIZE, SIZE) and item["mask"].dtype == torch.int64
    assert item["index"] == 1
    assert item["original_hw"].tolist() == [96, 128]
    assert item["resized_hw"].tolist() == [48, 64]
    assert item["original_hw"].dtype == torch.int64
    assert (item["mask"][48:] == 255).all()
    assert set(item["mask"][:48].unique().tolist()) == {0, 1}
    assert item["image"][:, 48:].abs().sum() == 0
    info = ResizeInfo(original_hw=(96, 128), resized_hw=(48, 64), size=SIZE)
    assert restore_logits(torch.zeros(2, SIZE, SIZE), info).shape == (2, 96, 128)


def test_collate_and_batch_resize_info(synthetic: tuple[Path, Path]) -> None:
    dataset = SegmentationDataset(load_table(synthetic[0]), SIZE, binary_target)
    batch = next(iter(DataLoader(dataset, batch_size=3)))
    assert batch["image"].shape == (3, 3, SIZE, SIZE)
    assert batch["index"].tolist() == [0, 1, 2]
    assert batch["original_hw"][2].tolist() == [96, 128]


def test_unlabelled_items_have_no_mask(synthetic: tuple[Path, Path]) -> None:
    table = load_table(synthetic[1])
    assert "mask" not in SegmentationDataset(table, SIZE)[0]
    images_only = load_table(table.image.tolist(), require_labels=False)
    dataset = SegmentationDataset(images_only, SIZE, target_fn=binary_target)
    assert "mask" not in dataset[0]


def test_augmentation_keeps_image_and_mask_aligned(tmp_path: Path) -> None:
    # the image encodes its own mask, so any misalignment shows up as a mismatch; the
    # longest side is already SIZE so that bilinear resizing does not blur the edges
    mask = np.zeros((40, SIZE), np.uint8)
    mask[5:12, 3:20] = 1
    mask[20:28, 30:48] = 2
    Image.fromarray(np.repeat(mask[..., None] * 100, 3, axis=2)).save(tmp_path / "i.png")
    Image.fromarray(mask).save(tmp_path / "m.png")
    table = load_table(
        pd.DataFrame({"image": [str(tmp_path / "i.png")], "label": [str(tmp_path / "m.png")]})
    )
    augment = RandomFlipRotate(hflip=True, vflip=True, rot90=True, seed=0)
    dataset = SegmentationDataset(
        table, SIZE, partial(encode_multiclass, classes=[0, 1, 2]), augment
    )
    shapes = set()
    for _ in range(12):
        item = dataset[0]
        h, w = item["resized_hw"].tolist()
        shapes.add((h, w))
        grey = (item["image"][0, :h, :w] / 100).round().long()  # pixel values, not normalised
        assert torch.equal(grey, item["mask"][:h, :w])
        assert (item["mask"][h:] == 255).all() and (item["mask"][:, w:] == 255).all()
        assert item["original_hw"].tolist() == [h, w]
    assert shapes == {(40, SIZE), (SIZE, 40)}


def test_bad_mask_error_names_the_file(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "i.png")
    Image.fromarray(np.full((8, 8), 7, np.uint8)).save(tmp_path / "m.png")
    table = load_table(
        pd.DataFrame({"image": [str(tmp_path / "i.png")], "label": [str(tmp_path / "m.png")]})
    )
    with pytest.raises(MaskFormatError, match="m.png"):
        SegmentationDataset(table, SIZE, target_fn=binary_target)[0]


def test_shared_ph2_rows_load_validate_and_build(shared_data: Path) -> None:
    table = load_table(shared_data / "ph2" / "train.csv").iloc[:20]
    validate_table(table)
    assert all(set(np.unique(read_mask(p))) <= {0, 255} for p in table.label)
    item = SegmentationDataset(table, 256, target_fn=binary_target)[0]
    assert item["image"].shape == (3, 256, 256)
    assert set(item["mask"].unique().tolist()) <= {0, 1, 255}


def test_image_cache_returns_equal_items_and_respects_its_cap(
    synthetic: tuple[Path, Path],
) -> None:
    table = load_table(synthetic[0])
    uncached = SegmentationDataset(table, SIZE, binary_target, cache_bytes=0)
    cached = SegmentationDataset(table, SIZE, binary_target)
    for index in range(len(table)):
        for _ in range(2):  # the second read is served from memory
            got, want = cached[index], uncached[index]
            assert torch.equal(got["image"], want["image"])
            assert torch.equal(got["mask"], want["mask"])
    one_image = 48 * SIZE * 3 + 48 * SIZE
    assert len(cached._cache) == 4 and cached.cached_bytes == 4 * one_image
    assert uncached.cached_bytes == 0 and not uncached._cache
    capped = SegmentationDataset(table, SIZE, binary_target, cache_bytes=2 * one_image)
    for index in range(len(table)):
        capped[index]
    assert sorted(capped._cache) == [0, 1]


def test_image_cache_is_not_changed_by_in_place_augmentation(
    synthetic: tuple[Path, Path],
) -> None:
    table = load_table(synthetic[0])
    flip = RandomFlipRotate(hflip=True, p=1.0, seed=0)
    dataset = SegmentationDataset(table, SIZE, binary_target, augment=flip)
    first = dataset[0]["image"]
    image, _, _ = dataset._decoded(0)
    image[:] = 0  # a caller scribbling on its copy
    assert torch.equal(dataset[0]["image"], first)
