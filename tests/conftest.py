from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.relayserver import RelayServer

pytest_plugins = ["tests.browser", "tests.mailservers"]


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RelayServer]:
    """A started relay with the demo site and demo volunteer, stopped afterwards."""
    server = RelayServer(
        tmp_path, visitor_grace_seconds="2", volunteer_grace_seconds="2"
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()
