"""Setup shared by the tests and the doctests in autoseg/: one torch thread, no network.

The README's ``python -m pytest`` also runs every docstring example (``--doctest-modules``
in pyproject.toml), so the guard lives here, above both ``tests/`` and ``autoseg/``.
"""

from __future__ import annotations

import ipaddress
import socket
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from autoseg.models import weights

torch.set_num_threads(1)  # steadier on 2 shared cores


def _importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


# Modules whose examples need an optional extra are not collected without it.
collect_ignore_glob = [] if _importable("rasterio") else ["autoseg/data/geotiff*.py"]


def _refuse_download(url: str, destination: Path) -> None:
    raise urllib.error.URLError(f"tests never download ({url})")


def _is_local(address: object) -> bool:
    host = address[0] if isinstance(address, tuple) else None
    if host is None:
        return True  # AF_UNIX paths
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture(scope="session", autouse=True)
def no_network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """For the whole run: no downloads, no connections off this machine, an empty cache."""
    connect = socket.socket.connect

    def local_only(self: socket.socket, address: object) -> None:
        if not _is_local(address):
            raise OSError(f"tests never reach the network (connect to {address!r})")
        return connect(self, address)

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AUTOSEG_HOME", str(tmp_path_factory.mktemp("autoseg_home")))
        patch.setattr(weights, "download_file", _refuse_download)
        patch.setattr(socket.socket, "connect", local_only)
        yield


@pytest.fixture(autouse=True)
def doctests_write_in_a_temporary_folder(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Docstring examples that write files (synthetic data sets) must not litter the checkout."""
    if isinstance(request.node, pytest.DoctestItem):
        monkeypatch.chdir(tmp_path)
