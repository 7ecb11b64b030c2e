"""GeoTIFF reading, band choice, scaling, nodata, windowed reads and atomic GeoTIFF writes."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")

import tifffile  # noqa: E402
from PIL import Image  # noqa: E402

from autoseg.data.geotiff import (  # noqa: E402
    GeoExtraMissingError,
    GeoTiffReader,
    describe_raster,
    read_geotiff,
    read_window,
)
from autoseg.data.geotiff_write import (  # noqa: E402
    MASK_NODATA,
    GeoTiffWriter,
    write_mask,
    write_probabilities,
)
from autoseg.data.io import is_geotiff, read_image  # noqa: E402
from autoseg.errors import AutosegError, OutputExistsError, SettingsError  # noqa: E402

H, W = 300, 400
CRS = "EPSG:32633"
TRANSFORM = rasterio.Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4600000.0)


def _write(path: Path, data: np.ndarray, nodata: float | None = None, **kw: object) -> Path:
    profile = {"crs": CRS, "transform": TRANSFORM, **kw}
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype=data.dtype.name,
        nodata=nodata,
        **profile,
    ) as dst:
        dst.write(data)
    return path


def _bands(count: int, dtype: str, seed: int = 0) -> np.ndarray:
    """Band k (1-based) holds k * 1000 + noise in 0..999, so every band is recognisable."""
    noise = np.random.default_rng(seed).integers(0, 1000, (count, H, W))
    return (np.arange(1, count + 1)[:, None, None] * 1000 + noise).astype(dtype)


def _expected(band: np.ndarray, low: float, high: float) -> np.ndarray:
    scaled = (band.astype(np.float64) - low) * 255.0 / (high - low) + 0.5
    return np.clip(scaled, 0, 255).astype(np.uint8)


@pytest.fixture
def six(tmp_path: Path) -> Path:
    return _write(tmp_path / "six.tif", _bands(6, "uint16"))


@pytest.fixture
def nodata_raster(tmp_path: Path) -> tuple[Path, np.ndarray]:
    data = _bands(4, "float32", seed=1)
    hole = np.zeros((H, W), bool)
    hole[50:120, 30:90] = True
    data[:, hole] = -9999.0
    data[2, 200, 300] = np.nan  # NaN in one band is also invalid
    hole[200, 300] = True
    return _write(tmp_path / "holes.tif", data, nodata=-9999.0), hole


def test_description_of_a_multiband_raster(six: Path) -> None:
    info = describe_raster(six)
    assert (info.height, info.width, info.count) == (H, W, 6)
    assert info.dtypes == ("uint16",) * 6
    assert info.crs == CRS
    assert info.transform == tuple(TRANSFORM)[:6]
    assert info.nodata is None
    assert info.bands == (1, 2, 3)
    assert info.percentiles == (2.0, 98.0)


def test_band_choice_picks_the_named_bands_scaled_by_their_percentiles(six: Path) -> None:
    data = _bands(6, "uint16")
    image, valid = read_geotiff(six, [5, 3, 1])
    assert image.shape == (H, W, 3) and image.dtype == np.uint8 and valid.all()
    for channel, band in enumerate((5, 3, 1)):
        low, high = np.percentile(data[band - 1], [2, 98])
        np.testing.assert_array_equal(image[:, :, channel], _expected(data[band - 1], low, high))


def test_in_channels_reads_n_bands(six: Path) -> None:
    assert read_geotiff(six, in_channels=6).image.shape == (H, W, 6)
    info = describe_raster(six, [6, 4, 3, 2], in_channels=4)
    assert info.bands == (6, 4, 3, 2)
    assert [s.band for s in info.scales] == [6, 4, 3, 2]


def test_single_band_is_repeated(tmp_path: Path) -> None:
    path = _write(tmp_path / "one.tif", _bands(1, "uint16"))
    image, _ = read_geotiff(path)
    assert describe_raster(path).bands == (1, 1, 1)
    np.testing.assert_array_equal(image[:, :, 0], image[:, :, 2])
    assert describe_raster(tmp_path / "one.tif", [1]).bands == (1, 1, 1)


@pytest.mark.parametrize(
    ("bands", "in_channels"), [([7, 1, 2], None), ([1, 2], None), ([0, 1, 2], None), (None, 8)]
)
def test_bad_band_choice_is_a_clear_error(six: Path, bands: object, in_channels: object) -> None:
    with pytest.raises(SettingsError, match="band|in_channels"):
        describe_raster(six, bands, in_channels=in_channels)


def test_known_percentiles_ignore_hot_pixels(tmp_path: Path) -> None:
    band = np.tile(np.linspace(100, 1100, W), (H, 1)).astype(np.uint16)
    band[0, :50] = 65535  # hot pixels
    path = _write(tmp_path / "ramp.tif", band[None])
    info = describe_raster(path)
    low, high = np.percentile(band, [2, 98])
    assert (info.scales[0].low, info.scales[0].high) == (low, high)
    assert high < 1100
    image = read_geotiff(path).image[:, :, 0]
    assert (image[0, :50] == 255).all()
    exact = describe_raster(path, percentiles=(0, 100))
    assert (exact.scales[0].low, exact.scales[0].high) == (100.0, 65535.0)
    assert exact.scales[0].apply(np.array([100, 65535, 32817.5])).tolist() == [0, 255, 128]


def test_uint8_kept_as_stored_unless_stretched(tmp_path: Path) -> None:
    rgb = np.random.default_rng(2).integers(20, 200, (3, H, W)).astype(np.uint8)
    path = _write(tmp_path / "rgb.tif", rgb)
    np.testing.assert_array_equal(read_geotiff(path).image, np.moveaxis(rgb, 0, -1))
    stretched = read_geotiff(path, stretch_uint8=True).image
    assert stretched.max() == 255 and stretched.min() == 0


def test_nodata_is_left_out_of_scaling_and_reported(nodata_raster: tuple[Path, np.ndarray]) -> None:
    path, hole = nodata_raster
    data = rasterio.open(path).read()
    info = describe_raster(path)
    assert info.nodata == -9999.0
    for scale in info.scales:
        band = data[scale.band - 1]
        keep = ~hole & np.isfinite(band)
        assert (scale.low, scale.high) == tuple(np.percentile(band[keep], [2, 98]))
        assert scale.low > 1000  # the -9999 pixels did not drag the low end down
    image, valid = read_window(info)
    np.testing.assert_array_equal(valid, ~hole)
    assert (image[hole] == 0).all()


def test_windows_tile_back_to_the_whole_image(nodata_raster: tuple[Path, np.ndarray]) -> None:
    path, _ = nodata_raster
    info = describe_raster(path, [4, 2, 1])
    whole = read_window(info)
    image = np.zeros_like(whole.image)
    valid = np.zeros_like(whole.valid)
    with GeoTiffReader(info) as reader:
        for row in range(0, H, 128):
            for col in range(0, W, 96):
                part = reader.read((row, col, 128, 96))  # runs past the bottom and right
                h, w = min(128, H - row), min(96, W - col)
                image[row : row + h, col : col + w] = part.image[:h, :w]
                valid[row : row + h, col : col + w] = part.valid[:h, :w]
                assert not part.valid[h:].any() and not part.valid[:, w:].any()
    np.testing.assert_array_equal(image, whole.image)
    np.testing.assert_array_equal(valid, whole.valid)


def test_boundless_windows_are_padded(six: Path) -> None:
    info = describe_raster(six)
    whole = read_window(info).image
    image, valid = read_window(info, (-10, -20, 50, 60))
    assert image.shape == (50, 60, 3)
    assert not valid[:10].any() and not valid[:, :20].any() and valid[10:, 20:].all()
    assert (image[:10] == 0).all() and (image[:, :20] == 0).all()
    np.testing.assert_array_equal(image[10:, 20:], whole[:40, :40])
    image, valid = read_window(info, (H - 5, W - 5, 10, 10))
    np.testing.assert_array_equal(image[:5, :5], whole[-5:, -5:])
    assert valid.sum() == 25
    image, valid = read_window(info, (H + 10, 0, 8, 8))
    assert not valid.any() and not image.any()


def test_decimated_statistics_are_close_and_shared_by_every_window(six: Path) -> None:
    full = describe_raster(six)
    info = describe_raster(six, max_stats_pixels=5000)
    assert info.scales != full.scales
    for coarse, exact in zip(info.scales, full.scales, strict=True):
        assert abs(coarse.low - exact.low) < 40 and abs(coarse.high - exact.high) < 40
    whole = read_window(info).image
    np.testing.assert_array_equal(
        read_window(info, (100, 150, 64, 64)).image, whole[100:164, 150:214]
    )


def _mask_and_proba(info_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    proba = rng.random((3, *info_shape), dtype=np.float32)
    proba /= proba.sum(axis=0, keepdims=True)
    return proba.argmax(axis=0).astype(np.uint8), proba


def test_crs_transform_and_layout_round_trip(six: Path, tmp_path: Path) -> None:
    info = describe_raster(six)
    mask, proba = _mask_and_proba(info.shape)
    colors = {0: (0, 0, 0), 1: (255, 0, 0), 2: (0, 255, 0)}
    write_mask(tmp_path / "mask.tif", mask, info, class_colors=colors)
    write_probabilities(tmp_path / "proba.tif", proba, info)
    write_probabilities(tmp_path / "binary.tif", proba[1], info)
    with rasterio.open(tmp_path / "mask.tif") as src:
        assert src.crs.to_string() == CRS and src.transform == TRANSFORM
        assert src.dtypes == ("uint8",) and src.nodata == MASK_NODATA
        assert src.block_shapes == [(256, 256)] and src.compression.name == "deflate"
        assert src.colormap(1)[1] == (255, 0, 0, 255)
        np.testing.assert_array_equal(src.read(1), mask)
    with rasterio.open(tmp_path / "proba.tif") as src:
        assert src.crs.to_string() == CRS and src.transform == TRANSFORM
        assert src.count == 3 and src.dtypes == ("float32",) * 3
        assert src.compression.name == "deflate"
        np.testing.assert_array_equal(src.read(), proba)
    with tifffile.TiffFile(tmp_path / "proba.tif") as tif:
        assert tif.pages[0].predictor == 3  # floating-point predictor
    with rasterio.open(tmp_path / "binary.tif") as src:
        assert src.count == 1
        np.testing.assert_array_equal(src.read(1), proba[1])
    assert is_geotiff(tmp_path / "mask.tif")


def test_windowed_writes_equal_the_whole_image_write(six: Path, tmp_path: Path) -> None:
    info = describe_raster(six)
    mask, proba = _mask_and_proba(info.shape)
    valid = np.ones(info.shape, bool)
    valid[:40, :70] = False
    write_mask(tmp_path / "whole_mask.tif", mask, info, valid=valid)
    write_probabilities(tmp_path / "whole_proba.tif", proba, info, valid=valid)
    pad = 30  # windows start off the raster, run past every edge and miss the tile grid
    big_mask = np.pad(mask, pad)
    big_proba = np.pad(proba, ((0, 0), (pad, pad), (pad, pad)))
    big_valid = np.pad(valid, pad)
    with (
        GeoTiffWriter(tmp_path / "win_mask.tif", info, "mask") as masks,
        GeoTiffWriter(tmp_path / "win_proba.tif", info, "probabilities", classes=3) as probas,
    ):
        for row in range(0, H + pad, 112):
            for col in range(0, W + pad, 150):
                rows, cols = slice(row, row + 112), slice(col, col + 150)
                tile_mask = np.zeros((112, 150), np.uint8)
                tile_proba = np.zeros((3, 112, 150), np.float32)
                tile_valid = np.zeros((112, 150), bool)
                h, w = big_mask[rows, cols].shape
                tile_mask[:h, :w] = big_mask[rows, cols]
                tile_proba[:, :h, :w] = big_proba[:, rows, cols]
                tile_valid[:h, :w] = big_valid[rows, cols]
                window = (row - pad, col - pad, 112, 150)
                masks.write(tile_mask, window, valid=tile_valid)
                probas.write(tile_proba, window, valid=tile_valid)
    for name in ("mask", "proba"):
        with (
            rasterio.open(tmp_path / f"whole_{name}.tif") as whole,
            rasterio.open(tmp_path / f"win_{name}.tif") as windowed,
        ):
            a_profile, b_profile = dict(whole.profile), dict(windowed.profile)
            assert np.array_equal(a_profile.pop("nodata"), b_profile.pop("nodata"), equal_nan=True)
            assert a_profile == b_profile
            a, b = whole.read(), windowed.read()
            assert a.tobytes() == b.tobytes()  # bit for bit, NaN nodata included


def test_nodata_is_carried_into_masks_and_probabilities(
    nodata_raster: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    path, hole = nodata_raster
    info = describe_raster(path)
    _, valid = read_window(info)
    mask, proba = _mask_and_proba(info.shape)
    write_mask(tmp_path / "mask.tif", mask, info, valid=valid)
    write_probabilities(tmp_path / "proba.tif", proba, info, valid=valid)
    with rasterio.open(tmp_path / "mask.tif") as src:
        written = src.read(1)
        assert (written[hole] == MASK_NODATA).all()
        np.testing.assert_array_equal(written[~hole], mask[~hole])
        assert (src.read_masks(1) == 0).sum() == hole.sum()
    with rasterio.open(tmp_path / "proba.tif") as src:
        assert src.nodata == -9999.0  # the input's nodata, as it cannot be a probability
        assert (src.read()[:, hole] == -9999.0).all()


def test_probability_nodata_falls_back_to_nan(tmp_path: Path) -> None:
    data = _bands(4, "uint16")
    data[:, :10] = 0
    info = describe_raster(_write(tmp_path / "zero.tif", data, nodata=0))
    _, valid = read_window(info)
    write_probabilities(
        tmp_path / "p.tif", np.full(info.shape, 0.25, np.float32), info, valid=valid
    )
    with rasterio.open(tmp_path / "p.tif") as src:
        assert np.isnan(src.nodata)
        band = src.read(1)
        assert np.isnan(band[:10]).all() and (band[10:] == 0.25).all()


def test_failure_mid_write_leaves_nothing(six: Path, tmp_path: Path) -> None:
    info = describe_raster(six)
    out = tmp_path / "out" / "mask.tif"
    out.parent.mkdir()
    with pytest.raises(RuntimeError, match="injected"):
        with GeoTiffWriter(out, info, "mask") as writer:
            writer.write(np.ones((100, 100), np.uint8), (0, 0, 100, 100))
            assert not out.exists()
            assert len(list(out.parent.iterdir())) == 1  # the hidden temporary file
            raise RuntimeError("injected")
    assert list(out.parent.iterdir()) == []
    bad = np.full(info.shape, MASK_NODATA, np.uint8)  # 255 is reserved for nodata
    with pytest.raises(SettingsError, match="nodata"):
        write_mask(out, bad, info)
    assert list(out.parent.iterdir()) == []


def test_existing_files_are_not_overwritten_unless_asked(six: Path, tmp_path: Path) -> None:
    info = describe_raster(six)
    mask, _ = _mask_and_proba(info.shape)
    out = tmp_path / "mask.tif"
    out.write_bytes(b"mine")
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        write_mask(out, mask, info)
    assert out.read_bytes() == b"mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.tif", "six.tif"]
    write_mask(out, mask, info, overwrite=True)
    np.testing.assert_array_equal(rasterio.open(out).read(1), mask)
    with pytest.raises(OutputExistsError, match="folder"):
        write_mask(tmp_path, mask, info)


def test_wrong_shapes_and_values_are_clear_errors(six: Path, tmp_path: Path) -> None:
    info = describe_raster(six)
    with GeoTiffWriter(tmp_path / "m.tif", info, "mask") as writer:
        with pytest.raises(SettingsError, match="window"):
            writer.write(np.zeros((10, 10), np.uint8), (0, 0, 10, 20))
        with pytest.raises(SettingsError, match="integer"):
            writer.write(np.zeros((10, 10), np.float32), (0, 0, 10, 10))
        with pytest.raises(SettingsError, match="valid"):
            writer.write(np.zeros((10, 10), np.uint8), (0, 0, 10, 10), valid=np.ones((5, 5)))
    with GeoTiffWriter(tmp_path / "p.tif", info, "probabilities", classes=3) as writer:
        with pytest.raises(SettingsError, match="3-band"):
            writer.write(np.zeros((2, H, W), np.float32))
    with pytest.raises(SettingsError, match="class_colors"):
        write_mask(
            tmp_path / "c.tif", np.zeros(info.shape, np.uint8), info, class_colors={300: (1, 2, 3)}
        )


def test_missing_rasterio_names_the_extra(six: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    info = describe_raster(six)
    monkeypatch.setitem(sys.modules, "rasterio", None)
    for call in (lambda: describe_raster(six), lambda: GeoTiffWriter(six.with_name("x.tif"), info)):
        with pytest.raises(GeoExtraMissingError, match=r"pip install autoseg\[geo\]") as caught:
            call()
        assert isinstance(caught.value, AutosegError)


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_is_geotiff_tells_georeferenced_from_plain(six: Path, tmp_path: Path) -> None:
    assert is_geotiff(six)
    tifffile.imwrite(tmp_path / "plain.tif", np.zeros((8, 8, 3), np.uint8))
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.png")
    bare = np.zeros((1, 8, 8), np.uint8)
    _write(tmp_path / "bare.tif", bare, crs=None, transform=rasterio.Affine.identity())
    _write(tmp_path / "crs.tif", bare, transform=rasterio.Affine.identity())
    _write(tmp_path / "moved.tif", bare, crs=None)
    assert not is_geotiff(tmp_path / "plain.tif")
    assert not is_geotiff(tmp_path / "a.png")
    assert not is_geotiff(tmp_path / "bare.tif")
    assert is_geotiff(tmp_path / "crs.tif") and is_geotiff(tmp_path / "moved.tif")
    with pytest.raises(FileNotFoundError):
        is_geotiff(tmp_path / "missing.tif")


def test_read_image_still_reads_a_geotiff_as_a_plain_tiff(tmp_path: Path) -> None:
    rgb = np.random.default_rng(4).integers(0, 256, (3, 20, 30)).astype(np.uint8)
    path = _write(tmp_path / "rgb.tif", rgb)
    np.testing.assert_array_equal(read_image(path), np.moveaxis(rgb, 0, -1))
