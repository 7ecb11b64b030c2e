"""Color (RGB) masks: a user's ``class_colors`` mapping turned into class ids.

Many annotation tools save masks as RGB images where each class has a color, e.g. CWFID's
black soil, green crop and red weed. ``class_colors`` says which class each color is:

    {(0, 0, 0): "soil", (0, 255, 0): "crop", (255, 0, 0): "weed", (255, 255, 255): None}

Rules:

* class ids follow the mapping's order of first appearance of each name (here soil = 0,
  crop = 1, weed = 2), so users decide the ids by writing the mapping; sorting colors
  would give ids nobody expects;
* several colors may share a name: they become one class;
* a color mapped to ``None`` or to the name ``"ignore"`` is ignored (target 255);
* keys are ``(r, g, b)`` tuples/lists of 0..255 ints or ``"#rrggbb"`` strings;
* a pixel whose color is not in the mapping is an error that names the colors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from autoseg.errors import SettingsError
from autoseg.labels.masks import (
    IGNORE_INDEX,
    MaskFormatError,
    format_colors,
    pack_rgb,
    unpack_rgb,
)

RGB = tuple[int, int, int]
IGNORE_NAMES = ("ignore",)
"""Class names (compared case-insensitively) that mark a color as ignored, like ``None``."""


@dataclass(frozen=True)
class ColorTable:
    """Color-to-class-id lookup built from a ``class_colors`` mapping.

    Attributes:
        entries: ``(r, g, b, class_id)`` per color, class id 255 for ignored colors, in
            the mapping's order. This is what ``config.yaml`` stores.
        class_names: one name per class id.

    Example:
        >>> table = ColorTable.from_mapping({(0, 0, 0): "soil", "#00ff00": "crop"})
        >>> table.encode(np.array([[[0, 255, 0], [0, 0, 0]]], np.uint8)).tolist()
        [[1, 0]]

    """

    entries: tuple[tuple[int, int, int, int], ...]
    class_names: tuple[str, ...]

    @classmethod
    def from_mapping(cls, class_colors: Mapping[Any, str | None]) -> ColorTable:
        """Check a user's mapping and number its classes in order of first appearance.

        Raises:
            SettingsError: ``class_colors`` is not a mapping, a color is malformed or
                repeated, a name is empty, or fewer than two classes remain after ignored
                colors.

        """
        if not isinstance(class_colors, Mapping):
            raise SettingsError(
                "class_colors must be a dict such as {(0, 0, 0): 'background', "
                f"(0, 255, 0): 'crop'}}, got {type(class_colors).__name__}"
            )
        names: list[str] = []
        entries: list[tuple[int, int, int, int]] = []
        for key, name in class_colors.items():
            rgb = parse_color(key)
            if any(entry[:3] == rgb for entry in entries):
                raise SettingsError(f"class_colors lists the color {rgb} twice")
            if _is_ignore(name):
                entries.append((*rgb, IGNORE_INDEX))
                continue
            if not isinstance(name, str) or not name.strip():
                raise SettingsError(
                    f"class_colors[{rgb}] must be a class name (a non-empty string) or None "
                    f"to ignore that color, got {name!r}"
                )
            if name not in names:
                names.append(name)
            entries.append((*rgb, names.index(name)))
        if len(names) < 2:
            raise SettingsError(
                f"class_colors must name at least 2 classes, got {names}; a color mapped "
                "to None or 'ignore' is not a class"
            )
        return cls(tuple(entries), tuple(names))

    @classmethod
    def from_entries(cls, entries: Sequence[Sequence[int]], names: Sequence[str]) -> ColorTable:
        """Rebuild from the plain lists stored in ``config.yaml``."""
        rows = tuple((int(r), int(g), int(b), int(k)) for r, g, b, k in entries)
        return cls(rows, tuple(names))

    @property
    def num_classes(self) -> int:
        """Number of classes (ignored colors excluded)."""
        return len(self.class_names)

    def color_of(self, class_id: int) -> RGB:
        """The first color mapped to a class id (e.g. to draw predictions in it)."""
        return next((r, g, b) for r, g, b, k in self.entries if k == class_id)

    def encode(self, mask: np.ndarray) -> np.ndarray:
        """Map an RGB mask to class ids ``0..K-1``, 255 for ignored colors.

        Vectorised: each pixel's packed color is found by binary search among the few
        mapped colors (a 2**24-entry lookup table would cost 16 MB per call).

        Raises:
            MaskFormatError: The mask is single-channel, or holds colors not in the
                mapping (named, with their pixel counts).

        """
        if mask.ndim != 3 or mask.shape[2] not in (3, 4):
            raise MaskFormatError(
                "is a single-channel mask, but class_colors expects RGB color masks. Save "
                "the masks as RGB PNGs, or drop class_colors for class-id masks (palette "
                "PNGs are read by index, as class ids)"
            )
        codes = pack_rgb(mask)
        known = np.array([(r << 16) | (g << 8) | b for r, g, b, _ in self.entries], np.int32)
        order = np.argsort(known)
        known, ids = known[order], np.array([e[3] for e in self.entries], np.uint8)[order]
        position = np.minimum(np.searchsorted(known, codes), len(known) - 1)
        matched = known[position] == codes
        if not matched.all():
            raise MaskFormatError(self._unknown_message(codes[~matched]))
        return ids[position]

    def _unknown_message(self, codes: np.ndarray) -> str:
        unknown, counts = np.unique(codes, return_counts=True)
        by_count = unknown[np.argsort(-counts, kind="stable")]
        shown = ", ".join(
            f"{unpack_rgb(c)} ({int(counts[unknown == c][0])} px)" for c in by_count[:5]
        )
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        mapped = format_colors([(r << 16) | (g << 8) | b for r, g, b, _ in self.entries])
        hint = (
            " (many colors: JPEG compression or anti-aliased drawing? Save masks as PNG "
            "without smoothing)"
            if len(unknown) > 5
            else ""
        )
        return (
            f"holds {len(unknown)} color{'s' if len(unknown) != 1 else ''} not in "
            f"class_colors: {shown}{more}. class_colors maps {mapped}; add the missing "
            f"colors (None to ignore them){hint}"
        )


def parse_color(key: Any) -> RGB:
    """``(r, g, b)`` from a tuple/list of three 0..255 ints or a ``"#rrggbb"`` string.

    Raises:
        SettingsError: The key is neither.

    """
    if isinstance(key, str):
        text = key.strip().lstrip("#")
        if len(text) == 6:
            try:
                return int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16)
            except ValueError:
                pass
    elif isinstance(key, Sequence | np.ndarray) and len(key) == 3:
        values = [int(v) for v in key if isinstance(v, int | np.integer)]
        if len(values) == 3 and all(0 <= v <= 255 for v in values):
            return values[0], values[1], values[2]
    raise SettingsError(
        f"class_colors key {key!r} is not a color; use an (r, g, b) tuple of 0..255 "
        "integers or a '#rrggbb' string"
    )


def _is_ignore(name: Any) -> bool:
    return name is None or (isinstance(name, str) and name.strip().lower() in IGNORE_NAMES)
