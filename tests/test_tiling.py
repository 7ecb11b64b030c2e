"""Tiled prediction: window placement, seamless blending, bounded memory, the facade and CLI.

Models whose per-pixel output is a known function of the input (or of the position in the
window) run through the real tiling code, so a misplaced window, a missing normalisation or
a seam shows against the ground truth.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import _tiny
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from autoseg import SemanticSegmentor
from autoseg.cli import main
from autoseg.config import DataConfig
from autoseg.data.dataset import SegmentationDataset
from autoseg.data.io import read_image
from autoseg.data.synthetic import make_synthetic_binary
from autoseg.data.transforms import RandomCrop
from autoseg.errors import SettingsError
from autoseg.inference import iter_probabilities
from autoseg.labels.masks import binary_target
from autoseg.models.normalization import (
    SAM_PIXEL_MEAN,
    SAM_PIXEL_STD,
    MeanStdNormalization,
    MinMaxNormalization,
)
from autoseg.models.segmenter import build_segmenter
from autoseg.preset_choice import resolve_config
from autoseg.runtime import Runtime
from autoseg.tiling import (
    TileSettings,
    accumulated_weights,
    axis_weights,
    tiled_probabilities,
    window_starts,
)

RUNTIME = Runtime("cpu", "32-true", num_threads=1)


class PixelModel(nn.Module):
    """Logit = a steep function of each pixel's normalised red value: a known local model."""

    def __init__(self, image_size: int = 128, normalize: nn.Module | None = None) -> None:
        super().__init__()
        self.image_size, self.num_classes = image_size, 1
        self.in_channels, self.bands = 3, None
        self.normalize = normalize or MeanStdNormalization(SAM_PIXEL_MEAN, SAM_PIXEL_STD)

    def forward(self, images: torch.Tensor, valid_hw: torch.Tensor | None = None) -> torch.Tensor:
        return 8.0 * self.normalize(images, valid_hw)[:, :1]


class RampModel(nn.Module):
    """Two classes whose logits ramp across the window: the output depends on the position."""

    image_size, num_classes, in_channels, bands = 64, 2, 3, None

    def forward(self, images: torch.Tensor, valid_hw: torch.Tensor | None = None) -> torch.Tensor:
        ramp = torch.linspace(-2.0, 2.0, self.image_size)
        logits = torch.stack([ramp[None, :].expand(64, 64), -ramp[:, None].expand(64, 64)])
        return logits.expand(len(images), -1, -1, -1).clone()


def stripes(size: int, seed: int = 0) -> np.ndarray:
    """(size, size) bool: a checkerboard of stripes 3..9 px wide, irregular along both axes."""
    rng = np.random.default_rng(seed)
    bands = [np.repeat(np.arange(size) % 2, rng.integers(3, 10, size))[:size] for _ in "yx"]
    return (bands[0][:, None] ^ bands[1][None, :]).astype(bool)


def iou(prediction: np.ndarray, truth: np.ndarray) -> float:
    return float((prediction & truth).sum() / max((prediction | truth).sum(), 1))


def test_tiling_keeps_thin_stripes_the_untiled_path_destroys(tmp_path: Path) -> None:
    truth = stripes(2048)
    image = np.repeat((truth * 255).astype(np.uint8)[:, :, None], 3, axis=2)
    Image.fromarray(image).save(tmp_path / "big.png")
    table = pd.DataFrame({"image": [str(tmp_path / "big.png")]})
    model = PixelModel(image_size=128)
    scores = {}
    for tile in (False, True):
        (prob,) = iter_probabilities(model, table, RUNTIME, tiling=TileSettings(tile))
        assert prob.shape == truth.shape and prob.dtype == np.float32
        scores[tile] = iou(prob >= 0.5, truth)
    assert scores[True] > 0.999, scores  # every window lands where it was cut from
    assert scores[False] < 0.6, scores


@pytest.mark.parametrize("shape", [(300, 200), (50, 90), (64, 64), (129, 65)])
def test_tiled_output_is_the_per_pixel_function_everywhere(shape: tuple[int, int]) -> None:
    """Smooth input, position-independent model: tiles agree, so the blend equals each."""
    height, width = shape
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    model = PixelModel(image_size=64)
    expected = torch.sigmoid(8.0 * (torch.from_numpy(image[:, :, 0]).float() - 123.675) / 58.395)
    prob = tiled_probabilities(model, image, RUNTIME, overlap=0.3, batch_size=3)
    assert prob.shape == shape
    np.testing.assert_allclose(prob, expected.numpy(), atol=1e-5)


