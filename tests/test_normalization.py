"""The model normalises its own input: equal to the old normalise-then-pad data path."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader

from autoseg.data import SegmentationDataset, load_table, resize_longest_side
from autoseg.models.normalization import (
    SAM_PIXEL_MEAN,
    SAM_PIXEL_STD,
    MeanStdNormalization,
    MinMaxNormalization,
    build_normalization,
    valid_mask,
)
from autoseg.models.segmenter import build_segmenter

SIZE = 64
# odd aspect ratios: tall, wide, square, a 1-pixel strip, one already at SIZE
SHAPES = [(37, 91), (120, 23), (50, 50), (1, 200), (64, 40), (13, 7)]


def old_normalize(image: np.ndarray, mode: str) -> torch.Tensor:
    """The data path before the model normalised: the dataset's old ``normalize_image``."""
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()
    if mode == "sam":
        mean = torch.tensor(SAM_PIXEL_MEAN).view(3, 1, 1)
        std = torch.tensor(SAM_PIXEL_STD).view(3, 1, 1)
        return (tensor - mean) / std
    low = tensor.min()
    return (tensor - low) / torch.clamp(tensor.max() - low, min=1e-8)


def old_item(path: str, mode: str) -> torch.Tensor:
    resized, _ = resize_longest_side(np.array(Image.open(path).convert("RGB")), SIZE)
    normalized = old_normalize(resized, mode)
    height, width = normalized.shape[-2:]
    return F.pad(normalized, (0, SIZE - width, 0, SIZE - height))


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    folder = tmp_path_factory.mktemp("shapes")
    rng = np.random.default_rng(0)
    paths = []
    for i, hw in enumerate(SHAPES):
        low, high = sorted(rng.integers(0, 256, 2))  # each image its own value range
        pixels = rng.integers(low, high + 1, (*hw, 3), dtype=np.uint8)
        paths.append(str(folder / f"{i}.png"))
        Image.fromarray(pixels).save(paths[-1])
    return load_table(pd.DataFrame({"image": paths}), require_labels=False)


@pytest.mark.parametrize("mode", ["sam", "minmax"])
def test_model_normalisation_equals_the_old_data_path(table: pd.DataFrame, mode: str) -> None:
    normalize = build_normalization(mode)
    loader = DataLoader(SegmentationDataset(table, SIZE), batch_size=4)  # batches mix sizes
    worst = 0.0
    for batch in loader:
        assert batch["image"].max() <= 255 and batch["image"].min() >= 0
        new = normalize(batch["image"], batch["resized_hw"])
        for position, index in enumerate(batch["index"].tolist()):
            old = old_item(table.image[index], mode)
            worst = max(worst, (new[position] - old).abs().max().item())
            h, w = batch["resized_hw"][position].tolist()
            assert (
                new[position][:, h:].abs().sum() == 0 and new[position][:, :, w:].abs().sum() == 0
            )
    assert worst <= 1e-6, worst


def test_whole_input_is_valid_without_valid_hw() -> None:
    images = torch.rand(2, 3, 8, 8) * 255
    full = torch.tensor([[8, 8], [8, 8]])
    for normalize in (MinMaxNormalization(), MeanStdNormalization(SAM_PIXEL_MEAN, SAM_PIXEL_STD)):
        assert torch.equal(normalize(images), normalize(images, full))
    minmax = MinMaxNormalization()(images)
    assert minmax.amin(dim=(1, 2, 3)).tolist() == [0.0, 0.0]
    assert minmax.amax(dim=(1, 2, 3)).tolist() == [1.0, 1.0]


def test_min_max_ignores_the_padding_and_constant_images_become_zero() -> None:
    images = torch.zeros(2, 3, 4, 4)
    images[0, :, :2, :3] = torch.tensor([10.0, 20.0, 30.0]).view(3, 1, 1)
    images[1, :, :3, :1] = 77.0  # constant valid region
    out = MinMaxNormalization()(images, torch.tensor([[2, 3], [3, 1]]))
    assert out[0, 0, 0, 0] == 0.0 and out[0, 2, 1, 2] == 1.0 and out[0, 1, 0, 0] == 0.5
    assert out[1].abs().max() == 0
    assert out[0, :, 2:].abs().max() == 0 and out[0, :, :, 3:].abs().max() == 0


def test_uint8_input_gives_float32() -> None:
    images = torch.full((1, 3, 2, 2), 200, dtype=torch.uint8)
    for normalize in (MinMaxNormalization(), build_normalization("sam")):
        assert normalize(images).dtype == torch.float32
    expected = (200 - SAM_PIXEL_MEAN[1]) / SAM_PIXEL_STD[1]
    assert build_normalization("sam")(images)[0, 1, 0, 0].item() == pytest.approx(expected)


def test_unknown_normalisation_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"'imagenet'.*\['sam', 'minmax'\]"):
        build_normalization("imagenet")


@pytest.mark.parametrize("mode", ["sam", "minmax"])
def test_exported_normalisation_follows_each_batch_valid_region(mode: str) -> None:
    """No Python branch on the data: one exported graph serves other sizes (ONNX needs it)."""
    normalize = build_normalization(mode)
    images = torch.rand(2, 3, 16, 16) * 255
    exported = torch.export.export(normalize, (images, torch.tensor([[16, 9], [5, 16]])))
    other = torch.tensor([[3, 16], [16, 11]])
    assert torch.equal(exported.module()(images, other), normalize(images, other))
    assert valid_mask(images, other)[:, 0].sum(dim=(1, 2)).tolist() == [48, 176]


@pytest.mark.parametrize(("backbone", "mode"), [("vit_tiny", "sam"), ("lite_tiny", "minmax")])
def test_segmenter_carries_its_normalisation(backbone: str, mode: str) -> None:
    torch.manual_seed(0)
    model, parts = build_segmenter(backbone, num_classes=2)
    model.eval()
    assert parts.weights.normalization == mode
    if mode == "sam":
        assert model.normalize.pixel_mean.flatten().tolist() == pytest.approx(SAM_PIXEL_MEAN)
    assert not any("pixel_" in key for key in model.state_dict())  # constants, not weights
    images = torch.zeros(2, 3, SIZE, SIZE)
    valid = torch.tensor([[SIZE, 40], [21, SIZE]])
    rng = np.random.default_rng(1)
    old = []
    for b, (h, w) in enumerate(valid.tolist()):
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        images[b, :, :h, :w] = torch.from_numpy(pixels).permute(2, 0, 1).float()
        old.append(F.pad(old_normalize(pixels, mode), (0, SIZE - w, 0, SIZE - h)))
    with torch.no_grad():
        logits = model(images, valid)
        expected = model.mask_head(
            model.image_encoder(torch.stack(old)),
            model.prompt_encoder.get_dense_pe(),
            model.prompt_encoder(points=None, boxes=None, masks=None)[1],
        )
    expected = F.interpolate(expected, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
