"""Visitors who start a chat right after a restart, before the volunteers'
dashboards are back, against a ``vso serve`` restarted by each test: over
WebSockets and on the chat page without scripts."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from tests.relayserver import (
    Client,
    RelayServer,
    available_volunteer,
    volunteer,
)
from tests.test_nojs import Visitor, conversation_count, new_visitor
from tests.test_relay import running_relay, visitor_send

pytestmark = pytest.mark.anyio

# Long enough that the window cannot end before a test's volunteer returns.
LONG_GRACE = "60"
# Short, so that a test can wait for the window to end. The window starts
# before /readyz returns 200, so this bounds how long a test may take
# from the restart to its visitor's start.
SHORT_GRACE = 4.0
NOBODY_TEXT = "No volunteer is available at the moment"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def restarted_relay(
    directory: Path,
    grace: str,
    available: bool = True,
    stop_signal: int = signal.SIGTERM,
) -> AsyncIterator[tuple[RelayServer, str]]:
    """Yield a relay restarted after the demo volunteer's dashboard was open,
    with "Available" switched on or not, and that volunteer's session cookie.

    The relay stops on ``stop_signal``. The dashboard socket closes with the
    restart and is not reopened.
    """
    async with running_relay(directory, volunteer_grace_seconds=grace) as relay:
        assert relay.demo_password is not None
        cookie = await relay.sign_in("demo", relay.demo_password)
        if available:
            await available_volunteer(relay, cookie)
        else:
            await volunteer(relay, cookie)
        await asyncio.to_thread(relay.stop, stop_signal)
        await asyncio.to_thread(relay.start)
        yield relay, cookie


async def visitor_with_status(relay: RelayServer) -> tuple[Client, dict[str, Any]]:
    """Open a visitor socket and return it with its first frame, the ``status``."""
    connection = await connect(
        f"{relay.ws_url}/chat/ws?site=demo",
        origin=relay.base_url,  # type: ignore[arg-type]
    )
    client = Client(connection)
    return client, await client.expect("status")


async def returning_dashboard(
    relay: RelayServer, cookie: str
) -> tuple[Client, dict[str, Any], dict[str, Any]]:
    """Reopen the demo volunteer's dashboard; return it, its state and its queue."""
    dashboard = await volunteer(relay, cookie, hello=False)
    await dashboard.send({"type": "hello", "last_seq": {}})
    state = await dashboard.expect("state")
    queue = await dashboard.expect("queue")
    return dashboard, state, queue


async def transcript_with(person: Visitor, text: str, seconds: float) -> str:
    """Reload the transcript frame, as it reloads itself, until it shows ``text``.

    Returns the last transcript, which lacks ``text`` after ``seconds``.
    """
    deadline = time.monotonic() + seconds
    transcript = await person.transcript()
    while text not in transcript and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        transcript = await person.transcript()
    return transcript


def statuses(client: Client) -> list[bool]:
    """Return ``volunteers_available`` of the status frames buffered so far."""
    return [
        frame["volunteers_available"]
        for frame in client.frames
        if frame["type"] == "status"
    ]


# Over WebSockets


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGKILL])
async def test_restart_visitor_queued_until_volunteer_returns(
    tmp_path: Path, stop_signal: int
) -> None:
    async with restarted_relay(tmp_path, LONG_GRACE, stop_signal=stop_signal) as (
        relay,
        cookie,
    ):
        client, status = await visitor_with_status(relay)
        await client.send({"type": "start"})
        started = await client.expect("started")
        queued = await client.expect("queued")
        conversation = started["conversation"]

        dashboard, state, queue = await returning_dashboard(relay, cookie)
        await dashboard.send({"type": "accept", "conversation": conversation})
        await dashboard.expect("assigned", conversation=conversation)
        assigned = await client.expect("assigned")
        await client.send(visitor_send("v-1", "Is anyone there?"))
        received = await dashboard.expect("message", conversation=conversation)

        assert status["volunteers_available"] is True
        assert queued["position"] == 1
        assert state["available"] is True
        assert [entry["conversation"] for entry in queue["entries"]] == [conversation]
        assert assigned["volunteer"] == "Sam"
        assert received["body"] == "Is anyone there?"
        assert False not in statuses(client)


