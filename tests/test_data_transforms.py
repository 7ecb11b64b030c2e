from __future__ import annotations

import numpy as np
import pytest
import torch

from autoseg.data import (
    RandomFlipRotate,
    ResizeInfo,
    image_to_tensor,
    pad_tensor,
    pad_to_square,
    resize_longest_side,
    resize_mask,
    restore_logits,
)

SIZE = 64


@pytest.mark.parametrize("hw", [(30, 50), (50, 30), (40, 40), (3, 2), (1, 1), (1, 200), (200, 64)])
def test_resize_pad_restore_round_trip_shapes(hw: tuple[int, int]) -> None:
    image = np.random.default_rng(0).integers(0, 256, (*hw, 3), dtype=np.uint8)
    resized, info = resize_longest_side(image, SIZE)
    assert resized.dtype == np.uint8
    assert max(resized.shape[:2]) == SIZE
    assert info == ResizeInfo(original_hw=hw, resized_hw=resized.shape[:2], size=SIZE)
    padded = pad_to_square(resized, SIZE, 0)
    assert padded.shape == (SIZE, SIZE, 3)
    logits = torch.randn(2, SIZE, SIZE)
    assert restore_logits(logits, info).shape == (2, *hw)
    assert restore_logits(logits[None], info).shape == (2, *hw)


def test_sam_rounding_of_the_short_side() -> None:
    _, info = resize_longest_side(np.zeros((480, 640, 3), np.uint8), 1024)
    assert info.resized_hw == (768, 1024)
    _, info = resize_longest_side(np.zeros((333, 500, 3), np.uint8), 1024)
    assert info.resized_hw == (int(333 * 1024 / 500 + 0.5), 1024)


def test_step_map_survives_upsample_and_restore() -> None:
    hw = (37, 53)
    step = np.zeros(hw, np.uint8)
    step[:, : hw[1] // 2] = 1
    resized, info = resize_longest_side(np.zeros((*hw, 3), np.uint8), SIZE)
    model_out = pad_to_square(resize_mask(step, info), SIZE, 0).astype(np.float32)
    restored = restore_logits(torch.from_numpy(model_out)[None], info)[0].numpy()
    assert restored.shape == hw
    wrong = (restored > 0.5) != step.astype(bool)
    assert wrong[:, : hw[1] // 2 - 1].sum() == 0 and wrong[:, hw[1] // 2 + 1 :].sum() == 0
    constant = restore_logits(torch.full((1, SIZE, SIZE), 3.0), info)
    assert torch.allclose(constant, torch.tensor(3.0))


def test_low_resolution_logits_are_upsampled_first() -> None:
    _, info = resize_longest_side(np.zeros((48, 64, 3), np.uint8), SIZE)
    low = torch.zeros(1, SIZE // 4, SIZE // 4)
    low[..., : SIZE // 8] = 5.0
    restored = restore_logits(low, info)
    assert restored.shape == (1, 48, 64)
    assert restored[0, :, :20].min() > 4 and restored[0, :, 44:].max() < 1


def test_restore_logits_rejects_batches() -> None:
    info = ResizeInfo((10, 10), (SIZE, SIZE), SIZE)
    with pytest.raises(ValueError):
        restore_logits(torch.zeros(2, 1, SIZE, SIZE), info)


def test_resize_mask_is_nearest_and_checks_size() -> None:
    mask = np.array([[0, 3], [7, 255]], np.uint8)
    _, info = resize_longest_side(np.zeros((2, 2, 3), np.uint8), 8)
    big = resize_mask(mask, info)
    assert big.shape == (8, 8) and set(np.unique(big)) == {0, 3, 7, 255}
    assert (big[:4, :4] == 0).all() and (big[4:, 4:] == 255).all()
    with pytest.raises(ValueError, match="differs"):
        resize_mask(np.zeros((3, 2), np.uint8), info)


def test_pad_to_square_bottom_right() -> None:
    padded = pad_to_square(np.ones((2, 3), np.uint8), 4, 255)
    assert padded.tolist() == [[1, 1, 1, 255], [1, 1, 1, 255], [255] * 4, [255] * 4]
    assert pad_to_square(np.ones((2, 3, 3)), 4, 0).shape == (4, 4, 3)
    with pytest.raises(ValueError):
        pad_to_square(np.ones((5, 3)), 4, 0)
    assert pad_tensor(torch.ones(3, 2, 3), 4)[:, 2:, :].abs().sum() == 0


def test_image_to_tensor_keeps_pixel_values_channels_first() -> None:
    image = np.zeros((2, 3, 3), np.uint8)
    image[0, 1] = (123, 116, 255)
    tensor = image_to_tensor(image[:, ::-1])  # a non-contiguous view is fine
    assert tensor.shape == (3, 2, 3) and tensor.dtype == torch.float32
    assert tensor[:, 0, 1].tolist() == [123.0, 116.0, 255.0]
    assert tensor.sum().item() == 123 + 116 + 255


@pytest.mark.parametrize("seed", range(6))
def test_augmentation_keeps_image_and_mask_aligned(seed: int) -> None:
    rng = np.random.default_rng(seed)
    mask = rng.integers(0, 3, (5, 7)).astype(np.uint8)
    image = np.stack([mask * 10, mask * 20, mask * 30], axis=-1)
    aug = RandomFlipRotate(hflip=True, vflip=True, rot90=True, seed=seed)
    out_image, out_mask = aug(image, mask)
    assert out_image.shape[:2] == out_mask.shape
    np.testing.assert_array_equal(out_image[..., 1], out_mask * 20)
    assert out_image.flags.c_contiguous and out_mask.flags.c_contiguous


def test_augmentation_is_seeded_and_varies() -> None:
    image = np.arange(12, dtype=np.uint8).reshape(3, 4, 1)
    results = [RandomFlipRotate(seed=3)(image)[0].tobytes() for _ in range(2)]
    assert results[0] == results[1]
    aug = RandomFlipRotate(hflip=True, seed=0)
    outcomes = {aug(image)[0].tobytes() for _ in range(20)}
    assert len(outcomes) == 2
    assert RandomFlipRotate(hflip=True, p=0.0)(image)[1] is None
