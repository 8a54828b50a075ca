"""The size of the SQLite write-ahead log under unbroken message load, on a
real database file: the group-commit writer keeps it near its limit."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from relay.crypto import DataCipher, new_key_text
from relay.store import Store

pytestmark = pytest.mark.anyio

LIMIT = 256 * 1024
SENDERS = 20
MESSAGES_EACH = 200
SECONDS = 20.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def open_conversations(store: Store) -> tuple[list[str], int]:
    site = await store.add_site("key", "Site", ["https://example.org"], "https://x")
    volunteer = await store.add_volunteer("sam", "Sam", "hash", 2)
    conversations = [f"c{number}" for number in range(SENDERS)]
    for number, conversation_id in enumerate(conversations):
        await store.create_conversation(conversation_id, site.id, f"hash-{number}")
        assert await store.assign_conversation(conversation_id, volunteer.id)
    return conversations, volunteer.id


async def test_store_wal_bounded_under_unbroken_writes(tmp_path: Path) -> None:
    path = tmp_path / "vso.sqlite3"
    wal = tmp_path / "vso.sqlite3-wal"
    store = await Store.open(
        path, DataCipher.from_text(new_key_text()), wal_size_limit=LIMIT
    )
    acknowledged: dict[str, list[int]] = {}
    largest = 0
    deadline = time.monotonic() + SECONDS
    try:
        conversations, volunteer_id = await open_conversations(store)

        async def send(conversation_id: str, count: int) -> None:
            # No pause between messages: some sender always has one pending,
            # so a commit is always under way.
            seqs = acknowledged.setdefault(conversation_id, [])
            for _ in range(count):
                number = len(seqs)
                if time.monotonic() > deadline:
                    return
                message, created = await store.add_message(
                    conversation_id, "volunteer", f"m{number}", "x" * 300, volunteer_id
                )
                assert created
                seqs.append(message.seq)

        async def watch(senders: asyncio.Future[list[None]]) -> None:
            nonlocal largest
            while not senders.done():
                largest = max(largest, wal.stat().st_size)
                await asyncio.sleep(0.005)

        # Migrations and the setup above leave a log larger than the limit.
        # The first message of each sender lets the writer start it over.
        assert wal.stat().st_size > LIMIT
        await asyncio.gather(*(send(c, 1) for c in conversations))
        senders = asyncio.gather(*(send(c, MESSAGES_EACH - 1) for c in conversations))
        await asyncio.gather(senders, watch(senders))
    finally:
        await store.close()

    sent = sum(len(seqs) for seqs in acknowledged.values())
    assert sent == SENDERS * MESSAGES_EACH, "the writes took longer than the deadline"
    # A batch is written after the checkpoint, so the file may pass the limit
    # by one batch: at most one message of each sender.
    assert largest <= 2 * LIMIT, f"the WAL file reached {largest} bytes"
    with sqlite3.connect(path) as db:
        for conversation_id, seqs in acknowledged.items():
            stored = [
                row[0]
                for row in db.execute(
                    "SELECT seq FROM messages WHERE conversation_id = ? ORDER BY seq",
                    (conversation_id,),
                )
            ]
            assert stored == sorted(seqs), f"{conversation_id} lost messages"


async def test_store_wal_cut_back_after_long_read(tmp_path: Path) -> None:
    path = tmp_path / "vso.sqlite3"
    wal = tmp_path / "vso.sqlite3-wal"
    store = await Store.open(
        path, DataCipher.from_text(new_key_text()), wal_size_limit=LIMIT
    )
    sent = 0
    try:
        conversations, volunteer_id = await open_conversations(store)

        async def send_round() -> None:
            # One message from each sender, all pending together.
            nonlocal sent
            results = await asyncio.gather(
                *(
                    store.add_message(
                        conversation_id,
                        "volunteer",
                        f"m{sent}",
                        "x" * 300,
                        volunteer_id,
                    )
                    for conversation_id in conversations
                )
            )
            assert all(created for _, created in results)
            sent += 1

        # A reader inside one transaction, as a backup is, needs the frames
        # written after its snapshot, so the log cannot start over.
        reader = sqlite3.connect(path, isolation_level=None)
        try:
            reader.execute("BEGIN")
            reader.execute("SELECT COUNT(*) FROM messages").fetchone()
            for _ in range(MESSAGES_EACH // 2):
                await send_round()
            during_read = wal.stat().st_size
        finally:
            reader.close()
        rounds_after = 0
        while wal.stat().st_size > LIMIT and rounds_after < MESSAGES_EACH:
            await send_round()
            rounds_after += 1
        after_read = wal.stat().st_size
    finally:
        await store.close()

    assert during_read > 2 * LIMIT
    assert after_read <= LIMIT, f"the WAL file stayed at {after_read} bytes"
    with sqlite3.connect(path) as db:
        for conversation_id in conversations:
            (count,) = db.execute(
                "SELECT COUNT(*) FROM messages WHERE conversation_id = ?",
                (conversation_id,),
            ).fetchone()
            assert count == sent, f"{conversation_id} lost messages"


async def test_store_wal_limit_negative_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="wal_size_limit"):
        await Store.open(tmp_path / "vso.sqlite3", wal_size_limit=-1)
