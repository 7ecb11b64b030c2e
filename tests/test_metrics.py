"""Tests for autoseg.metrics against pysodmetrics, torchmetrics and hand-computed values.

Reference conventions used below:

* pysodmetrics is always fed the *same* float64 probabilities and bool mask as our functions,
  with ``normalize=False`` (its default ``normalize=True`` expects uint8 images, thresholds the
  mask at ``gt > 128`` and min-max rescales the prediction). One test also runs the default
  uint8 path on maps spanning 0..255, where that rescaling is the identity.
* pysodmetrics' ``WeightedFmeasure(beta=...)`` takes beta^2 directly, so ``beta=0.3``.
* The mean E-measure is ``Emeasure().get_results()["em"]["curve"].mean()`` (256 thresholds).
* torchmetrics binarises with ``pred > threshold`` while we use ``pred >= threshold``; the random
  maps never hit the threshold exactly, so the two agree.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import py_sod_metrics
import pytest
import torch
from PIL import Image
from scipy import ndimage
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex
from torchmetrics.functional.classification import (
    binary_f1_score,
    binary_jaccard_index,
    binary_recall,
    binary_specificity,
)

from autoseg.metrics import (
    BINARY_METRICS,
    HIGHER_IS_BETTER,
    BinaryMetricAccumulator,
    MulticlassMetricAccumulator,
    ber,
    dice,
    e_measure,
    iou,
    mae,
    s_measure,
    weighted_f_measure,
)

TOL = 1e-6
SHAPES = [(64, 64), (37, 91), (120, 45), (80, 80), (33, 57), (96, 128)]


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return (field - field.mean()) / (field.std() + 1e-12)


def _blob_pair(seed: int, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Smooth random blobs as gt and a noisy, blurred version of them as probabilities."""
    rng = np.random.default_rng(seed)
    gt = _smooth_field(rng, shape, 5.0) > rng.uniform(-0.5, 0.5)
    pred = ndimage.gaussian_filter(gt.astype(np.float64), 2.0)
    pred = np.clip(pred + 0.35 * _smooth_field(rng, shape, 2.0), 0.0, 1.0)
    return pred, gt


def _reference(pred: np.ndarray, gt: np.ndarray, normalize: bool = False) -> dict[str, float]:
    sm = py_sod_metrics.Smeasure(alpha=0.5)
    em = py_sod_metrics.Emeasure()
    wfm = py_sod_metrics.WeightedFmeasure(beta=0.3)
    for metric in (sm, em, wfm):
        metric.step(pred, gt, normalize=normalize)
    return {
        "sm": float(sm.get_results()["sm"]),
        "em": float(em.get_results()["em"]["curve"].mean()),
        "wfm": float(wfm.get_results()["wfm"]),
    }


