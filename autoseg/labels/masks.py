"""Turning raw mask values into training targets.

Targets are ``(H, W)`` uint8 arrays of contiguous class ids ``0..K-1`` where 255 means
"ignore this pixel" (excluded from loss and metrics). Binary tasks use 0 = background and
1 = foreground.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from autoseg.errors import AutosegError

IGNORE_INDEX = 255
"""Target value for pixels that are excluded from the loss and the metrics."""

BINARY_VALUE_SETS: tuple[frozenset[int], ...] = (frozenset({0, 1}), frozenset({0, 255}))
"""The value sets a binary mask may hold: 0/1 (foreground 1) or 0/255 (foreground 255)."""


def is_binary_values(values: set[int] | frozenset[int]) -> bool:
    """Whether a mask's distinct values fit one of :data:`BINARY_VALUE_SETS`."""
    return any(values <= allowed for allowed in BINARY_VALUE_SETS)


_EXPECTED_BINARY = "binary masks must hold only 0 and 1, or only 0 and 255 (255 = foreground)"


class MaskFormatError(AutosegError, ValueError):
    """A mask's values or layout do not fit the expected format."""


def _format_values(values: Iterable[int], limit: int = 20) -> str:
    ordered = sorted(values)
    shown = ", ".join(str(v) for v in ordered[:limit])
    more = f", ... ({len(ordered)} distinct values)" if len(ordered) > limit else ""
    return "{" + shown + more + "}"


def as_single_channel(mask: np.ndarray) -> np.ndarray:
    """Return a 2-D view of a mask, collapsing RGB(A) masks whose color channels are equal.

    Args:
        mask: ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3|4)`` array; bool is turned into 0/1.

    Returns:
        ``(H, W)`` array.

    Raises:
        MaskFormatError: The mask is a real color mask (its channels differ) or has an
            unsupported number of dimensions.

    """
    if mask.dtype == np.bool_:
        mask = mask.astype(np.uint8)
    if mask.ndim == 3 and mask.shape[2] in (1, 3, 4):
        first = mask[:, :, 0]
        channels = mask.shape[2] if mask.shape[2] < 4 else 3  # alpha never carries labels
        for c in range(1, channels):
            if not np.array_equal(first, mask[:, :, c]):
                raise MaskFormatError(unmapped_colors_message(mask))
        mask = first
    if mask.ndim != 2:
        raise MaskFormatError(f"expected a 2-D mask (H, W), got an array of shape {mask.shape}")
    return mask


def pack_rgb(mask: np.ndarray) -> np.ndarray:
    """``(H, W)`` int32 codes ``r << 16 | g << 8 | b`` of an ``(H, W, 3|4)`` uint8 mask.

    One integer per pixel lets colors be found by sorted-array search and ``np.unique``
    (alpha is ignored). Raises ``MaskFormatError`` for anything but 8-bit color.
    """
    if mask.ndim != 3 or mask.shape[2] not in (3, 4) or mask.dtype != np.uint8:
        raise MaskFormatError(
            f"expected an 8-bit RGB color mask, got shape {mask.shape} and dtype {mask.dtype}"
        )
    rgb = mask[:, :, :3].astype(np.int32)
    return (rgb[:, :, 0] << 16) | (rgb[:, :, 1] << 8) | rgb[:, :, 2]


def unpack_rgb(code: int) -> tuple[int, int, int]:
    """Inverse of :func:`pack_rgb` for one code."""
    code = int(code)
    return (code >> 16) & 255, (code >> 8) & 255, code & 255


def format_colors(codes: Iterable[int], limit: int = 6) -> str:
    """``(r, g, b), (r, g, b) and N more`` for packed color codes, in sorted order."""
    ordered = sorted(int(c) for c in codes)
    shown = ", ".join(str(unpack_rgb(c)) for c in ordered[:limit])
    return shown + (f" and {len(ordered) - limit} more" if len(ordered) > limit else "")


def distinct_colors(mask: np.ndarray) -> list[int]:
    """Sorted packed codes of the distinct colors of a color mask (any integer dtype)."""
    if mask.dtype != np.uint8:
        # rare (16-bit color TIFFs): clip so every color still gets a code to report
        mask = np.clip(np.nan_to_num(mask[:, :, :3]), 0, 255).astype(np.uint8)
    return [int(c) for c in np.unique(pack_rgb(mask))]


