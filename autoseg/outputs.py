"""Prediction output folders: autoseg replaces only files it wrote itself, never an input.

Each output folder holds a small hidden manifest, ``.autoseg-predictions.json``, listing the
files autoseg wrote there with their sha256. A file is autoseg's own while it is listed and
unchanged; anything else (the user's files, or a prediction the user edited by hand) is the
user's. A folder holding the user's files is refused unless ``overwrite=True``; an input
image or mask is never written over, with or without it. Every check runs before any
inference, and every write (files and manifest) is atomic.

The manifest is written before the files, listing them as pending, so a run that dies midway
leaves a folder the next run may write again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from autoseg.atomic import atomic_write_bytes, atomic_write_text
from autoseg.errors import OutputExistsError

MANIFEST = ".autoseg-predictions.json"
MANIFEST_KIND = "autoseg-predictions"
MANIFEST_VERSION = 1
OVERLAY_DIR = "overlays"
SHOWN = 5


def unique_stems(paths: Sequence[str | Path]) -> list[str]:
    """File stems made unique in order: ``a``, ``a_1``, ``a_2``..."""
    stems, seen = [], {}
    for path in paths:
        stem = Path(path).stem
        count = seen.get(stem, 0)
        seen[stem] = count + 1
        stems.append(stem if count == 0 else f"{stem}_{count}")
    return stems


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(folder: Path) -> dict[str, str | None]:
    """Files autoseg wrote in ``folder``: relative POSIX path -> sha256 (``None``: pending).

    A missing, unreadable or foreign manifest lists nothing (every file is then the user's).
    """
    try:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("kind") != MANIFEST_KIND:
        return {}
    files = data.get("files")
    if not isinstance(files, dict):
        return {}
    return {
        str(name): digest
        for name, digest in files.items()
        if digest is None or isinstance(digest, str)
    }


def _write_manifest(folder: Path, files: dict[str, str | None]) -> None:
    record: dict[str, Any] = {
        "kind": MANIFEST_KIND,
        "version": MANIFEST_VERSION,
        "note": "files autoseg wrote here (sha256); autoseg replaces only these",
        "files": dict(sorted(files.items())),
    }
    atomic_write_text(folder / MANIFEST, json.dumps(record, indent=1) + "\n")


def foreign_files(folder: Path, limit: int = SHOWN) -> list[Path]:
    """Up to ``limit`` files in ``folder`` (any depth) that autoseg did not write there."""
    own = read_manifest(folder)
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            path = Path(root) / name
            rel = path.relative_to(folder).as_posix()
            if rel == MANIFEST:
                continue
            if rel in own and (own[rel] is None or (path.is_file() and _sha256(path) == own[rel])):
                continue
            found.append(path)
            if len(found) >= limit:
                return found
    return found


def _resolved(paths: Iterable[str | Path]) -> set[Path]:
    return {Path(p).resolve() for p in paths if str(p)}


class PredictionFolder:
    """Where one ``predict(save_dir=...)`` call writes; checked before any inference.

    Args:
        save_dir: the output folder (created on the first write).
        image_paths: the images predicted, in order; each gives ``<stem>.png`` and
            ``overlays/<stem>.png``.
        protected: paths never to write over (the input images and masks).
        overwrite: allow replacing files autoseg did not write (never a protected one).

    Raises:
        OutputExistsError: ``save_dir`` is a file; a target is an input or a folder; or
            ``save_dir`` holds files autoseg did not write and ``overwrite`` is False.

    """

    def __init__(
        self,
        save_dir: str | Path,
        image_paths: Sequence[str | Path],
        protected: Iterable[str | Path] = (),
        overwrite: bool = False,
    ) -> None:
        self.root = Path(save_dir)
        stems = unique_stems(image_paths)
        self.masks = [self.root / f"{stem}.png" for stem in stems]
        self.overlays = [self.root / OVERLAY_DIR / f"{stem}.png" for stem in stems]
        self._before: dict[str, str | None] = {}
        self._written: dict[str, str | None] = {}
        self._check(_resolved(protected), overwrite)

    def _check(self, protected: set[Path], overwrite: bool) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise OutputExistsError(
                f"save_dir={str(self.root)!r} is a file, not a folder; choose another save_dir."
            )
        for target in self._targets():
            if target.resolve() in protected:
                raise OutputExistsError(
                    f"Predicting into save_dir={str(self.root)!r} would write over the input "
                    f"{target}; autoseg never replaces an input image or mask, even with "
                    "overwrite=True. Choose another save_dir (e.g. a new 'predictions' folder)."
                )
            if target.is_dir():
                raise OutputExistsError(
                    f"{target} is a folder, where a predicted mask would go; choose another "
                    "save_dir."
                )
        if overwrite or not self.root.is_dir():
            return
        foreign = foreign_files(self.root)
        if foreign:
            listed = ", ".join(str(p) for p in foreign) + (", ..." if len(foreign) >= SHOWN else "")
            raise OutputExistsError(
                f"save_dir={str(self.root)!r} holds files autoseg did not write ({listed}); "
                "autoseg never overwrites them silently. Choose a new or empty save_dir, or "
                "pass overwrite=True (command line: --overwrite) to write there anyway "
                "(input images and masks are never replaced)."
            )

    def begin(self) -> None:
        """Create the folders and list every target as pending in the manifest."""
        (self.root / OVERLAY_DIR).mkdir(parents=True, exist_ok=True)
        self._before = read_manifest(self.root)
        self._written = {}
        pending = {t.relative_to(self.root).as_posix(): None for t in self._targets()}
        _write_manifest(self.root, {**self._before, **pending})

    def write(self, target: Path, data: bytes) -> None:
        """Write one output file atomically and record its sha256."""
        atomic_write_bytes(target, data)
        self._written[target.relative_to(self.root).as_posix()] = hashlib.sha256(data).hexdigest()

    def finish(self) -> None:
        """Record the sha256 of everything written; targets not reached keep their old entry."""
        _write_manifest(self.root, {**self._before, **self._written})

    def _targets(self) -> list[Path]:
        return [*self.masks, *self.overlays]