def _ours(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    return {name: BINARY_METRICS[name](pred, gt) for name in ("sm", "em", "wfm")}


def _assert_matches_reference(pred: np.ndarray, gt: np.ndarray) -> None:
    ours, ref = _ours(pred, gt), _reference(pred, gt)
    for name in ref:
        assert ours[name] == pytest.approx(ref[name], abs=TOL), name


# --------------------------------------------------------------------------- sm / em / wfm


@pytest.mark.parametrize("seed", range(len(SHAPES)))
def test_structure_metrics_match_pysodmetrics_on_random_blobs(seed: int) -> None:
    pred, gt = _blob_pair(seed, SHAPES[seed])
    assert 0 < gt.mean() < 1
    _assert_matches_reference(pred, gt)
    # Maps already on the 1/255 grid exercise the E-measure's quantisation boundaries.
    _assert_matches_reference(np.round(pred * 255) / 255, gt)


def _edge_cases() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    pred, gt = _blob_pair(100, (48, 64))
    single = np.zeros((31, 31), dtype=bool)
    single[15, 15] = True
    stripe = np.tile(np.linspace(0, 1, 40), (30, 1))
    return {
        "gt_empty": (pred, np.zeros_like(gt)),
        "gt_full": (pred, np.ones_like(gt)),
        "pred_zero": (np.zeros_like(pred), gt),
        "pred_half": (np.full_like(pred, 0.5), gt),
        "pred_one": (np.ones_like(pred), gt),
        "perfect": (gt.astype(np.float64), gt),
        "empty_and_empty": (np.zeros_like(pred), np.zeros_like(gt)),
        "full_and_full": (np.ones_like(pred), np.ones_like(gt)),
        "single_pixel_gt": (ndimage.gaussian_filter(single.astype(float), 1.0) * 5, single),
        "ramp": (stripe, np.roll(stripe > 0.5, 3, axis=1)),
    }


@pytest.mark.parametrize("case", list(_edge_cases()))
def test_structure_metrics_match_pysodmetrics_on_edge_cases(case: str) -> None:
    pred, gt = _edge_cases()[case]
    pred = np.clip(pred, 0.0, 1.0)
    _assert_matches_reference(pred, gt)


def test_edge_case_values_follow_documented_conventions() -> None:
    pred, gt = _blob_pair(7, (40, 40))
    empty = np.zeros_like(gt)
    assert s_measure(pred, empty) == pytest.approx(1 - pred.mean())
    assert s_measure(pred, ~empty) == pytest.approx(pred.mean())
    assert weighted_f_measure(pred, empty) == 0.0
    assert e_measure(np.zeros_like(pred), empty) == pytest.approx(1.0, abs=1e-2)
    perfect = gt.astype(np.float64)
    assert s_measure(perfect, gt) == pytest.approx(1.0, abs=1e-6)
    assert weighted_f_measure(perfect, gt) == pytest.approx(1.0, abs=1e-6)
    assert e_measure(perfect, gt) == pytest.approx(1.0, abs=1e-2)


def test_s_measure_is_finite_when_centroid_lies_on_the_border() -> None:
    # Foreground only in the last column puts the quadrant split on the image edge, leaving two
    # quadrants empty; the reference returns NaN here, we give those quadrants zero weight.
    gt = np.zeros((20, 30), dtype=bool)
    gt[:, -1] = True
    pred = np.clip(gt + 0.1, 0, 1)
    value = s_measure(pred, gt)
    assert np.isfinite(value) and 0.0 <= value <= 1.0


def _ph2_pairs(shared_data: Path, count: int = 5) -> list[tuple[np.ndarray, np.ndarray]]:
    """Real PH2 masks (uint8 0/255) with a shifted, blurred copy as a synthetic prediction."""
    paths = sorted((shared_data / "ph2" / "masks").glob("*.png"))[::37][:count]
    if len(paths) < count:
        pytest.skip("not enough PH2 masks")
    pairs = []
    for index, path in enumerate(paths):
        gt_u8 = np.asarray(Image.open(path).convert("L"))
        shifted = np.roll(gt_u8 > 128, shift=(3 * index - 6, 5 - 2 * index), axis=(0, 1))
        blurred = ndimage.gaussian_filter(shifted.astype(np.float64), 4.0 + index)
        pred_u8 = np.round(255 * blurred / blurred.max()).astype(np.uint8)
        pred_u8[0, 0] = 0  # both extremes present, so pysodmetrics' min-max rescale is a no-op
        pairs.append((pred_u8, gt_u8))
    return pairs


def test_structure_metrics_match_pysodmetrics_on_ph2(shared_data: Path) -> None:
    for pred_u8, gt_u8 in _ph2_pairs(shared_data):
        pred, gt = pred_u8 / 255.0, gt_u8 > 128
        _assert_matches_reference(pred, gt)
        # pysodmetrics' default uint8 path sees the very same data.
        ref = _reference(pred_u8, gt_u8, normalize=True)
        ours = _ours(pred, gt)
        for name in ref:
            assert ours[name] == pytest.approx(ref[name], abs=TOL), name
        assert mae(pred, gt) == pytest.approx(np.abs(pred - gt).mean())


# --------------------------------------------------------------------------- iou / dice / ber


def _torch(pred: np.ndarray, gt: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(pred), torch.from_numpy(gt.astype(np.int64))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("threshold", [0.5, 0.3])
def test_iou_dice_ber_match_torchmetrics_on_random_maps(seed: int, threshold: float) -> None:
    pred, gt = _blob_pair(seed + 20, SHAPES[seed])
    p, t = _torch(pred, gt)
    assert iou(pred, gt, threshold) == pytest.approx(
        binary_jaccard_index(p, t, threshold=threshold).item(), abs=TOL
    )
    # Per image, Dice is the F1 score of the binarised map.
    assert dice(pred, gt, threshold) == pytest.approx(
        binary_f1_score(p, t, threshold=threshold).item(), abs=TOL
    )
    tpr = binary_recall(p, t, threshold=threshold).item()
    tnr = binary_specificity(p, t, threshold=threshold).item()
    assert ber(pred, gt, threshold) == pytest.approx(100 * (1 - 0.5 * (tpr + tnr)), abs=1e-4)


def test_iou_dice_match_torchmetrics_on_ph2(shared_data: Path) -> None:
    for pred_u8, gt_u8 in _ph2_pairs(shared_data):
        # Offset by half a level so no pixel sits exactly on the threshold (> vs >=).
        pred, gt = (pred_u8 + 0.5) / 256.0, gt_u8 > 128
        p, t = _torch(pred, gt)
        assert iou(pred, gt) == pytest.approx(binary_jaccard_index(p, t).item(), abs=TOL)
        assert dice(pred, gt) == pytest.approx(binary_f1_score(p, t).item(), abs=TOL)


def test_empty_mask_and_empty_prediction_is_perfect() -> None:
    pred, gt = np.zeros((8, 8)), np.zeros((8, 8), dtype=bool)
    p, t = _torch(pred, gt)
    # torchmetrics scores 0/0 as ``zero_division`` (default 0.0); we count it as a perfect 1.0,
    # which equals torchmetrics with zero_division=1.0.
    assert binary_jaccard_index(p, t).item() == 0.0
    assert iou(pred, gt) == 1.0 == binary_jaccard_index(p, t, zero_division=1.0).item()
    assert dice(pred, gt) == 1.0 == binary_f1_score(p, t, zero_division=1.0).item()
    assert ber(pred, gt) == 0.0
    assert mae(pred, gt) == 0.0
    # An empty mask with a non-empty prediction is a complete miss.
    pred[0, 0] = 0.9
    assert iou(pred, gt) == 0.0 and dice(pred, gt) == 0.0


def test_mae_ber_iou_dice_hand_computed() -> None:
    pred = np.array([[0.9, 0.2, 0.6], [0.1, 0.4, 0.7]])
    gt = np.array([[1, 0, 0], [0, 1, 1]], dtype=bool)
    # Errors 0.1, 0.2, 0.6, 0.1, 0.6, 0.3; binarised: TP=2, FP=1, FN=1, TN=2.
    assert mae(pred, gt) == pytest.approx(1.9 / 6)
    assert ber(pred, gt) == pytest.approx(100 * (1 - 0.5 * (2 / 3 + 2 / 3)))
    assert iou(pred, gt) == pytest.approx(2 / 4)
    assert dice(pred, gt) == pytest.approx(4 / 6)
    # At threshold 0.65 only 0.9 and 0.7 are foreground: TP=2, FP=0, FN=1, TN=3.
    assert ber(pred, gt, threshold=0.65) == pytest.approx(100 * (1 - 0.5 * (2 / 3 + 1)))
    # A pixel exactly at the threshold counts as foreground.
    assert iou(np.array([[0.5]]), np.array([[True]])) == 1.0


def test_ber_with_a_single_class_in_the_mask() -> None:
    pred = np.array([[0.9, 0.1], [0.2, 0.3]])
    # No positives: only the true-negative rate (3/4) is defined.
    assert ber(pred, np.zeros((2, 2), dtype=bool)) == pytest.approx(25.0)
    # No negatives: only the true-positive rate (1/4) is defined.
    assert ber(pred, np.ones((2, 2), dtype=bool)) == pytest.approx(75.0)
    assert ber(np.ones((2, 2)), np.ones((2, 2), dtype=bool)) == 0.0


@pytest.mark.parametrize(
    ("pred", "gt"),
    [
        (np.full((4, 4), 1.5), np.ones((4, 4), dtype=bool)),
        (np.full((4, 4), np.nan), np.ones((4, 4), dtype=bool)),
        (np.zeros((4, 4)), np.ones((4, 5), dtype=bool)),
        (np.zeros((2, 4, 4)), np.ones((2, 4, 4), dtype=bool)),
    ],
)
def test_invalid_inputs_are_rejected(pred: np.ndarray, gt: np.ndarray) -> None:
    for fn in BINARY_METRICS.values():
        with pytest.raises(ValueError):
            fn(pred, gt)


def test_gt_may_be_a_0_255_mask() -> None:
    pred, gt = _blob_pair(3, (32, 32))
    gt_u8 = gt.astype(np.uint8) * 255
    for fn in BINARY_METRICS.values():
        assert fn(pred, gt_u8) == fn(pred, gt)


# --------------------------------------------------------------------------- accumulator


def test_metric_tables_agree() -> None:
    assert list(BINARY_METRICS) == ["iou", "dice", "sm", "em", "wfm", "mae", "ber"]
    assert set(HIGHER_IS_BETTER) == set(BINARY_METRICS)
    assert [name for name, higher in HIGHER_IS_BETTER.items() if not higher] == ["mae", "ber"]


def test_binary_accumulator_averages_per_image_scores() -> None:
    pairs = [_blob_pair(seed, (40, 50)) for seed in range(3)]
    acc = BinaryMetricAccumulator()
    assert acc.metrics == tuple(BINARY_METRICS)
    for pred, gt in pairs:
        scores = acc.update(pred, gt)
        assert set(scores) == set(BINARY_METRICS)
    assert len(acc) == 3
    result = acc.compute()
    for name, fn in BINARY_METRICS.items():
        expected = np.mean([fn(pred, gt) for pred, gt in pairs])
        assert result[name] == pytest.approx(expected, abs=1e-12)


def test_binary_accumulator_subset_and_errors() -> None:
    acc = BinaryMetricAccumulator(["sm", "iou", "sm"])
    assert acc.metrics == ("sm", "iou")
    with pytest.raises(RuntimeError):
        acc.compute()
    acc.update(np.ones((4, 4)), np.ones((4, 4), dtype=bool))
    assert acc.compute() == {"sm": 1.0, "iou": 1.0}
    with pytest.raises(ValueError, match="valid names.*'iou'.*'ber'") as info:
        BinaryMetricAccumulator(["iou", "fmeasure"])
    assert "fmeasure" in str(info.value)
    with pytest.raises(ValueError):
        BinaryMetricAccumulator([])


# --------------------------------------------------------------------------- multiclass


def _torchmetrics_reference(
    pairs: list[tuple[np.ndarray, np.ndarray]], num_classes: int
) -> tuple[float, float, np.ndarray]:
    # average="macro" in torchmetrics 1.9 skips classes whose row and column of the dataset
    # confusion matrix are both empty (absent from gt and prediction) - exactly our mIoU - and
    # drops gt == ignore_index pixels. average="none" reports those absent classes as
    # zero_division (0.0) instead of our NaN, so per-class values are compared on present classes.
    miou = MulticlassJaccardIndex(num_classes, average="macro", ignore_index=255)
    per_class = MulticlassJaccardIndex(num_classes, average="none", ignore_index=255)
    acc = MulticlassAccuracy(num_classes, average="micro", ignore_index=255)
    for pred, gt in pairs:
        p, t = torch.from_numpy(pred.astype(np.int64)), torch.from_numpy(gt.astype(np.int64))
        for metric in (miou, per_class, acc):
            metric.update(p, t)
    return miou.compute().item(), acc.compute().item(), per_class.compute().numpy()


def _check_multiclass(
    pairs: list[tuple[np.ndarray, np.ndarray]], num_classes: int
) -> dict[str, float]:
    acc = MulticlassMetricAccumulator(num_classes, ignore_index=255)
    for pred, gt in pairs:
        acc.update(pred, gt)
    result = acc.compute()
    ref_miou, ref_acc, ref_per_class = _torchmetrics_reference(pairs, num_classes)
    assert result["miou"] == pytest.approx(ref_miou, abs=TOL)
    assert result["acc"] == pytest.approx(ref_acc, abs=TOL)
    ours = np.array([result[f"iou/{index}"] for index in range(num_classes)])
    present = ~np.isnan(ours)
    np.testing.assert_allclose(ours[present], ref_per_class[present], atol=TOL)
    assert np.all(ref_per_class[~present] == 0.0)
    return result


@pytest.mark.parametrize("seed", range(3))
def test_multiclass_matches_torchmetrics_on_random_maps(seed: int) -> None:
    rng = np.random.default_rng(seed)
    num_classes = 7
    pairs = []
    for _ in range(4):
        gt = rng.integers(0, 5, size=(30, 40))  # classes 5 and 6 never in gt...
        pred = np.where(rng.random(gt.shape) < 0.7, gt, rng.integers(0, 6, size=gt.shape))
        gt[rng.random(gt.shape) < 0.1] = 255  # ...class 5 only as a false positive, 6 nowhere
        pairs.append((pred, gt))
    values = _check_multiclass(pairs, num_classes)
    assert values["iou/5"] == 0.0 and np.isnan(values["iou/6"])


def test_multiclass_matches_torchmetrics_on_camvid(shared_data: Path) -> None:
    paths = sorted((shared_data / "camvid" / "masks").glob("*.png"))[::97][:4]
    if not paths:
        pytest.skip("no CamVid masks")
    rng = np.random.default_rng(0)
    pairs = []
    for path in paths:
        gt = np.asarray(Image.open(path)).astype(np.int64)
        # A plausible prediction: slightly misaligned labels, a few random errors, no void.
        pred = np.roll(gt, shift=(4, -3), axis=(0, 1))
        pred = np.where(rng.random(gt.shape) < 0.05, rng.integers(0, 11, size=gt.shape), pred)
        pred[pred == 255] = 0
        pairs.append((pred, gt))
    assert any((gt == 255).any() for _, gt in pairs)
    _check_multiclass(pairs, num_classes=11)


def test_multiclass_hand_computed_and_names() -> None:
    acc = MulticlassMetricAccumulator(num_classes=4)
    # The 3 predicted at the void pixel must not count; class 3 is otherwise absent.
    acc.update(np.array([[0, 1, 3], [1, 1, 0]]), np.array([[0, 1, 255], [1, 2, 0]]))
    result = acc.compute(class_names=["road", "car", "sky", "tree"])
    assert result["iou/road"] == 1.0
    assert result["iou/car"] == pytest.approx(2 / 3)
    assert result["iou/sky"] == 0.0
    assert np.isnan(result["iou/tree"])
    assert result["miou"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert result["acc"] == pytest.approx(4 / 5)
    assert acc.confusion_matrix.sum() == 5
    empty = MulticlassMetricAccumulator(num_classes=4).compute()
    assert np.isnan(empty["miou"]) and np.isnan(empty["acc"])


def test_multiclass_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        MulticlassMetricAccumulator(num_classes=3, ignore_index=1)
    acc = MulticlassMetricAccumulator(num_classes=3)
    with pytest.raises(ValueError):
        acc.update(np.array([[0, 3]]), np.array([[0, 1]]))
    with pytest.raises(ValueError):
        acc.update(np.array([[0, 1]]), np.array([[0, 7]]))
    with pytest.raises(ValueError):
        acc.update(np.array([[0.0, 1.0]]), np.array([[0, 1]]))
    with pytest.raises(ValueError):
        acc.update(np.zeros((2, 2), dtype=int), np.zeros((2, 3), dtype=int))
    with pytest.raises(ValueError):
        acc.compute(class_names=["a", "b"])
