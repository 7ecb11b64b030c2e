"""Streaming GeoTIFF prediction: windowed equals whole, georeferencing carried, refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

rasterio = pytest.importorskip("rasterio")

from autoseg.builder import build_model  # noqa: E402
from autoseg.config import Config, EnvConfig  # noqa: E402
from autoseg.data.geotiff import describe_raster, read_window  # noqa: E402
from autoseg.errors import OutputExistsError, SettingsError  # noqa: E402
from autoseg.labels.problem import Problem  # noqa: E402
from autoseg.raster_predict import (  # noqa: E402
    block_windows,
    predict_geotiff,
    predict_raster,
    untiled_probabilities,
    with_margin,
)
from autoseg.runtime import resolve_runtime  # noqa: E402
from autoseg.tiling import tiled_probabilities  # noqa: E402

CRS = "EPSG:32633"
TRANSFORM = (10.0, 0.0, 500000.0, 0.0, -10.0, 4600000.0)
HEIGHT, WIDTH = 90, 110


def _write(path: Path, data: np.ndarray, nodata: float | None) -> Path:
    with rasterio.open(
        path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1],
        count=data.shape[0], dtype=data.dtype, crs=CRS,
        transform=rasterio.Affine(*TRANSFORM), nodata=nodata,
    ) as dst:  # fmt: skip
        dst.write(data)
    return path


@pytest.fixture
def raster(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A 6-band uint16 raster with a nodata hole (nodata = 0), and the hole's mask."""
    rng = np.random.default_rng(0)
    data = rng.integers(200, 5000, (6, HEIGHT, WIDTH)).astype(np.uint16)
    hole = np.zeros((HEIGHT, WIDTH), bool)
    hole[10:20, 30:47] = True
    data[:, hole] = 0
    return _write(tmp_path / "in.tif", data, nodata=0), hole