@pytest.mark.parametrize("tile_size", [32, 100, 128])
def test_other_window_sizes_are_scaled_to_the_model_and_back(tile_size: int) -> None:
    """Windows of ``tile_size`` pixels are resized to the 64 px input and their output back."""
    rows, cols = np.mgrid[0:230, 0:170]
    red = 127.5 + 120 * np.sin(rows / 23.0) * np.cos(cols / 31.0)  # smooth: resizing is exact-ish
    image = np.repeat(red.astype(np.uint8)[:, :, None], 3, axis=2)
    prob = tiled_probabilities(PixelModel(image_size=64), image, RUNTIME, tile_size=tile_size)
    expected = torch.sigmoid(8.0 * (torch.from_numpy(image[:, :, 0]).float() - 123.675) / 58.395)
    assert prob.shape == (230, 170)
    assert np.abs(prob - expected.numpy()).mean() < 0.01
    assert np.abs(prob - expected.numpy()).max() < 0.3  # a 5 px shift: mean 0.08, max 0.95


def test_blend_is_continuous_across_window_borders() -> None:
    """The ramp model's windows disagree; blending hides their borders, stitching would not."""
    image = np.zeros((200, 230, 3), np.uint8)
    prob = tiled_probabilities(RampModel(), image, RUNTIME, overlap=0.25, batch_size=5)
    assert prob.shape == (2, 200, 230)
    np.testing.assert_allclose(prob.sum(axis=0), 1.0, atol=1e-5)
    # Smooth everywhere: the second difference stays small along both axes.
    for axis in (0, 1):
        assert np.abs(np.diff(prob[0], 2, axis=axis)).max() < 0.02
    # No spike where a window starts or ends: the step across each border is no larger
    # than the steps two pixels away on either side.
    for axis, length in ((0, 200), (1, 230)):
        steps = np.abs(np.diff(prob[0], axis=axis)).max(axis=1 - axis)
        starts = window_starts(length, 64, 0.25)
        for border in [s + 64 for s in starts[:-1]] + starts[1:]:
            beside = max(steps[border - 3], steps[border + 1])
            assert steps[border - 1] <= beside + 2e-3, (
                axis,
                border,
                steps[border - 4 : border + 3],
            )
    # The same windows stitched without blending have a second difference of about 0.5.
    stitched = np.zeros((230,))
    for start in window_starts(230, 64, 0.25):
        stitched[start : start + 64] = torch.sigmoid(torch.linspace(-2, 2, 64)).numpy()
    assert np.abs(np.diff(stitched, 2)).max() > 0.3


def test_window_weights_sum_to_the_normaliser() -> None:
    for length, window, overlap in [(500, 64, 0.25), (64, 64, 0.5), (40, 64, 0.0), (130, 32, 0.9)]:
        starts = window_starts(length, window, overlap)
        extent = min(window, length)
        assert starts[0] == 0 and starts[-1] + extent == length
        gaps = np.diff(starts)
        assert (gaps <= extent * (1 - overlap) + 1).all()
        brute = np.zeros(length)
        for start in starts:
            brute[start : start + extent] += axis_weights(extent)
        np.testing.assert_allclose(accumulated_weights(length, window, overlap), brute, rtol=1e-6)
        assert brute.min() > 0
    constant = PixelModel(image_size=32)
    image = np.full((150, 170, 3), 200, np.uint8)  # every window gives the same probability
    prob = tiled_probabilities(constant, image, RUNTIME, overlap=0.5)
    np.testing.assert_allclose(prob, prob[0, 0], rtol=1e-6)


def test_min_max_models_see_the_whole_image_range() -> None:
    """Per-window min-max would stretch each window differently; the image's range is used."""
    rng = np.random.default_rng(1)
    image = rng.integers(40, 90, (150, 140, 3), dtype=np.uint8)
    image[:20, :20] = 250  # only the first window holds the bright corner
    model = PixelModel(image_size=64, normalize=MinMaxNormalization())
    prob = tiled_probabilities(model, image, RUNTIME)
    low, high = image.min(), image.max()
    expected = torch.sigmoid(8.0 * (torch.from_numpy(image[:, :, 0]).float() - low) / (high - low))
    np.testing.assert_allclose(prob, expected.numpy(), atol=1e-5)


@pytest.mark.parametrize("backbone", ["vit_tiny", "lite_tiny"])
def test_one_window_equals_the_untiled_path(tmp_path: Path, backbone: str) -> None:
    torch.manual_seed(0)
    model, _ = build_segmenter(backbone, num_classes=3)
    image = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "a.png")
    (untiled,) = iter_probabilities(
        model.eval(), pd.DataFrame({"image": [str(tmp_path / "a.png")]}), RUNTIME
    )
    tiled = tiled_probabilities(model, image, RUNTIME)
    assert tiled.shape == (3, 64, 64)
    np.testing.assert_allclose(tiled, untiled, atol=1e-5)


