from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.relayserver import RelayServer

pytest_plugins = ["tests.browser", "tests.mailservers"]


def _started_relay(tmp_path: Path, grace_seconds: str) -> Iterator[RelayServer]:
    """Start a relay with both grace periods set to ``grace_seconds``."""
    server = RelayServer(
        tmp_path,
        visitor_grace_seconds=grace_seconds,
        volunteer_grace_seconds=grace_seconds,
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RelayServer]:
    """A started relay with the demo site and demo volunteer, stopped afterwards."""
    yield from _started_relay(tmp_path, "2")


@pytest.fixture
def long_grace_relay(tmp_path: Path) -> Iterator[RelayServer]:
    """A relay whose grace periods outlast a restart."""
    yield from _started_relay(tmp_path, "120")
