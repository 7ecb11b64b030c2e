"""The checks of one table row: files exist, decode completely, sizes match, values legal.

Each check returns what is wrong and how to fix it, as text, so that
:func:`autoseg.data.table.validate_table` can list every problem of every row at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from autoseg.data.io import decode_image, read_mask
from autoseg.labels.masks import (
    MaskFormatError,
    as_single_channel,
    distinct_values,
    is_binary_values,
)

MaskCheck = Callable[[np.ndarray], str | None]
OnMask = Callable[[np.ndarray], None] | None
_JPEG_SUFFIXES = (".jpg", ".jpeg")
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height


@dataclass(frozen=True)
class RowCheck:
    """What to check in each row, and where relative paths were resolved (for hints)."""

    check: MaskCheck
    base_hint: str


def check_mask_values(mask: np.ndarray) -> str | None:
    """Default mask check: whole-number class ids within 0..255 in a single channel.

    RGB masks pass only when their three channels are equal.

    Args:
        mask: Raw mask from :func:`autoseg.data.read_mask`.

    Returns:
        None when the mask is usable, else what is wrong and how to fix it.

    """
    try:
        values = distinct_values(as_single_channel(mask))
    except MaskFormatError as err:
        return str(err)
    bad = sorted(v for v in values if v < 0 or v > 255)
    if bad:
        shown = ", ".join(str(v) for v in bad[:10])
        return (
            f"found values {{{shown}}} outside 0..255. Masks must hold class ids 0..254 "
            "(255 = ignore), or 0/1 or 0/255 for binary tasks"
        )
    return None


def check_with(target_fn: Callable[[np.ndarray], np.ndarray]) -> MaskCheck:
    """Turn a target function that raises :class:`MaskFormatError` into a mask check.

    Args:
        target_fn: E.g. :func:`autoseg.data.binary_target`.

    Returns:
        A ``check_values`` callable for :func:`validate_table`.

    """

    def check(mask: np.ndarray) -> str | None:
        try:
            target_fn(mask)
        except MaskFormatError as err:
            return str(err)
        return None

    return check


def _file_problem(path: str, what: str, base_hint: str) -> str | None:
    if not path:
        return f"no {what} path given (empty cell). Fill it in or remove the row"
    if not os.path.exists(path):
        if "\\" in path:
            forward = path.replace("\\", "/")
            found = " (it exists with '/')" if os.path.exists(forward) else ""
            return (
                f"file not found: the path uses Windows backslashes '\\'{found}. Write the "
                "paths with '/' (works on every system), e.g. images/a.png"
            )
        return f"file not found. Check the path ({base_hint})"
    if os.path.isdir(path):
        return f"is a folder, not a{'n' if what == 'image' else ''} {what} file. Fix the path"
    if os.path.getsize(path) == 0:
        return f"the file is empty (0 bytes). Replace it with the real {what}, or remove the row"
    return None


def _decode_problem(err: Exception, what: str) -> str:
    """Explain why a file did not decode, with the decoder's own words."""
    if isinstance(err, Image.DecompressionBombError):
        return (
            f"the {what} is too large to decode safely ({err}). Split it into tiles, or, if "
            "you trust the file, raise the limit: PIL.Image.MAX_IMAGE_PIXELS = None"
        )
    detail = str(err).split("\n")[0][:160]
    return (
        f"cannot be read as a{'n' if what == 'image' else ''} {what} "
        f"({type(err).__name__}: {detail}). Check that it is a PNG, JPEG, TIFF or BMP file and "
        "not truncated or damaged: re-export or re-copy it"
    )


def _size_problem(mask_hw: tuple[int, ...], image_hw: tuple[int, int], orientation: int) -> str:
    sizes = (
        f"mask size {mask_hw[0]}x{mask_hw[1]} (HxW) differs from its image size "
        f"{image_hw[0]}x{image_hw[1]}"
    )
    if orientation in _TRANSPOSING_ORIENTATIONS and mask_hw == image_hw[::-1]:
        return (
            f"{sizes}, but matches it after the image's EXIF orientation (tag {orientation}, "
            "a rotation): autoseg reads the stored pixels and ignores EXIF orientation. Re-save "
            "the image without the tag (PIL.ImageOps.exif_transpose(img).save(path)), or "
            "rotate the mask to the stored pixel grid"
        )
    return f"{sizes}. Masks must match their image pixel for pixel"


def _mask_problems(
    label: str, image: tuple[tuple[int, int], int] | None, rules: RowCheck, on_mask: OnMask
) -> list[str]:
    try:
        mask = read_mask(label)
    except Exception as err:  # noqa: BLE001 - any decoder failure is a problem of this file
        return [_decode_problem(err, "mask").replace("TIFF or BMP file", "file (PNG is best)")]
    found: list[str] = []
    if image is not None and tuple(mask.shape[:2]) != image[0]:
        found.append(_size_problem(tuple(mask.shape[:2]), *image))
    message = rules.check(mask)
    jpeg = label.lower().endswith(_JPEG_SUFFIXES)
    if message is None and jpeg and mask.ndim == 2:
        values = distinct_values(mask)
        if not is_binary_values(values):
            message = f"JPEG mask holds {len(values)} distinct values"
    if message is not None:
        hint = ". JPEG compression changes mask values: save masks as PNG" if jpeg else ""
        found.append(message.rstrip(".") + hint)
    elif not found and on_mask is not None:
        on_mask(mask)
    return found


def row_problems(
    image: str, label: str | None, rules: RowCheck, on_mask: OnMask = None
) -> list[tuple[str, str]]:
    """All problems of one row as ``(path, message)`` pairs; empty for a good row.

    Args:
        image: Absolute image path (``""`` for an empty cell).
        label: Absolute mask path, or None when masks are not checked.
        rules: The mask check and the hint for files not found.
        on_mask: Called with the raw mask when it passed every check.

    Returns:
        One ``(path, what is wrong and how to fix it)`` pair per problem.

    """
    found: list[tuple[str, str]] = []
    decoded: tuple[tuple[int, int], int] | None = None
    problem = _file_problem(image, "image", rules.base_hint)
    if problem is None:
        try:
            decoded = decode_image(image)
        except Exception as err:  # noqa: BLE001 - any decoder failure is a problem of this file
            problem = _decode_problem(err, "image")
    if problem is not None:
        found.append((image, problem))
    if label is not None:
        problem = _file_problem(label, "mask", rules.base_hint)
        if problem is not None:
            found.append((label, problem))
        else:
            found.extend((label, p) for p in _mask_problems(label, decoded, rules, on_mask))
    return found