def test_multispectral_min_max_model_matches_the_untiled_path(tmp_path: Path) -> None:
    """Four bands through a (perturbed) band projection, then per-image min-max."""
    tifffile = pytest.importorskip("tifffile")
    torch.manual_seed(0)
    model, _ = build_segmenter("lite_tiny", num_classes=1, in_channels=4)
    with torch.no_grad():
        for parameter in model.band_projection.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    image = np.random.default_rng(4).integers(0, 256, (64, 64, 4), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "four.tif", image)
    table = pd.DataFrame({"image": [str(tmp_path / "four.tif")]})
    (untiled,) = iter_probabilities(model.eval(), table, RUNTIME)
    (tiled,) = iter_probabilities(model, table, RUNTIME, tiling=TileSettings(True))
    np.testing.assert_allclose(tiled, untiled, atol=1e-5)


def _extra_bytes(side: int) -> int:
    """Peak numpy/Python allocation of a tiled prediction beyond its (H, W) float32 output."""
    image = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    model = PixelModel(image_size=64)
    tiled_probabilities(model, image[:64, :64], RUNTIME)  # warm up lazy imports and caches
    tracemalloc.start()
    try:
        prob = tiled_probabilities(model, image, RUNTIME, batch_size=4)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - prob.nbytes


def test_memory_does_not_grow_with_the_image_area() -> None:
    small, large = _extra_bytes(256), _extra_bytes(1024)  # 16x the pixels
    batch = 4 * 3 * 64 * 64 * 4  # one batch of float32 windows
    assert large < batch + (64 << 10), (small, large)
    # Growth: O(H + W) vectors only; one (H, W) uint8 buffer of the large image is 1 MiB.
    assert large - small < 64 << 10, (small, large)


# ------------------------------------------------------------------- facade and CLI
@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> SemanticSegmentor:
    """A tiny model trained one epoch on native-scale 48-px crops."""
    folder = tmp_path_factory.mktemp("data")
    train_csv, _ = make_synthetic_binary(folder, n_images=8, size=(96, 128), split_test=2)
    settings = {**_tiny.TINY, "data.crop_size": 48}
    path = tmp_path_factory.mktemp("models") / "seg"
    return SemanticSegmentor(
        presets="cpu_lite", hyperparameters=settings, path=path, verbosity=0
    ).fit(train_csv)


@pytest.fixture
def big_image(tmp_path: Path) -> Path:
    path = tmp_path / "big.png"
    image = np.random.default_rng(3).integers(0, 256, (150, 200, 3), dtype=np.uint8)
    Image.fromarray(image).save(path)
    return path


def test_predict_and_evaluate_tiled(
    fitted: SemanticSegmentor, big_image: Path, tmp_path: Path
) -> None:
    assert fitted.config_.data.crop_size == 48
    (prob,) = fitted.predict_proba([str(big_image)], tile=True, overlap=0.5)
    direct = tiled_probabilities(
        fitted.model_, read_image(big_image), fitted._runtime(), overlap=0.5
    )
    np.testing.assert_allclose(prob, direct, atol=1e-6)
    (mask,) = fitted.predict(str(big_image), tile=True, tile_size=32)
    assert mask.shape == (150, 200) and set(np.unique(mask)) <= {0, 1}
    mask_img = (mask * 255).astype(np.uint8)
    Image.fromarray(mask_img).save(tmp_path / "mask.png")
    csv = tmp_path / "eval.csv"
    pd.DataFrame({"image": [str(big_image)], "label": [str(tmp_path / "mask.png")]}).to_csv(csv)
    scores = fitted.evaluate(csv, metrics=["iou"], tile=True, tile_size=32)
    assert scores["iou"] == pytest.approx(1.0)


