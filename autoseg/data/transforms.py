"""SAM's input geometry: resize the longest side, pad to a square, and back.

Forward (images and masks): :func:`resize_longest_side` / :func:`resize_mask`, then
:func:`image_to_tensor` and :func:`pad_tensor` / :func:`pad_to_square` (bottom/right).
The model normalises the pixel values itself (``autoseg.models.normalization``). Backward
(model outputs at the padded resolution): :func:`restore_logits`. Training crops at native
resolution (``data.crop_size``): :class:`RandomCrop`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import get_worker_info


@dataclass(frozen=True)
class ResizeInfo:
    """Geometry needed to map a model output back onto the original image.

    Attributes:
        original_hw: ``(H, W)`` of the image as read from disk.
        resized_hw: ``(h, w)`` after resizing the longest side to ``size``.
        size: Side of the padded square the model sees.

    Example:
        >>> _, info = resize_longest_side(np.zeros((300, 600, 3), np.uint8), 1024)
        >>> info
        ResizeInfo(original_hw=(300, 600), resized_hw=(512, 1024), size=1024)

    """

    original_hw: tuple[int, int]
    resized_hw: tuple[int, int]
    size: int


def longest_side_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """Return the ``(h, w)`` that SAM resizes an ``(height, width)`` image to.

    Args:
        height: Original height.
        width: Original width.
        size: Target length of the longest side.

    Returns:
        ``(h, w)``, rounded like SAM's ``ResizeLongestSide`` and at least 1 pixel each.

    """
    scale = size / max(height, width)
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


def resize_longest_side(image: np.ndarray, size: int) -> tuple[np.ndarray, ResizeInfo]:
    """Resize an image so that its longest side is ``size``, keeping the aspect ratio.

    Uses PIL's bilinear filter (antialiased when shrinking), as SAM's own preprocessing does.

    Args:
        image: ``(H, W, 3)`` uint8 image.
        size: Target length of the longest side.

    Returns:
        The resized uint8 image and the :class:`ResizeInfo` describing the change.

    """
    height, width = image.shape[:2]
    new_h, new_w = longest_side_shape(height, width, size)
    info = ResizeInfo(original_hw=(height, width), resized_hw=(new_h, new_w), size=size)
    if (new_h, new_w) == (height, width):
        return image.copy(), info
    resized = Image.fromarray(image).resize((new_w, new_h), Image.Resampling.BILINEAR)
    return np.array(resized), info  # a copy: arrays viewing PIL's buffer are read-only


def resize_mask(mask: np.ndarray, info: ResizeInfo) -> np.ndarray:
    """Resize a mask to ``info.resized_hw`` with nearest-neighbour sampling.

    Each output pixel takes the value under its centre, so no new values appear.

    Args:
        mask: ``(H, W)`` mask with ``(H, W) == info.original_hw`` (any dtype).
        info: Geometry from :func:`resize_longest_side` on the matching image.

    Returns:
        ``(h, w)`` mask of the same dtype.

    Raises:
        ValueError: The mask is not the size of the image it belongs to.

    """
    if tuple(mask.shape[:2]) != tuple(info.original_hw):
        raise ValueError(
            f"mask size {mask.shape[:2]} differs from its image size {info.original_hw}"
        )
    (height, width), (new_h, new_w) = info.original_hw, info.resized_hw
    rows = ((np.arange(new_h) + 0.5) * (height / new_h)).astype(np.int64)
    cols = ((np.arange(new_w) + 0.5) * (width / new_w)).astype(np.int64)
    return mask[np.minimum(rows, height - 1)[:, None], np.minimum(cols, width - 1)[None, :]]


def pad_to_square(array: np.ndarray, size: int, value: float) -> np.ndarray:
    """Pad an ``(H, W)`` or ``(H, W, C)`` array at the bottom and right to ``size x size``.

    Args:
        array: Array with ``H, W <= size``.
        size: Side of the output square.
        value: Fill value for the padding.

    Returns:
        ``(size, size)`` or ``(size, size, C)`` array of the same dtype.

    Raises:
        ValueError: The array is larger than ``size`` along a side.

    """
    height, width = array.shape[:2]
    if height > size or width > size:
        raise ValueError(f"cannot pad an array of shape {array.shape} to {size}x{size}")
    pad = [(0, size - height), (0, size - width)] + [(0, 0)] * (array.ndim - 2)
    return np.pad(array, pad, mode="constant", constant_values=value)


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """Convert an ``(H, W, 3)`` uint8 image to a ``(3, H, W)`` float32 tensor of 0..255 values.

    Example:
        >>> image_to_tensor(np.full((2, 4, 3), 7, np.uint8)).shape
        torch.Size([3, 2, 4])

    """
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()


def pad_tensor(tensor: torch.Tensor, size: int, value: float = 0.0) -> torch.Tensor:
    """Pad the last two dimensions of a tensor at the bottom and right to ``size x size``.

    Args:
        tensor: Tensor of shape ``(..., H, W)`` with ``H, W <= size``.
        size: Side of the output square.
        value: Fill value.

    Returns:
        Tensor of shape ``(..., size, size)``.

    """
    height, width = tensor.shape[-2:]
    if height > size or width > size:
        raise ValueError(f"cannot pad a tensor of shape {tuple(tensor.shape)} to {size}x{size}")
    return F.pad(tensor, (0, size - width, 0, size - height), value=value)


def restore_logits(logits: torch.Tensor, info: ResizeInfo) -> torch.Tensor:
    """Map model outputs for a padded square input back to the original image size.

    Outputs at a lower resolution than ``info.size`` (e.g. SAM's 256x256 low-res masks) are
    first upsampled to ``info.size``, as in SAM's ``postprocess_masks``. Then the padding is
    cropped off and the rest is resized bilinearly (``align_corners=False``) to
    ``info.original_hw``.

    Args:
        logits: ``(C, S, S)`` or ``(1, C, S, S)`` tensor.
        info: Geometry of the input image.

    Returns:
        ``(C, H, W)`` tensor with ``(H, W) == info.original_hw``.

    Raises:
        ValueError: Unsupported shape (a batch of more than one item, non-square maps).

    """
    if logits.ndim == 4 and logits.shape[0] == 1:
        logits = logits[0]
    if logits.ndim != 3 or logits.shape[-1] != logits.shape[-2]:
        raise ValueError(
            f"expected logits of shape (C, S, S) or (1, C, S, S), got {tuple(logits.shape)}"
        )
    batch = logits[None]
    if batch.shape[-1] != info.size:
        batch = F.interpolate(
            batch, size=(info.size, info.size), mode="bilinear", align_corners=False
        )
    new_h, new_w = info.resized_hw
    batch = batch[..., :new_h, :new_w]
    if (new_h, new_w) != tuple(info.original_hw):
        batch = F.interpolate(
            batch, size=tuple(info.original_hw), mode="bilinear", align_corners=False
        )
    return batch[0]


def scaled_window_info(height: int, width: int, window: int, size: int) -> ResizeInfo:
    """Geometry of a ``(height, width)`` crop of a ``window``-pixel window at scale size/window.

    The tiled prediction (:mod:`autoseg.tiling`) and the training crops
    (:class:`RandomCrop`) both cut windows of ``window`` pixels out of an image at its
    native resolution and scale them by ``size / window`` (1 by default), so a window of
    the full side fills the ``size`` input and a smaller one (at the image's border) keeps
    the same scale and is padded.

    Example:
        >>> scaled_window_info(40, 64, 64, 64)
        ResizeInfo(original_hw=(40, 64), resized_hw=(40, 64), size=64)
        >>> scaled_window_info(128, 100, 128, 64).resized_hw
        (64, 50)

    """
    scale = size / window
    new_h = min(size, max(1, int(height * scale + 0.5)))
    new_w = min(size, max(1, int(width * scale + 0.5)))
    return ResizeInfo(original_hw=(height, width), resized_hw=(new_h, new_w), size=size)


def resize_image(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Resize an ``(H, W, C)`` image to ``hw`` with PIL's bilinear filter (as SAM does).

    Any channel count: three-channel uint8 images are resized as RGB, like
    :func:`resize_longest_side`; others channel by channel (PIL's 4-channel mode would
    treat the last channel as alpha).

    Example:
        >>> resize_image(np.zeros((8, 6, 5), np.uint8), (4, 3)).shape
        (4, 3, 5)

    """
    height, width = image.shape[:2]
    if (height, width) == tuple(hw):
        return image.copy()
    size = (int(hw[1]), int(hw[0]))
    if image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8:
        return np.array(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
    planes = image[:, :, None] if image.ndim == 2 else image
    resized = [
        np.asarray(Image.fromarray(np.ascontiguousarray(planes[:, :, c])).resize(size, 2))
        for c in range(planes.shape[2])
    ]
    return np.stack(resized, axis=2).reshape(*hw, *image.shape[2:])


class _WorkerSeeded:
    """A random transform whose generator is re-seeded once per ``DataLoader`` worker."""

    def __init__(self, seed: int | None) -> None:
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._worker_seed: int | None = None

    def _generator(self) -> np.random.Generator:
        worker = get_worker_info()
        if worker is not None and worker.seed != self._worker_seed:
            self._worker_seed = worker.seed
            self._rng = np.random.default_rng(worker.seed)
        return self._rng


class RandomCrop(_WorkerSeeded):
    """A random ``crop_size`` square at the image's native resolution, scaled for the model.

    Training at the scale of tiled prediction: each call cuts a random window of
    ``crop_size`` pixels (the whole side where the image is smaller, which is then padded
    like the prediction windows at an image's border) and scales it by
    ``image_size / crop_size``. The mask is cropped alongside and resized by nearest
    neighbour. Random numbers as in :class:`RandomFlipRotate`.

    Args:
        crop_size: Side of the window in image pixels (``data.crop_size``).
        image_size: Side of the model input.
        seed: Seed for the main-process generator.

    Example:
        >>> crop = RandomCrop(32, 64, seed=0)
        >>> image, mask, info = crop(np.zeros((100, 20, 3), np.uint8), np.zeros((100, 20)))
        >>> image.shape, mask.shape, info.resized_hw
        ((64, 40, 3), (64, 40), (64, 40))

    """

    def __init__(self, crop_size: int, image_size: int, seed: int | None = None) -> None:
        super().__init__(seed)
        if isinstance(crop_size, bool) or not isinstance(crop_size, int) or crop_size < 1:
            raise ValueError(f"crop_size must be a positive integer, got {crop_size!r}")
        self.crop_size, self.image_size = crop_size, int(image_size)

    def __repr__(self) -> str:
        return f"RandomCrop({self.crop_size}, {self.image_size}, seed={self.seed})"

    def __call__(
        self,
        image: np.ndarray,
        mask: np.ndarray | None = None,
        rng: np.random.Generator | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None, ResizeInfo]:
        """Crop ``image`` (H, W, C) and ``mask`` (H, W) alike; return them scaled and how."""
        rng = rng if rng is not None else self._generator()
        height, width = image.shape[:2]
        crop_h, crop_w = min(self.crop_size, height), min(self.crop_size, width)
        top = int(rng.integers(0, height - crop_h + 1))
        left = int(rng.integers(0, width - crop_w + 1))
        rows, cols = slice(top, top + crop_h), slice(left, left + crop_w)
        info = scaled_window_info(crop_h, crop_w, self.crop_size, self.image_size)
        cropped = resize_image(image[rows, cols], info.resized_hw)
        if mask is not None:
            mask = resize_mask(np.ascontiguousarray(mask[rows, cols]), info)
        return cropped, mask, info


class RandomFlipRotate(_WorkerSeeded):
    """Random flips and 90-degree rotations applied jointly to an image and its mask.

    Each enabled transform is applied with probability ``p``. Call it on the resized,
    not yet padded arrays so that padding stays at the bottom/right. Rotations swap
    height and width, which is fine before padding to a square.

    Random numbers: in the main process a generator seeded with ``seed`` is used. Inside
    a ``DataLoader`` worker the generator is re-seeded once per worker and epoch from
    torch's worker seed, so workers draw different flips and runs are reproducible under
    ``torch.manual_seed`` / ``lightning.seed_everything``. A generator passed to
    :meth:`__call__` overrides both.

    Args:
        hflip: Flip left-right.
        vflip: Flip up-down.
        rot90: Rotate by a random multiple of 90 degrees.
        p: Probability of each flip, and of rotating at all.
        seed: Seed for the main-process generator.

    Example:
        >>> aug = RandomFlipRotate(hflip=True, vflip=True, seed=0)
        >>> image, mask = aug(np.zeros((4, 6, 3), np.uint8), np.zeros((4, 6), np.uint8))

    """

    def __init__(
        self,
        hflip: bool = True,
        vflip: bool = False,
        rot90: bool = False,
        p: float = 0.5,
        seed: int | None = None,
    ) -> None:
        super().__init__(seed)
        self.hflip, self.vflip, self.rot90, self.p = hflip, vflip, rot90, p

    def __repr__(self) -> str:
        return (
            f"RandomFlipRotate(hflip={self.hflip}, vflip={self.vflip}, rot90={self.rot90}, "
            f"p={self.p}, seed={self.seed})"
        )

    def __call__(
        self,
        image: np.ndarray,
        mask: np.ndarray | None = None,
        rng: np.random.Generator | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Apply the same random transform to ``image`` (H, W, C) and ``mask`` (H, W).

        Returns:
            The transformed (contiguous) image and mask; ``mask`` stays None if not given.

        """
        rng = rng if rng is not None else self._generator()
        arrays = [image] if mask is None else [image, mask]
        if self.hflip and rng.random() < self.p:
            arrays = [a[:, ::-1] for a in arrays]
        if self.vflip and rng.random() < self.p:
            arrays = [a[::-1] for a in arrays]
        if self.rot90 and rng.random() < self.p:
            turns = int(rng.integers(1, 4))
            arrays = [np.rot90(a, turns, axes=(0, 1)) for a in arrays]
        arrays = [np.ascontiguousarray(a) for a in arrays]
        return arrays[0], (arrays[1] if mask is not None else None)


def to_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Sigmoid of one output map (binary), softmax over the class axis (``-3``) otherwise.

    Example:
        >>> to_probabilities(torch.zeros(2, 1, 4, 4)).unique().tolist()
        [0.5]

    """
    return torch.sigmoid(logits) if logits.shape[-3] == 1 else logits.softmax(dim=-3)


def restored_probabilities(logits: torch.Tensor, info: ResizeInfo) -> np.ndarray:
    """Probabilities at the original size from one image's ``(K, S, S)`` logits.

    Binary (K = 1): ``(H, W)``; multi-class: ``(K, H, W)``; float32. Logits are resized
    before the sigmoid/softmax, so borders stay smooth.
    """
    probabilities = to_probabilities(restore_logits(logits.float().cpu(), info))
    array = probabilities.numpy().astype(np.float32)
    return array[0] if array.shape[0] == 1 else array
