"""Faults the relay survives, against a real ``vso serve``: a crash, a stop, a
peer that vanishes, a client that stops reading, a locked database and a full
disk."""

from __future__ import annotations

import asyncio
import json
import resource
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.relayserver import Client, RelayServer, visitor
from tests.test_relay import (
    demo_volunteer,
    open_chat,
    receive_messages,
    resume,
    running_relay,
    visitor_send,
    volunteer_send,
)

pytestmark = pytest.mark.anyio

LONG_GRACE = {"visitor_grace_seconds": "60", "volunteer_grace_seconds": "60"}
BUSY_TIMEOUT_SECONDS = 5.0  # relay.store.BUSY_TIMEOUT_MS
# Slow-reader tests ping rarely, so that the full send queue closes the socket
# before a missed pong does.
SLOW_READER_PING = "60"

# A visitor in another process, so that the test can freeze it with SIGSTOP:
# it stops reading and answering pings but keeps its TCP connection open.
FROZEN_VISITOR = """
import asyncio, json, sys
from websockets.asyncio.client import connect

async def main():
    socket = await connect(sys.argv[1], origin=sys.argv[2], ping_interval=None,
                           max_queue=1)
    await socket.send(json.dumps({"type": "start"}))
    while True:
        frame = json.loads(await socket.recv())
        if frame["type"] == "started":
            print(json.dumps(frame), flush=True)
            break
    await asyncio.Event().wait()

asyncio.run(main())
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@contextmanager
def frozen_visitor(relay: RelayServer) -> Iterator[dict[str, Any]]:
    """Start a chat from another process, then stop that process with SIGSTOP.

    Yields the ``started`` frame. The process is killed on the way out.
    """
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            FROZEN_VISITOR,
            f"{relay.ws_url}/chat/ws?site=demo",
            relay.base_url,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        started: dict[str, Any] = json.loads(process.stdout.readline())
        process.send_signal(signal.SIGSTOP)
        yield started
    finally:
        process.kill()
        process.wait()


async def wait_for_log(relay: RelayServer, text: str, timeout: float = 10) -> None:
    """Poll the relay's log until it contains ``text``."""
    deadline = time.monotonic() + timeout
    while text not in relay.log():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the relay never logged {text!r}")
        await asyncio.sleep(0.05)


# A crash


async def test_kill9_keeps_acknowledged_and_resent_messages(tmp_path: Path) -> None:
    async with running_relay(tmp_path, **LONG_GRACE) as relay:
        chat = await open_chat(relay, await demo_volunteer(relay))
        for number in range(1, 4):
            await chat.visitor.send(visitor_send(f"v-{number}", f"Message {number}"))
            await chat.visitor.expect("ack", client_id=f"v-{number}")
        # Sent while the relay dies: the client has no ack, so it resends it.
        await chat.visitor.send(visitor_send("v-4", "Message 4"))
        await asyncio.to_thread(relay.stop, signal.SIGKILL)
        await asyncio.to_thread(relay.start)

        resumed = await resume(relay, chat.token, last_seq=0)
        await resumed.send(visitor_send("v-4", "Message 4"))
        ack = await resumed.expect("ack", client_id="v-4")
        transcript = await resume(relay, chat.token, last_seq=0)
        messages = await receive_messages(transcript, 4)

    assert [frame["body"] for frame in messages] == [
        "Message 1",
        "Message 2",
        "Message 3",
        "Message 4",
    ]
    assert [frame["seq"] for frame in messages] == [1, 2, 3, 4]
    assert ack["seq"] == 4


async def test_kill9_resend_after_ack_not_duplicated(tmp_path: Path) -> None:
    async with running_relay(tmp_path, **LONG_GRACE) as relay:
        chat = await open_chat(relay, await demo_volunteer(relay))
        await chat.visitor.send(visitor_send("v-1", "Stored before the crash."))
        await chat.visitor.expect("ack", client_id="v-1")
        await asyncio.to_thread(relay.stop, signal.SIGKILL)
        await asyncio.to_thread(relay.start)

        # A client that lost the ack in the crash sends the message again.
        resumed = await resume(relay, chat.token, last_seq=0)
        await resumed.send(visitor_send("v-1", "Stored before the crash."))
        ack = await resumed.expect("ack", client_id="v-1")
        await resumed.send(visitor_send("v-2", "After the crash."))
        second = await resumed.expect("ack", client_id="v-2")

    assert ack["seq"] == 1
    assert second["seq"] == 2


# A stop


