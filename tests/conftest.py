"""Shared test setup: one torch thread, no network, a private AUTOSEG_HOME, shared data paths."""

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

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


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
    """For the whole suite: no downloads, no connections off this machine, an empty cache."""
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


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The engineers' ``../shared/data`` folder; tests using it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not available (only present on the engineers' machines)")
    return SHARED_DATA
