"""The suite-wide guard (root conftest.py): no downloads, no connections off this machine."""

from __future__ import annotations

import socket

import pytest

from autoseg.models.backbones import pretrained_weights
from autoseg.models.weights import WeightsNotFoundError, checkpoint_dir, resolve_checkpoint


def test_connections_off_this_machine_are_refused():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        with pytest.raises(OSError, match="never reach the network"):
            sock.connect(("192.0.2.1", 443))  # TEST-NET-1: never routed


def test_loopback_connections_still_work():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=5):
            pass


def test_downloads_are_refused_and_the_cache_is_private():
    with pytest.raises(WeightsNotFoundError, match="tests never download"):
        resolve_checkpoint(pretrained_weights("vit_b"))
    assert "pytest" in str(checkpoint_dir())