async def test_sigterm_exits_within_grace_period(tmp_path: Path) -> None:
    async with running_relay(tmp_path, **LONG_GRACE) as relay:
        chat = await open_chat(relay, await demo_volunteer(relay))
        await chat.visitor.send(visitor_send("v-1", "Before the stop."))
        await chat.visitor.expect("ack", client_id="v-1")
        started = time.monotonic()
        code = await asyncio.to_thread(relay.stop)
        elapsed = time.monotonic() - started
        visitor_code = await chat.visitor.close_code()

    # uvicorn raises SIGTERM again once it has shut down, for the caller to see.
    assert code == -signal.SIGTERM
    assert elapsed < 10
    assert visitor_code == 1012
    assert "relay stopped" in relay.log()


async def test_sigterm_refuses_new_connections(tmp_path: Path) -> None:
    async with running_relay(tmp_path, **LONG_GRACE) as relay:
        await open_chat(relay, await demo_volunteer(relay))
        await asyncio.to_thread(relay.stop)

        with pytest.raises(OSError):
            await visitor(relay)


async def test_sigterm_then_restart_keeps_messages(tmp_path: Path) -> None:
    async with running_relay(tmp_path, **LONG_GRACE) as relay:
        chat = await open_chat(relay, await demo_volunteer(relay))
        for number in range(1, 21):
            await chat.visitor.send(visitor_send(f"v-{number}", f"Message {number}"))
        await chat.visitor.expect("ack", client_id="v-20")
        await asyncio.to_thread(relay.stop)
        await asyncio.to_thread(relay.start)
        transcript = await resume(relay, chat.token, last_seq=0)
        messages = await receive_messages(transcript, 20)

    assert [frame["seq"] for frame in messages] == list(range(1, 21))


# A peer that vanishes


async def test_vanished_visitor_reaped_by_ping_timeout(tmp_path: Path) -> None:
    async with running_relay(tmp_path, ws_ping_seconds="0.5", **LONG_GRACE) as relay:
        volunteer = await demo_volunteer(relay)
        with frozen_visitor(relay) as started:
            conversation = started["conversation"]
            await volunteer.send({"type": "accept", "conversation": conversation})
            await volunteer.expect("assigned", conversation=conversation)
            status = await volunteer.expect(
                "visitor_status", conversation=conversation, timeout=10
            )

    assert status["connected"] is False


async def test_vanished_visitor_conversation_waits_for_return(tmp_path: Path) -> None:
    async with running_relay(tmp_path, ws_ping_seconds="0.5", **LONG_GRACE) as relay:
        volunteer = await demo_volunteer(relay)
        with frozen_visitor(relay) as started:
            conversation = started["conversation"]
            await volunteer.send({"type": "accept", "conversation": conversation})
            await volunteer.expect("assigned", conversation=conversation)
            await volunteer.expect(
                "visitor_status", conversation=conversation, connected=False, timeout=10
            )
            await volunteer.send(volunteer_send(conversation, "o-1", "Are you there?"))
            back = await resume(relay, started["token"], last_seq=0)
            assigned = await back.expect("assigned")
            missed = await back.expect("message")
            status = await volunteer.expect(
                "visitor_status", conversation=conversation, connected=True
            )

    assert assigned["volunteer"] == "Sam"
    assert missed["body"] == "Are you there?"
    assert status["connected"] is True


# A client that stops reading


async def flood(volunteer: Client, conversation: str, count: int) -> None:
    """Send ``count`` long replies, 50 at a time, reading the volunteer's acks.

    The volunteer keeps reading, so only the visitor falls behind.
    """
    body = "x" * 4000
    for first in range(0, count, 50):
        numbers = range(first, min(first + 50, count))
        for number in numbers:
            await volunteer.send(volunteer_send(conversation, f"f-{number}", body))
        await volunteer.expect("ack", client_id=f"f-{numbers[-1]}", timeout=30)
        volunteer.frames = [
            frame
            for frame in volunteer.frames
            if frame["type"] not in ("ack", "message")
        ]


async def round_trip_seconds(chat_visitor: Client, client_id: str) -> float:
    started = time.monotonic()
    await chat_visitor.send(visitor_send(client_id, "Still fast?"))
    await chat_visitor.expect("ack", client_id=client_id, timeout=10)
    return time.monotonic() - started


async def test_slow_reader_closed_and_resumes(tmp_path: Path) -> None:
    async with running_relay(
        tmp_path, ws_ping_seconds=SLOW_READER_PING, **LONG_GRACE
    ) as relay:
        volunteer = await demo_volunteer(relay)
        with frozen_visitor(relay) as started:
            conversation = started["conversation"]
            await volunteer.send({"type": "accept", "conversation": conversation})
            await volunteer.expect("assigned", conversation=conversation)
            await flood(volunteer, conversation, 1500)
            await wait_for_log(relay, "is not reading; closing it", timeout=30)
            status = await volunteer.expect(
                "visitor_status", conversation=conversation, connected=False, timeout=10
            )
        back = await resume(relay, started["token"], last_seq=1499)
        last = await back.expect("message", timeout=30)

    assert status["connected"] is False
    assert last["seq"] == 1500