async def test_restart_window_ends_visitor_told_nobody(tmp_path: Path) -> None:
    async with restarted_relay(tmp_path, str(SHORT_GRACE)) as (relay, _):
        waiting, status = await visitor_with_status(relay)
        await waiting.send({"type": "start"})
        started = await waiting.expect("started")
        await waiting.expect("queued", position=1)

        ended = await waiting.expect(
            "status", volunteers_available=False, timeout=SHORT_GRACE + 10
        )
        late, late_status = await visitor_with_status(relay)
        await late.send({"type": "start"})
        answer = await late.expect("unavailable")

        assert status["volunteers_available"] is True
        assert started["conversation"]
        assert ended["volunteers_available"] is False
        # The waiting visitor keeps their place, as when the last volunteer leaves.
        assert waiting.frames == []
        assert late_status["volunteers_available"] is False
        assert answer["emergency"] == "112"
        assert conversation_count(relay) == 1


async def test_restart_volunteer_back_ends_own_window(tmp_path: Path) -> None:
    async with restarted_relay(tmp_path, LONG_GRACE) as (relay, cookie):
        idle, status = await visitor_with_status(relay)
        dashboard, _, _ = await returning_dashboard(relay, cookie)

        await dashboard.close()
        away = await idle.expect("status")
        await idle.send({"type": "start"})
        answer = await idle.expect("unavailable")

        assert status["volunteers_available"] is True
        assert away["volunteers_available"] is False
        assert answer["emergency"] == "112"


async def test_restart_without_available_volunteer_unavailable(
    tmp_path: Path,
) -> None:
    async with restarted_relay(tmp_path, LONG_GRACE, available=False) as (relay, _):
        client, status = await visitor_with_status(relay)
        await client.send({"type": "start"})
        answer = await client.expect("unavailable")

        assert status["volunteers_available"] is False
        assert answer["emergency"] == "112"
        assert conversation_count(relay) == 0


# Without scripts


async def test_restart_no_script_visitor_queued_then_paired(tmp_path: Path) -> None:
    async with restarted_relay(tmp_path, LONG_GRACE) as (relay, cookie):
        person = new_visitor(relay)
        response = await person.start()
        waiting = await person.transcript()

        dashboard, _, queue = await returning_dashboard(relay, cookie)
        conversation = queue["entries"][0]["conversation"]
        await dashboard.send({"type": "accept", "conversation": conversation})
        await dashboard.expect("assigned", conversation=conversation)
        chatting = await person.transcript()

        assert response.status_code == 303
        assert "Waiting for a volunteer" in waiting
        assert '<span class="queue-position">1</span>' in waiting
        assert NOBODY_TEXT not in waiting
        assert len(queue["entries"]) == 1
        assert "You are chatting with Sam" in chatting


async def test_restart_no_script_window_ends(tmp_path: Path) -> None:
    async with restarted_relay(tmp_path, str(SHORT_GRACE)) as (relay, _):
        person = new_visitor(relay)
        response = await person.start()
        before = await person.transcript()
        after = await transcript_with(person, NOBODY_TEXT, SHORT_GRACE + 10)
        late = new_visitor(relay)
        late_response = await late.start()

        assert response.status_code == 303
        assert NOBODY_TEXT not in before
        assert "Waiting for a volunteer" in after
        assert NOBODY_TEXT in after
        assert late_response.status_code == 200
        assert "Sorry, nobody is available to chat right now." in late.page
        assert conversation_count(relay) == 1


async def test_restart_no_script_without_available_volunteer(
    tmp_path: Path,
) -> None:
    async with restarted_relay(tmp_path, LONG_GRACE, available=False) as (relay, _):
        person = new_visitor(relay)
        response = await person.start()

        assert response.status_code == 200
        assert "Sorry, nobody is available to chat right now." in response.text
        assert conversation_count(relay) == 0
