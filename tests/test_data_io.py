from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from autoseg.data import image_size, list_images, read_image, read_mask, scale_to_uint8

H, W = 12, 20


def _rgb(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def _check_rgb(image: np.ndarray) -> None:
    assert image.shape == (H, W, 3)
    assert image.dtype == np.uint8
    assert image.flags.c_contiguous


def test_rgb_png_is_read_exactly(tmp_path: Path) -> None:
    rgb = _rgb()
    Image.fromarray(rgb).save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    _check_rgb(image)
    np.testing.assert_array_equal(image, rgb)


def test_grayscale_is_replicated(tmp_path: Path) -> None:
    grey = _rgb()[:, :, 0]
    Image.fromarray(grey).save(tmp_path / "g.png")
    image = read_image(str(tmp_path / "g.png"))
    _check_rgb(image)
    for c in range(3):
        np.testing.assert_array_equal(image[:, :, c], grey)


def test_rgba_drops_alpha(tmp_path: Path) -> None:
    rgba = np.dstack([_rgb(), np.full((H, W), 7, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    _check_rgb(image)
    np.testing.assert_array_equal(image, rgba[:, :, :3])


def test_palette_image_gives_colors(tmp_path: Path) -> None:
    index = np.zeros((H, W), np.uint8)
    index[:, W // 2 :] = 1
    img = Image.fromarray(index).convert("P")
    img.putpalette([10, 20, 30, 200, 100, 50] + [0] * (256 * 3 - 6))
    img.save(tmp_path / "p.png")
    image = read_image(tmp_path / "p.png")
    _check_rgb(image)
    assert tuple(image[0, 0]) == (10, 20, 30)
    assert tuple(image[0, -1]) == (200, 100, 50)


def test_16bit_png_is_stretched(tmp_path: Path) -> None:
    # 12-bit data in a 16-bit container must not come out almost black
    ramp = np.linspace(0, 4095, H * W).reshape(H, W).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "d.png")
    image = read_image(tmp_path / "d.png")
    _check_rgb(image)
    assert image.min() == 0 and image.max() == 255
    assert np.all(np.diff(image[:, :, 0].ravel().astype(int)) >= 0)


def test_16bit_rgb_tiff_uses_full_range(tmp_path: Path) -> None:
    data = np.random.default_rng(0).integers(0, 4096, (H, W, 3)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "d.tif", data)
    image = read_image(tmp_path / "d.tif")
    _check_rgb(image)
    assert image.max() == 255 and image.min() == 0
    # brighter input pixels stay brighter
    assert image[data == data.max()].min() > image[data == data.min()].max()


def test_float_tiffs(tmp_path: Path) -> None:
    grey = np.random.default_rng(1).random((H, W)).astype(np.float32)
    tifffile.imwrite(tmp_path / "g.tif", grey)
    tifffile.imwrite(tmp_path / "c.tif", np.dstack([grey] * 3))
    for name in ("g.tif", "c.tif"):
        image = read_image(tmp_path / name)
        _check_rgb(image)
        assert image.max() == 255


def test_planar_tiff_is_channels_last(tmp_path: Path) -> None:
    data = np.random.default_rng(2).integers(0, 60000, (3, H, W)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "p.tif", data, photometric="rgb", planarconfig="separate")
    _check_rgb(read_image(tmp_path / "p.tif"))
    assert image_size(tmp_path / "p.tif") == (H, W)


def test_bmp_and_jpeg(tmp_path: Path) -> None:
    rgb = _rgb()
    Image.fromarray(rgb).save(tmp_path / "a.bmp")
    Image.fromarray(rgb).save(tmp_path / "a.jpg", quality=95)
    np.testing.assert_array_equal(read_image(tmp_path / "a.bmp"), rgb)
    _check_rgb(read_image(tmp_path / "a.jpg"))


def test_constant_16bit_image_is_black() -> None:
    assert scale_to_uint8(np.full((3, 3), 1000, np.uint16)).max() == 0


def test_mask_modes(tmp_path: Path) -> None:
    binary = np.zeros((H, W), np.uint8)
    binary[2:6, 3:9] = 1
    Image.fromarray(binary * 255).save(tmp_path / "l255.png")
    Image.fromarray(binary).save(tmp_path / "l01.png")
    Image.fromarray(binary.astype(bool)).save(tmp_path / "bit.png")
    assert Image.open(tmp_path / "bit.png").mode == "1"
    np.testing.assert_array_equal(read_mask(tmp_path / "l255.png"), binary * 255)
    np.testing.assert_array_equal(read_mask(tmp_path / "l01.png"), binary)
    bit = read_mask(tmp_path / "bit.png")
    assert bit.dtype == np.uint8
    np.testing.assert_array_equal(bit, binary)


def test_palette_mask_gives_indices(tmp_path: Path) -> None:
    ids = np.random.default_rng(0).integers(0, 4, (H, W)).astype(np.uint8)
    img = Image.fromarray(ids).convert("P")
    img.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (252 * 3))
    img.save(tmp_path / "p.png")
    mask = read_mask(tmp_path / "p.png")
    assert mask.shape == (H, W)
    np.testing.assert_array_equal(mask, ids)


def test_color_and_16bit_masks(tmp_path: Path) -> None:
    rgba = np.dstack([_rgb(), np.full((H, W), 255, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "c.png")
    mask = read_mask(tmp_path / "c.png")
    assert mask.shape == (H, W, 3) and mask.dtype == np.uint8
    ids = np.arange(H * W, dtype=np.uint16).reshape(H, W)
    Image.fromarray(ids).save(tmp_path / "i16.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "i16.png"), ids)


def test_image_size_reads_header(tmp_path: Path) -> None:
    Image.fromarray(_rgb()).save(tmp_path / "a.jpg")
    assert image_size(tmp_path / "a.jpg") == (H, W)


def test_unreadable_files_raise(tmp_path: Path) -> None:
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(OSError):
        read_image(tmp_path / "bad.png")
    with pytest.raises(FileNotFoundError):
        read_mask(tmp_path / "missing.png")


def test_list_images_sorted_and_filtered(tmp_path: Path) -> None:
    for name in ("b.PNG", "a.jpg", "c.tif", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.PNG", "c.tif"]
