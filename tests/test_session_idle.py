"""A dashboard socket in use keeps its session live at the shortest idle time.

The relay allows an idle time of 60 seconds. A volunteer who acts on the
dashboard's socket every few seconds, without loading a page, must keep their
session for as long as they go on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from tests.relayserver import RelayServer, volunteer

pytestmark = pytest.mark.anyio

IDLE_SECONDS = 60
# Two idle periods and one action more: long enough for the socket to check
# its session more than once.
ACTIVE_SECONDS = 2 * IDLE_SECONDS + 6
ACTION_EVERY_SECONDS = 5.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def short_idle_relay(tmp_path: Path) -> Iterator[RelayServer]:
    server = RelayServer(tmp_path, session_idle_seconds=str(IDLE_SECONDS))
    server.start()
    try:
        yield server
    finally:
        server.stop()


# The test lasts as long as the idle periods it covers.
@pytest.mark.timeout(ACTIVE_SECONDS + 60)
async def test_active_socket_keeps_short_session(
    short_idle_relay: RelayServer,
) -> None:
    relay = short_idle_relay
    assert relay.demo_password is not None
    cookie = await relay.sign_in("demo", relay.demo_password)
    dashboard = await volunteer(relay, cookie)
    available = False
    answers = 0
    closed_after: float | None = None
    started = time.monotonic()
    try:
        while time.monotonic() - started < ACTIVE_SECONDS:
            available = not available
            await dashboard.send({"type": "availability", "available": available})
            await dashboard.expect("availability", available=available)
            answers += 1
            await asyncio.sleep(ACTION_EVERY_SECONDS)
    except ConnectionClosed:
        closed_after = time.monotonic() - started
    finally:
        await dashboard.close()

    assert closed_after is None, (
        f"the socket was closed after {closed_after:.0f} s of use"
        f" with code {dashboard.connection.close_code}"
    )
    assert answers >= ACTIVE_SECONDS // ACTION_EVERY_SECONDS
    assert "session expired" not in relay.log()