def test_auto_tiles_large_images_and_says_so_once(
    fitted: SemanticSegmentor, big_image: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(small)
    fitted.verbosity = 1
    try:
        probs = fitted.predict_proba([str(small), str(big_image), str(big_image)], tile="auto")
    finally:
        fitted.verbosity = 0
    said = capsys.readouterr().out
    assert said.count('tile="auto"') == 1 and "2 of 3 image(s)" in said, said
    untiled = fitted.predict_proba([str(small)])[0]
    tiled = fitted.predict_proba([str(big_image)], tile=True)[0]
    np.testing.assert_allclose(probs[0], untiled, atol=1e-6)
    np.testing.assert_allclose(probs[1], tiled, atol=1e-6)
    assert [p.shape for p in probs] == [(40, 60), (150, 200), (150, 200)]


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"tile": "yes"}, "tile must be False, True or"),
        ({"tile": 1}, "tile must be False, True or"),
        ({"tile": True, "tile_size": 8}, "tile_size must be an integer >= 16"),
        ({"tile": True, "tile_size": 64.0}, "tile_size must be an integer"),
        ({"tile": True, "overlap": 1.0}, "overlap must be a number with 0 <= overlap <= 0.9"),
        ({"tile": True, "overlap": -0.1}, "overlap must be"),
        ({"tile": True, "overlap": True}, "overlap must be"),
    ],
)
def test_bad_tiling_arguments_are_refused_before_reading(fitted, options, match) -> None:
    for call in (fitted.predict, fitted.predict_proba):
        with pytest.raises(SettingsError, match=match):
            call("/nonexistent/image.png", **options)
    with pytest.raises(SettingsError, match=match):
        fitted.evaluate("/nonexistent/table.csv", **options)


def test_cli_tile_options(
    fitted: SemanticSegmentor, big_image: Path, tmp_path: Path, capsys
) -> None:
    model = str(fitted.path_)
    base = ["-v", "0", "predict", "--model", model, "--input", str(big_image)]
    assert main([*base, "--out", str(tmp_path / "a"), "--tile", "on", "--overlap", "1.5"]) == 2
    assert "--overlap must be a number" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "a"), "--tile-size", "4", "--tile", "on"]) == 2
    assert "--tile-size must be an integer >= 16" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "b"), "--tile", "auto"]) == 0
    written = np.array(Image.open(tmp_path / "b" / "big.png")) // 255
    expected = fitted.predict(str(big_image), tile="auto")[0]
    np.testing.assert_array_equal(written, expected)


# ------------------------------------------------------------------- training crops
def test_random_crops_are_native_scale_and_padded(tmp_path: Path) -> None:
    csv, _ = make_synthetic_binary(tmp_path, n_images=3, size=(100, 40), split_test=1)
    table = pd.read_csv(csv)
    table = table.assign(image=[str(tmp_path / p) for p in table["image"]])
    table = table.assign(label=[str(tmp_path / p) for p in table["label"]])
    crop = RandomCrop(32, 64, seed=0)
    item = SegmentationDataset(table, 64, target_fn=binary_target, crop=crop)[0]
    assert item["image"].shape == (3, 64, 64) and item["resized_hw"].tolist() == [64, 64]
    crop = RandomCrop(64, 64, seed=0)
    item = SegmentationDataset(table, 64, target_fn=binary_target, crop=crop)[0]
    assert item["resized_hw"].tolist() == [64, 40]  # the 40-px side is padded, not stretched
    assert (item["mask"][:, 40:] == 255).all() and (item["image"][:, :, 40:] == 0).all()
    # The crop is cut out of the full-resolution image: its pixels are found there verbatim.
    full = read_image(table["image"][0])
    window = item["image"][:, :64, :40].permute(1, 2, 0).numpy().astype(np.uint8)
    assert any(np.array_equal(full[top : top + 64, :40], window) for top in range(37))


def test_crop_size_reaches_training_and_is_checked(tmp_path: Path) -> None:
    from autoseg.data.datamodule import LoaderSettings, SegmentationDataModule
    from autoseg.data.prepare import prepare_training_data

    csv, _ = make_synthetic_binary(tmp_path, n_images=8, size=(96, 128), split_test=1)
    train, val, problem = prepare_training_data(csv)
    data = DataConfig(image_size=64, crop_size=32)
    dm = SegmentationDataModule(train, val, problem, data, LoaderSettings())
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["resized_hw"].tolist() == [[64, 64], [64, 64]]
    assert next(iter(dm.val_dataloader()))["resized_hw"][0].tolist() == [48, 64]  # whole image
    with pytest.raises(SettingsError, match="data.crop_size.*>= 16"):
        resolve_config("cpu_lite", {"data.crop_size": 8})
    with pytest.raises(SettingsError, match="data.crop_size"):
        resolve_config("cpu_lite", {"data.crop_size": "big"})


def test_benchmark_writes_iou_and_memory(tmp_path: Path) -> None:
    import json
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import bench_tiling

    args = ["--size", "512", "--memory-sizes", "128", "256", "--threads", "1", "--no-isolate"]
    path = bench_tiling.main([*args, "--out", str(tmp_path)])
    result = json.loads(path.read_text())
    (pixel,) = result["accuracy"]
    assert pixel["tiled"]["iou"] == 1.0 and pixel["untiled"]["iou"] < 0.99
    assert [m["side"] for m in result["memory"]] == [128, 256]
    assert all(m["numpy_peak_beyond_output_bytes"] < (256 << 10) for m in result["memory"])