@pytest.fixture
def float_raster(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    data = rng.normal(0.2, 0.1, (4, HEIGHT, WIDTH)).astype(np.float32)
    data[:, 50:60, 5:9] = -9999.0
    return _write(tmp_path / "float.tif", data, nodata=-9999.0)


def threshold(image: np.ndarray) -> np.ndarray:
    """Per pixel: the first channel's brightness as a probability (binary)."""
    return (image[:, :, 0] / 255.0).astype(np.float32)


def smooth3(image: np.ndarray) -> np.ndarray:
    """A 3x3 mean of each channel (reach 1 pixel, edges repeated), as K = C probabilities."""
    padded = np.pad(image.astype(np.float32), ((1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = image.shape[:2]
    total = sum(padded[r : r + h, c : c + w] for r in range(3) for c in range(3))
    out = np.moveaxis(total / 9.0, 2, 0)
    return out / np.maximum(out.sum(axis=0, keepdims=True), 1e-6)


def _read(path: Path) -> tuple[np.ndarray, object]:
    with rasterio.open(path) as src:
        return src.read(), src


def test_blocks_cover_the_raster_once() -> None:
    cover = np.zeros((HEIGHT, WIDTH), int)
    for row, col, h, w in block_windows(HEIGHT, WIDTH, 32):
        cover[row : row + h, col : col + w] += 1
    assert (cover == 1).all()
    assert with_margin((32, 32, 32, 32), 8, HEIGHT, WIDTH) == (24, 24, 48, 48)
    assert with_margin((64, 96, 26, 14), 8, HEIGHT, WIDTH) == (56, 88, 34, 22)


def test_georeferencing_and_nodata_are_carried(raster, tmp_path: Path) -> None:
    path, hole = raster
    done = predict_raster(
        threshold, path, tmp_path / "mask.tif", tmp_path / "proba.tif", block_size=32, margin=4
    )
    for output in (done.mask, done.probabilities):
        with rasterio.open(output) as src:
            assert src.crs.to_string() == CRS
            assert tuple(src.transform)[:6] == TRANSFORM
            assert (src.height, src.width) == (HEIGHT, WIDTH)
            assert src.profile["tiled"] and src.compression.value.lower() == "deflate"
            pixels = src.read(1)
    with rasterio.open(done.mask) as src:
        mask, mask_nodata = src.read(1), src.nodata
    assert (
        mask_nodata == 255 and (mask[hole] == 255).all() and set(np.unique(mask[~hole])) <= {0, 1}
    )
    assert np.isnan(pixels[hole]).all() and np.isfinite(pixels[~hole]).all()


def test_windowed_output_equals_whole_output(raster, tmp_path: Path) -> None:
    path, _ = raster
    whole = predict_raster(
        smooth3, path, tmp_path / "whole.tif", tmp_path / "whole_p.tif",
        bands=[4, 2, 6], block_size=512, margin=0,
    )  # fmt: skip
    assert whole.blocks == 1
    windowed = predict_raster(
        smooth3, path, tmp_path / "win.tif", tmp_path / "win_p.tif",
        bands=[4, 2, 6], block_size=32, margin=1,
    )  # fmt: skip
    assert windowed.blocks == 3 * 4
    for a, b in (("whole.tif", "win.tif"), ("whole_p.tif", "win_p.tif")):
        first, second = _read(tmp_path / a)[0], _read(tmp_path / b)[0]
        np.testing.assert_array_equal(first, second)
    # Without the margin the 3x3 filter sees the block edges: the test would notice.
    predict_raster(smooth3, path, tmp_path / "cut_p.tif.mask", tmp_path / "cut_p.tif",
                   bands=[4, 2, 6], block_size=32, margin=0)  # fmt: skip
    assert not np.array_equal(_read(tmp_path / "whole_p.tif")[0], _read(tmp_path / "cut_p.tif")[0])


def test_float_raster_streams_like_whole(float_raster, tmp_path: Path) -> None:
    info = describe_raster(float_raster, [1, 2, 3])
    whole = threshold(read_window(info).image)
    done = predict_raster(threshold, info, tmp_path / "m.tif", tmp_path / "p.tif", block_size=48)
    proba = _read(done.probabilities)[0][0]
    valid = read_window(info).valid
    assert not valid[50:60, 5:9].any() and (proba[~valid] == -9999.0).all()  # input's nodata
    np.testing.assert_array_equal(proba[valid], whole[valid])


def test_reads_are_bounded_by_block_and_margin(raster, tmp_path: Path) -> None:
    shapes: list[tuple[int, ...]] = []

    def recording(image: np.ndarray) -> np.ndarray:
        shapes.append(image.shape)
        return threshold(image)

    predict_raster(recording, raster[0], tmp_path / "m.tif", block_size=32, margin=8)
    assert len(shapes) == 12 and max(max(s[:2]) for s in shapes) == 32 + 2 * 8


def test_refuses_before_any_work(raster, tmp_path: Path) -> None:
    path, _ = raster
    calls: list[int] = []

    def never(image: np.ndarray) -> np.ndarray:
        calls.append(1)
        return threshold(image)

    existing = tmp_path / "old.tif"
    existing.write_bytes(b"not autoseg's")
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        predict_raster(never, path, existing)
    with pytest.raises(OutputExistsError, match="input raster"):
        predict_raster(never, path, tmp_path / "m.tif", path, overwrite=True)
    with pytest.raises(OutputExistsError, match="both outputs"):
        predict_raster(never, path, tmp_path / "m.tif", tmp_path / "m.tif")
    with pytest.raises(SettingsError, match="margin"):
        predict_raster(never, path, tmp_path / "m.tif", margin=-1)
    assert not calls and existing.read_bytes() == b"not autoseg's"
    predict_raster(never, path, existing, overwrite=True)
    assert _read(existing)[0].shape == (1, HEIGHT, WIDTH)


def test_a_failing_block_leaves_no_output(raster, tmp_path: Path) -> None:
    def wrong_shape(image: np.ndarray) -> np.ndarray:
        return np.zeros((3, 3), np.float32)

    with pytest.raises(ValueError, match="block function returned shape"):
        predict_raster(wrong_shape, raster[0], tmp_path / "m.tif", tmp_path / "p.tif")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif"]


@pytest.fixture(scope="module")
def tiny_model():
    config = Config().with_overrides(
        {"model.backbone": "vit_tiny", "data.image_size": 64, "model.in_channels": 4,
         "data.bands": [3, 2, 1, 5], "peft.method": "lora"}
    )  # fmt: skip
    torch.manual_seed(0)
    model, _ = build_model(config, num_outputs=3)
    return model.eval(), resolve_runtime(EnvConfig(accelerator="cpu"), inference=True)


def test_model_prediction_of_one_block_is_the_tiled_prediction(raster, tiny_model, tmp_path):
    model, runtime = tiny_model
    problem = Problem("multiclass", classes=(0, 4, 9), class_names=("a", "b", "c"))
    path, hole = raster
    done = predict_geotiff(
        model, problem, runtime, path, tmp_path / "m.tif", tmp_path / "p.tif", block_size=256
    )
    assert done.info.bands == (3, 2, 1, 5) and done.blocks == 1
    info = describe_raster(path, [3, 2, 1, 5], in_channels=4)
    expected = tiled_probabilities(model, read_window(info).image, runtime)
    proba, mask = _read(done.probabilities)[0], _read(done.mask)[0][0]
    np.testing.assert_allclose(proba[:, ~hole], expected[:, ~hole], atol=1e-6)
    assert set(np.unique(mask[~hole])) <= {0, 4, 9} and (mask[hole] == 255).all()


def test_model_prediction_streams_in_blocks(raster, tiny_model, tmp_path):
    model, runtime = tiny_model
    problem = Problem("multiclass", classes=(0, 1, 2), class_names=("a", "b", "c"))
    messages: list[str] = []
    done = predict_geotiff(
        model, problem, runtime, raster[0], tmp_path / "m.tif", tile=False,
        block_size=48, margin=8, say=messages.append,
    )  # fmt: skip
    assert done.blocks == 6 and "6 block(s)" in messages[0]
    mask = _read(done.mask)[0][0]
    assert mask.shape == (HEIGHT, WIDTH) and set(np.unique(mask)) <= {0, 1, 2, 255}
    block = read_window(done.info, (0, 0, 56, 56)).image
    first = untiled_probabilities(model, block, runtime).argmax(axis=0)[:48, :48]
    hole = raster[1][:48, :48]
    np.testing.assert_array_equal(mask[:48, :48][~hole], first[~hole])


def test_a_fitted_predictor_predicts_a_geotiff(tmp_path):
    """Through the facade: a tiny RGB fit, then a 3-band uint8 GeoTIFF, georeferenced out."""
    import warnings

    from _tiny import TINY

    from autoseg import SemanticSegmentor
    from autoseg.data.synthetic import make_synthetic_binary
    from autoseg.errors import OutputExistsError

    train, _ = make_synthetic_binary(tmp_path / "d", n_images=8, size=(40, 56), split_test=2)
    seg = SemanticSegmentor(hyperparameters=TINY, path=tmp_path / "m", verbosity=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seg.fit(train)
    rng = np.random.default_rng(2)
    source = _write(tmp_path / "rgb.tif", rng.integers(0, 255, (3, 300, 260), np.uint8), None)
    done = seg.predict_geotiff(source, tmp_path / "mask.tif", tmp_path / "proba.tif")
    mask, src = _read(done.mask)
    assert mask.shape == (1, 300, 260) and set(np.unique(mask)) <= {0, 1}
    assert src.crs.to_epsg() == 32633 and tuple(src.transform)[:6] == TRANSFORM
    assert _read(done.probabilities)[0].shape == (1, 300, 260)
    with pytest.raises(OutputExistsError):
        seg.predict_geotiff(source, tmp_path / "mask.tif")
