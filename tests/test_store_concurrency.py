"""Reads, write transactions and the group commit of one store, all at once,
on a real database file."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from relay.crypto import DataCipher, new_key_text
from relay.store import Store

pytestmark = pytest.mark.anyio

CONVERSATIONS = 20
MESSAGES_EACH = 100
SESSIONS = 200
CHECKS_EACH = 40
VOLUNTEERS = 200
READERS = 4
SWITCHES = 300


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_session_writes_during_commits(tmp_path: Path) -> None:
    """Session checks that write, while messages commit, never find the database locked.

    Each check reads the session, then marks it seen in a transaction. With
    many checks in flight, one of them starts its transaction while another's
    read is still open on the same connection, a snapshot that the message
    commits have since made stale.
    """
    store = await Store.open(
        tmp_path / "db.sqlite3", DataCipher.from_text(new_key_text())
    )
    try:
        site = await store.add_site("key", "Site", ["https://example.org"], "https://x")
        volunteer = await store.add_volunteer("sam", "Sam", "hash", CONVERSATIONS)
        conversations = []
        for number in range(CONVERSATIONS):
            conversation_id = f"c{number}"
            await store.create_conversation(conversation_id, site.id, f"hash-{number}")
            assert await store.assign_conversation(conversation_id, volunteer.id)
            conversations.append(conversation_id)
        for number in range(SESSIONS):
            await store.create_session(f"s{number}", volunteer.id)

        async def send(conversation_id: str) -> list[int]:
            seqs = []
            for number in range(MESSAGES_EACH):
                message, created = await store.add_message(
                    conversation_id, "visitor", f"m{number}", "hello"
                )
                assert created
                seqs.append(message.seq)
            return seqs

        async def check(session_id: str) -> int:
            live = 0
            for _ in range(CHECKS_EACH):
                # With 1 s of idle time allowed, a mark 0.1 s old is rewritten.
                if await store.get_session_volunteer(session_id, idle_seconds=1):
                    live += 1
                await asyncio.sleep(0.01)
            return live

        results = await asyncio.gather(
            *(send(conversation_id) for conversation_id in conversations),
            *(check(f"s{number}") for number in range(SESSIONS)),
        )
    finally:
        await store.close()

    sent, checked = results[:CONVERSATIONS], results[CONVERSATIONS:]
    for seqs in sent:
        assert seqs == list(range(1, MESSAGES_EACH + 1))
    assert checked == [CHECKS_EACH] * SESSIONS


async def test_read_after_commit_current(tmp_path: Path) -> None:
    """A read after a committed write finds it while other reads are open."""
    store = await Store.open(
        tmp_path / "db.sqlite3", DataCipher.from_text(new_key_text())
    )
    stopped = asyncio.Event()

    async def read_until_stopped() -> None:
        # A list long enough that its read is still open while others start.
        while not stopped.is_set():
            await store.list_volunteers()

    try:
        volunteers = [
            await store.add_volunteer(f"v{number}", f"V{number}", "hash", 2)
            for number in range(VOLUNTEERS)
        ]
        volunteer_id = volunteers[0].id
        readers = [asyncio.create_task(read_until_stopped()) for _ in range(READERS)]
        stale = []
        try:
            for switch in range(SWITCHES):
                available = switch % 2 == 0
                await store.set_volunteer_available(volunteer_id, available)
                listed = await store.list_available_volunteers()
                if (volunteer_id in {v.id for v in listed}) != available:
                    stale.append(switch)
        finally:
            stopped.set()
            await asyncio.gather(*readers)
    finally:
        await store.close()

    assert stale == []