def unmapped_colors_message(mask: np.ndarray) -> str:
    """Explain that a color mask needs ``class_colors``, naming the colors it holds."""
    codes = distinct_colors(mask)
    example = ", ".join(f"{unpack_rgb(c)}: 'name{i}'" for i, c in enumerate(codes[:3]))
    more = ", ..." if len(codes) > 3 else ""
    return (
        f"color mask: its color channels differ; it holds {len(codes)} colors: "
        f"{format_colors(codes)}. Pass class_colors={{{example}{more}}} (one entry per "
        "color, None for colors to ignore) to say which class each color is, or save "
        "masks as single-channel images of class ids (0..K-1, 255 = ignore)"
    )


def distinct_values(mask: np.ndarray) -> set[int]:
    """Return the set of distinct values in a mask (fast path for uint8 and bool).

    Args:
        mask: Integer, bool or integral float array of any shape.

    Returns:
        The distinct values as Python ints.

    Raises:
        MaskFormatError: A float mask holds non-integer values.

    """
    if mask.dtype == np.bool_:
        mask = mask.view(np.uint8)
    if mask.dtype == np.uint8:
        return {int(v) for v in np.flatnonzero(np.bincount(mask.ravel(), minlength=256))}
    values = np.unique(mask)
    if values.dtype.kind == "f":
        if not np.all(np.isfinite(values)) or not np.array_equal(values, np.round(values)):
            raise MaskFormatError(
                "mask holds non-integer values; masks must hold whole-number class ids"
            )
    return {int(v) for v in values}


def binary_target(mask: np.ndarray) -> np.ndarray:
    """Convert a raw binary mask to a 0/1 uint8 target.

    Rule: if the largest value is at most 1, foreground is 1; otherwise the values must be
    within {0, 255} and foreground is 255. Binary targets have no ignore pixels. RGB masks
    with equal channels count as grayscale.

    Args:
        mask: Raw mask as returned by :func:`autoseg.data.read_mask`.

    Returns:
        ``(H, W)`` uint8 array with 0 = background, 1 = foreground.

    Raises:
        MaskFormatError: The values fit neither rule; the message lists the values found.

    """
    mask = as_single_channel(mask)
    values = distinct_values(mask)
    ones, two_fifty_five = BINARY_VALUE_SETS
    if values <= ones:
        return mask.astype(np.uint8)
    if values <= two_fifty_five:
        return (mask == 255).astype(np.uint8)
    raise MaskFormatError(f"found values {_format_values(values)}; {_EXPECTED_BINARY}")


def encode_multiclass(mask: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """Map raw class values to contiguous ids ``0..K-1``, keeping 255 as ignore.

    Args:
        mask: Raw mask holding values from ``classes`` and possibly 255.
        classes: The raw class values, in id order (``classes[k]`` becomes id ``k``).

    Returns:
        ``(H, W)`` uint8 array of ids, 255 where the mask is 255.

    Raises:
        MaskFormatError: The mask holds values that are neither in ``classes`` nor 255; the
            message names them.
        ValueError: ``classes`` is empty, has duplicates, or holds values outside 0..254.

    Example:
        >>> encode_multiclass(np.array([[10, 20], [255, 10]], np.uint8), [10, 20])
        array([[  0,   1],
               [255,   0]], dtype=uint8)

    """
    class_list = [int(c) for c in classes]
    if not class_list or len(set(class_list)) != len(class_list):
        raise ValueError(f"classes must be a non-empty list without duplicates, got {classes}")
    if min(class_list) < 0 or max(class_list) >= IGNORE_INDEX:
        raise ValueError(f"class values must be within 0..254, got {classes}")
    mask = as_single_channel(mask)
    values = distinct_values(mask)
    unknown = values - set(class_list) - {IGNORE_INDEX}
    if unknown:
        raise MaskFormatError(
            f"found values {_format_values(unknown)} that are not classes "
            f"{_format_values(class_list)} nor 255 (ignore). The classes are the values found "
            "in the training masks: fix the mask, or set such pixels to 255 to ignore them"
        )
    lookup = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    lookup[class_list] = np.arange(len(class_list), dtype=np.uint8)
    # values are known to be within 0..255 here, so the cast for the lookup is lossless
    return lookup[mask.astype(np.uint8, copy=False)]
