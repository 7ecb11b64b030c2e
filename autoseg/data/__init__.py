"""Data handling: reading files, checking tables, SAM-ready tensors (mask values: ``labels``)."""

from autoseg.data.dataset import SegmentationDataset
from autoseg.data.io import (
    IMAGE_EXTENSIONS,
    image_size,
    list_images,
    read_image,
    read_mask,
    scale_to_uint8,
)
from autoseg.data.synthetic import make_synthetic_binary
from autoseg.data.table import (
    DataValidationError,
    check_mask_values,
    check_with,
    load_table,
    validate_table,
)
from autoseg.data.transforms import (
    RandomFlipRotate,
    ResizeInfo,
    image_to_tensor,
    pad_tensor,
    pad_to_square,
    resize_longest_side,
    resize_mask,
    restore_logits,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "DataValidationError",
    "RandomFlipRotate",
    "ResizeInfo",
    "SegmentationDataset",
    "check_mask_values",
    "check_with",
    "image_size",
    "image_to_tensor",
    "list_images",
    "load_table",
    "make_synthetic_binary",
    "pad_tensor",
    "pad_to_square",
    "read_image",
    "read_mask",
    "resize_longest_side",
    "resize_mask",
    "restore_logits",
    "scale_to_uint8",
    "validate_table",
]
