"""More than three bands: the 1x1 band projection, N-band reading, fit/predict/save/load."""

from __future__ import annotations

from pathlib import Path

import _tiny
import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
from PIL import Image

from autoseg import SemanticSegmentor
from autoseg.builder import build_model, count_parameters
from autoseg.config import Config
from autoseg.data import multiband
from autoseg.data.dataset import SegmentationDataset
from autoseg.data.multiband import BandsError, read_model_image
from autoseg.errors import SettingsError
from autoseg.models.band_projection import BandProjection
from autoseg.peft import trainable_state_dict

BASE = {"model.backbone": "vit_tiny", "data.image_size": 64, "peft.method": "lora"}


def _config(**extra: object) -> Config:
    return Config().with_overrides({**BASE, **{k.replace("__", "."): v for k, v in extra.items()}})


@pytest.mark.parametrize("channels", [4, 6])
def test_projection_starts_as_the_rgb_model(channels: int) -> None:
    torch.manual_seed(0)
    rgb, _ = build_model(_config(), 1)
    torch.manual_seed(0)
    multi, _ = build_model(_config(model__in_channels=channels), 1)
    multi.load_state_dict(rgb.state_dict(), strict=False)  # same SAM; projection at its init
    images = torch.rand(2, channels, 64, 64) * 255
    valid = torch.tensor([[64, 40], [33, 64]])
    with torch.no_grad():
        expected = rgb.eval()(images[:, :3], valid)
        got = multi.eval()(images, valid)
    assert torch.equal(got, expected)


def test_projection_picks_chosen_channels_and_checks_its_input() -> None:
    projection = BandProjection(5, rgb=(4, 0, 2))
    images = torch.rand(1, 5, 3, 3)
    assert torch.equal(projection(images), images[:, [4, 0, 2]])
    with pytest.raises(ValueError, match="5-band"):
        projection(images[:, :4])
    with pytest.raises(ValueError, match="rgb"):
        BandProjection(4, rgb=(0, 1, 4))


def test_projection_is_trainable_and_counted() -> None:
    model, _ = build_model(_config(model__in_channels=6), 1)
    saved = trainable_state_dict(model)
    assert {"band_projection.conv.weight", "band_projection.conv.bias"} <= set(saved)
    counts = count_parameters(_config(model__in_channels=6))
    assert counts["bands"] == 6 * 3 + 3
    rgb_counts = count_parameters(_config())
    assert rgb_counts["bands"] == 0
    assert counts["trainable"] - rgb_counts["trainable"] == counts["bands"]
    assert build_model(_config(), 1)[0].band_projection is None


def test_band_settings_are_checked() -> None:
    with pytest.raises(SettingsError, match="in_channels"):
        _config(model__in_channels=4, data__bands=[1, 2, 3])
    with pytest.raises(SettingsError, match="band numbers"):
        _config(data__bands=[0, 1, 2])
    assert _config(data__bands=[2]).data.bands == [2]


def _bands_image(
    channels: int, rng: np.random.Generator, size=(40, 56)
) -> tuple[np.ndarray, np.ndarray]:
    """A uint16 ``(H, W, C)`` image whose square object is bright in every band, and its mask."""
    h, w = size
    image = rng.integers(500, 1500, (h, w, channels)).astype(np.uint16)
    mask = np.zeros((h, w), np.uint8)
    top, left = rng.integers(4, h // 2), rng.integers(4, w // 2)
    mask[top : top + h // 3, left : left + w // 3] = 1
    image[mask == 1] += 2000
    return image, mask


def _write_tiff(path: Path, image: np.ndarray) -> None:
    """A multi-band TIFF as GDAL writes them: one page, bands interleaved per pixel."""
    tifffile.imwrite(path, image, photometric="minisblack", planarconfig="contig")


def _dataset(root: Path, channels: int, n: int = 8, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        image, mask = _bands_image(channels, rng)
        _write_tiff(root / f"img_{i}.tif", image)
        Image.fromarray(mask * 255).save(root / f"mask_{i}.png")
        rows.append({"image": str(root / f"img_{i}.tif"), "label": str(root / f"mask_{i}.png")})
    pd.DataFrame(rows).to_csv(root / "train.csv", index=False)
    return root / "train.csv"


def test_band_reading_with_and_without_rasterio(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("rasterio")
    image, _ = _bands_image(6, np.random.default_rng(3))
    _write_tiff(tmp_path / "six.tif", image)
    through_gdal = read_model_image(tmp_path / "six.tif", 4, [3, 2, 1, 6])
    monkeypatch.setattr(multiband, "_has_rasterio", lambda: False)
    through_tifffile = read_model_image(tmp_path / "six.tif", 4, [3, 2, 1, 6])
    assert through_gdal.shape == (40, 56, 4) and through_gdal.dtype == np.uint8
    np.testing.assert_array_equal(through_gdal, through_tifffile)
    # per-band 2..98 percentile scaling: each band spans 0..255
    assert (through_tifffile.reshape(-1, 4).min(0) == 0).all()
    assert (through_tifffile.reshape(-1, 4).max(0) == 255).all()


def test_band_count_mismatch_names_the_file(tmp_path: Path) -> None:
    csv = _dataset(tmp_path, 6, n=2)
    table = pd.read_csv(csv)
    with pytest.raises(BandsError, match=r"img_0\.tif has 6 band\(s\) but model.in_channels=4"):
        SegmentationDataset(table, 64, in_channels=4)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(BandsError, match=r"rgb\.png.*not a TIFF"):
        read_model_image(tmp_path / "rgb.png", 4)
    with pytest.raises(BandsError, match="band 7 does not exist"):
        SegmentationDataset(table, 64, in_channels=4, bands=(1, 2, 3, 7))
    item = SegmentationDataset(table, 64, in_channels=4, bands=(3, 2, 1, 6))[0]
    assert item["image"].shape == (4, 64, 64)


@pytest.mark.parametrize(
    ("channels", "extra"), [(4, {}), (6, {"model.in_channels": 4, "data.bands": [3, 2, 1, 5]})]
)
def test_multiband_fit_predict_save_load(tmp_path: Path, channels: int, extra: dict) -> None:
    csv = _dataset(tmp_path, channels)
    settings = {**_tiny.TINY, "peft.method": "lora", "model.in_channels": channels, **extra}
    seg = SemanticSegmentor(hyperparameters=settings, path=tmp_path / "seg", verbosity=0)
    seg.fit(csv)
    model = seg.state_.model
    weight = model.band_projection.conv.weight.detach().clone()
    assert not torch.equal(weight, BandProjection(weight.shape[1]).conv.weight), "it trained"
    images = list(pd.read_csv(csv)["image"][:2])
    masks = seg.predict(images)
    assert [m.shape for m in masks] == [(40, 56), (40, 56)]
    assert [m.shape for m in seg.predict(images, tile=True, tile_size=32)] == [(40, 56)] * 2
    loaded = SemanticSegmentor.load(tmp_path / "seg")
    assert torch.equal(loaded.state_.model.band_projection.conv.weight, weight)
    for a, b in zip(seg.predict_proba(images), loaded.predict_proba(images), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
