"""The size of the SQLite write-ahead log under unbroken message load, on a
real database file: the checkpoint thread and the group-commit writer start
the log over, so the file stays near its limit."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from relay.crypto import DataCipher, new_key_text
from relay.store import WAL_HARD_LIMIT_FACTOR, Store

pytestmark = pytest.mark.anyio

LIMIT = 256 * 1024
HARD_LIMIT = WAL_HARD_LIMIT_FACTOR * LIMIT
SENDERS = 20
MESSAGES_EACH = 200
SECONDS = 20.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Load:
    """Messages written through one store, and the WAL file's largest size."""

    store: Store
    wal: Path
    conversations: list[str]
    volunteer_id: int
    acknowledged: dict[str, list[int]] = field(default_factory=dict)
    largest: int = 0
    smallest: int | None = None

    async def send(
        self, conversation_id: str, count: int, pause: float, delay: float
    ) -> None:
        """Send ``count`` messages after ``delay``, each ``pause`` after the ack
        of the one before."""
        seqs = self.acknowledged.setdefault(conversation_id, [])
        deadline = time.monotonic() + SECONDS
        await asyncio.sleep(delay)
        for _ in range(count):
            if time.monotonic() > deadline:
                return
            message, created = await self.store.add_message(
                conversation_id,
                "volunteer",
                f"m{len(seqs)}",
                "x" * 300,
                self.volunteer_id,
            )
            assert created
            seqs.append(message.seq)
            if pause:
                await asyncio.sleep(pause)

    async def run(self, count: int, pause: float = 0.0) -> None:
        """Send ``count`` messages from every sender while watching the WAL.

        Senders start at even steps within one ``pause``, so that commits come
        one after another rather than in bursts with quiet gaps between.
        """
        step = pause / len(self.conversations)
        senders = asyncio.gather(
            *(
                self.send(conversation_id, count, pause, index * step)
                for index, conversation_id in enumerate(self.conversations)
            )
        )
        while not senders.done():
            size = self.wal.stat().st_size
            self.largest = max(self.largest, size)
            self.smallest = size if self.smallest is None else min(self.smallest, size)
            await asyncio.sleep(0.005)
        await senders

    def sent(self) -> int:
        return sum(len(seqs) for seqs in self.acknowledged.values())


async def open_load(
    path: Path, checkpoint_seconds: float = 1.0, limit: int = LIMIT
) -> Load:
    store = await Store.open(
        path,
        DataCipher.from_text(new_key_text()),
        wal_size_limit=limit,
        checkpoint_seconds=checkpoint_seconds,
    )
    site = await store.add_site("key", "Site", ["https://example.org"], "https://x")
    volunteer = await store.add_volunteer("sam", "Sam", "hash", 2)
    conversations = [f"c{number}" for number in range(SENDERS)]
    for number, conversation_id in enumerate(conversations):
        await store.create_conversation(conversation_id, site.id, f"hash-{number}")
        assert await store.assign_conversation(conversation_id, volunteer.id)
    wal = path.with_name(path.name + "-wal")
    return Load(store, wal, conversations, volunteer.id)


def assert_all_stored(path: Path, load: Load) -> None:
    """Check that every acknowledged message is in the database file."""
    with sqlite3.connect(path) as db:
        for conversation_id, seqs in load.acknowledged.items():
            stored = [
                row[0]
                for row in db.execute(
                    "SELECT seq FROM messages WHERE conversation_id = ? ORDER BY seq",
                    (conversation_id,),
                )
            ]
            assert stored == sorted(seqs), f"{conversation_id} lost messages"


async def test_store_wal_bounded_under_unbroken_writes(tmp_path: Path) -> None:
    path = tmp_path / "vso.sqlite3"
    # Regular passes come too seldom for this load, so the hard limit acts.
    load = await open_load(path, checkpoint_seconds=60.0)
    try:
        # About 1,000 messages a second, a commit every millisecond or so:
        # the log never has every frame copied when a transaction begins.
        await load.run(MESSAGES_EACH, pause=SENDERS / 1000)
    finally:
        await load.store.close()

    assert load.sent() >= SENDERS * MESSAGES_EACH, "the writes missed the deadline"
    # The file grows on while the thread copies, by what is written meanwhile.
    # Without the limits, it reached 32 MB in this test.
    assert load.largest <= 2 * HARD_LIMIT, f"the WAL file reached {load.largest} B"
    assert_all_stored(path, load)


async def test_store_wal_restarted_after_regular_pass(tmp_path: Path) -> None:
    path = tmp_path / "vso.sqlite3"
    # A limit with room for the 1.25 MB log that the setup leaves.
    limit = 1024 * 1024
    load = await open_load(path, checkpoint_seconds=0.25, limit=limit)
    try:
        # About 1,000 messages a second, some 4 MB of log between two passes:
        # a regular pass comes before the file reaches the hard limit.
        await load.run(MESSAGES_EACH, pause=SENDERS / 1000)
    finally:
        await load.store.close()

    assert load.sent() >= SENDERS * MESSAGES_EACH, "the writes missed the deadline"
    hard_limit = WAL_HARD_LIMIT_FACTOR * limit
    assert load.largest <= hard_limit, f"the WAL file reached {load.largest} B"
    assert_all_stored(path, load)


async def test_store_wal_cut_back_after_long_read(tmp_path: Path) -> None:
    path = tmp_path / "vso.sqlite3"
    load = await open_load(path)
    try:
        # A reader inside one transaction, as a backup is, needs the frames
        # written after its snapshot, so the log cannot start over.
        reader = sqlite3.connect(path, isolation_level=None)
        try:
            reader.execute("BEGIN")
            reader.execute("SELECT COUNT(*) FROM messages").fetchone()
            await load.run(MESSAGES_EACH // 2)
            during_read = load.wal.stat().st_size
        finally:
            reader.close()
        load.smallest = None
        await load.run(MESSAGES_EACH // 2, pause=SENDERS / 1000)
    finally:
        await load.store.close()

    assert during_read > 2 * HARD_LIMIT
    assert load.smallest is not None
    assert load.smallest <= LIMIT, f"the WAL file stayed over {load.smallest} B"
    assert_all_stored(path, load)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("wal_size_limit", -1),
        ("checkpoint_seconds", 0),
        ("checkpoint_seconds", float("nan")),
    ],
)
async def test_store_wal_options_invalid_rejected(
    tmp_path: Path, option: str, value: float
) -> None:
    with pytest.raises(ValueError, match=option):
        await Store.open(tmp_path / "vso.sqlite3", **{option: value})