async def test_slow_reader_leaves_other_chat_fast(tmp_path: Path) -> None:
    async with running_relay(
        tmp_path, ws_ping_seconds=SLOW_READER_PING, **LONG_GRACE
    ) as relay:
        volunteer = await demo_volunteer(relay)
        other = await open_chat(relay, volunteer)
        with frozen_visitor(relay) as started:
            conversation = started["conversation"]
            await volunteer.send({"type": "accept", "conversation": conversation})
            await volunteer.expect("assigned", conversation=conversation)
            sending = asyncio.create_task(flood(volunteer, conversation, 1500))
            times = []
            for number in range(10):
                times.append(await round_trip_seconds(other.visitor, f"r-{number}"))
            await sending
            await wait_for_log(relay, "is not reading; closing it", timeout=30)

    assert max(times) < 1.0


# A locked database


@contextmanager
def locked_database(path: Path) -> Iterator[None]:
    """Hold SQLite's write lock on ``path`` from another connection."""
    locked = threading.Event()
    release = threading.Event()

    def hold() -> None:
        db = sqlite3.connect(path, isolation_level=None)
        try:
            db.execute("BEGIN EXCLUSIVE")
            locked.set()
            release.wait(60)
            db.execute("ROLLBACK")
        finally:
            db.close()

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        if not locked.wait(10):
            raise TimeoutError("could not lock the database")
        yield
    finally:
        release.set()
        thread.join()


async def test_locked_database_send_fails_then_retry_stored(
    relay: RelayServer,
) -> None:
    chat = await open_chat(relay, await demo_volunteer(relay))
    await chat.visitor.send(visitor_send("v-1", "Before the lock."))
    await chat.visitor.expect("ack", client_id="v-1")

    with locked_database(relay.database):
        await chat.visitor.send(visitor_send("v-2", "During the lock."))
        error = await chat.visitor.expect(
            "error", client_id="v-2", timeout=BUSY_TIMEOUT_SECONDS + 10
        )
    await chat.visitor.send(visitor_send("v-2", "During the lock."))
    ack = await chat.visitor.expect("ack", client_id="v-2")

    assert error["code"] == "storage_failed"
    assert ack["seq"] == 2


async def test_locked_database_relay_keeps_serving(relay: RelayServer) -> None:
    chat = await open_chat(relay, await demo_volunteer(relay))
    other = await visitor(relay)

    with locked_database(relay.database):
        await chat.visitor.send(visitor_send("v-1", "During the lock."))
        await other.send({"type": "ping"})
        pong = await other.expect("pong", timeout=2)
        await chat.visitor.expect(
            "error", client_id="v-1", timeout=BUSY_TIMEOUT_SECONDS + 10
        )

    assert pong == {"type": "pong"}


# A full disk


@asynccontextmanager
async def full_disk(relay: RelayServer) -> AsyncIterator[None]:
    """Make every file write of the relay fail, as on a full disk.

    RLIMIT_FSIZE set from outside with prlimit: Python ignores SIGXFSZ, so
    writes past the limit fail with EFBIG, which SQLite reports as an I/O error,
    as it does for ENOSPC. No root mount is needed.
    """
    assert relay.process is not None
    pid = relay.process.pid
    before = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (1, before[1]))
    try:
        yield
    finally:
        resource.prlimit(pid, resource.RLIMIT_FSIZE, before)


async def test_full_disk_send_fails_then_retry_stored(relay: RelayServer) -> None:
    chat = await open_chat(relay, await demo_volunteer(relay))
    await chat.visitor.send(visitor_send("v-1", "Before the disk filled."))
    await chat.visitor.expect("ack", client_id="v-1")

    async with full_disk(relay):
        await chat.visitor.send(visitor_send("v-2", "While it is full."))
        error = await chat.visitor.expect("error", client_id="v-2", timeout=10)
        await chat.visitor.send({"type": "ping"})
        pong = await chat.visitor.expect("pong")
    await chat.visitor.send(visitor_send("v-2", "While it is full."))
    ack = await chat.visitor.expect("ack", client_id="v-2")
    transcript = await resume(relay, chat.token, last_seq=0)
    messages = await receive_messages(transcript, 2)

    assert error["code"] == "storage_failed"
    assert pong == {"type": "pong"}
    assert ack["seq"] == 2
    assert [frame["body"] for frame in messages] == [
        "Before the disk filled.",
        "While it is full.",
    ]
