"""The store's message and e-mail conversations: states, claims, replies, deletion."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from relay.crypto import DataCipher, new_key_text
from relay.store import (
    ClaimedByOtherError,
    ConversationBlockedError,
    ConversationClosedError,
    Site,
    Store,
    Volunteer,
)

pytestmark = pytest.mark.anyio

SECRET_TEXT = "my neighbour broke the window again"
SECRET_ADDRESS = "hidden.mailbox@example.org"
INBOX_ALL = ("waiting", "claimed", "answered", "closed")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(
        tmp_path / "db.sqlite3", DataCipher.from_text(new_key_text())
    )
    try:
        yield opened
    finally:
        await opened.close()


async def site_and_volunteers(store: Store) -> tuple[Site, Volunteer, Volunteer]:
    site = await store.add_site(
        "site-key", "Example", ["https://example.org"], "https://www.google.com/"
    )
    alex = await store.add_volunteer("alex", "Alex", "hash", 2)
    maria = await store.add_volunteer("maria", "Maria", "hash", 2)
    return site, alex, maria


async def test_inbox_create_waits_with_first_message(store: Store) -> None:
    site, _, _ = await site_and_volunteers(store)

    entry, message = await store.create_inbox_conversation(
        "c-1", site.id, "message", SECRET_TEXT, client_id="m-1"
    )
    messages = await store.messages_after("c-1", 0)
    conversation = await store.get_conversation("c-1")

    assert entry.state == "waiting"
    assert entry.channel == "message"
    assert entry.claimed_by is None
    assert message.seq == 1
    assert [m.body for m in messages] == [SECRET_TEXT]
    assert conversation is not None
    assert conversation.channel == "message"


async def test_inbox_unknown_channel_rejected(store: Store) -> None:
    site, _, _ = await site_and_volunteers(store)

    with pytest.raises(ValueError, match="channel"):
        await store.create_inbox_conversation(
            "c-1", site.id, "chat", "text", client_id="m-1"
        )


async def test_inbox_duplicate_reply_code_hash_rejected(store: Store) -> None:
    site, _, _ = await site_and_volunteers(store)
    await store.create_inbox_conversation(
        "c-1", site.id, "message", "one", client_id="m-1", reply_code_hash="h"
    )

    with pytest.raises(ValueError, match="reply code"):
        await store.create_inbox_conversation(
            "c-2", site.id, "message", "two", client_id="m-1", reply_code_hash="h"
        )
    assert await store.get_conversation("c-2") is None


async def test_inbox_not_in_chat_queue(store: Store) -> None:
    site, _, _ = await site_and_volunteers(store)
    await store.create_inbox_conversation(
        "c-1", site.id, "email", "text", client_id="m-1"
    )

    assert await store.list_open_conversations() == []


async def test_inbox_claim_race_one_wins(store: Store) -> None:
    site, alex, maria = await site_and_volunteers(store)
    await store.create_inbox_conversation(
        "c-1", site.id, "message", "text", client_id="m-1"
    )

    results = await asyncio.gather(
        store.claim_inbox_conversation("c-1", alex.id),
        store.claim_inbox_conversation("c-1", maria.id),
    )
    entry = await store.get_inbox_entry("c-1")

    assert sorted(results) == [False, True]
    winner = alex if results[0] else maria
    assert entry is not None
    assert entry.state == "claimed"
    assert entry.claimed_by == winner.id
    assert entry.claimed_by_name == winner.display_name


async def test_inbox_claim_race_two_connections(tmp_path: Path) -> None:
    key = new_key_text()
    path = tmp_path / "db.sqlite3"
    first = await Store.open(path, DataCipher.from_text(key))
    second = await Store.open(path, DataCipher.from_text(key))
    try:
        site, alex, maria = await site_and_volunteers(first)
        await first.create_inbox_conversation(
            "c-1", site.id, "message", "text", client_id="m-1"
        )
        results = await asyncio.gather(
            first.claim_inbox_conversation("c-1", alex.id),
            second.claim_inbox_conversation("c-1", maria.id),
        )
    finally:
        await first.close()
        await second.close()

    assert sorted(results) == [False, True]


async def test_inbox_take_over_moves_claim(store: Store) -> None:
    site, alex, maria = await site_and_volunteers(store)
    await store.create_inbox_conversation(
        "c-1", site.id, "message", "text", client_id="m-1"
    )
    await store.claim_inbox_conversation("c-1", alex.id)

    taken = await store.claim_inbox_conversation("c-1", maria.id, take_over=True)
    entry = await store.get_inbox_entry("c-1")

    assert taken
    assert entry is not None
    assert entry.claimed_by == maria.id


async def test_inbox_reply_to_other_claim_rejected(store: Store) -> None:
    site, alex, maria = await site_and_volunteers(store)
    await store.create_inbox_conversation(
        "c-1", site.id, "message", "text", client_id="m-1"
    )
    await store.claim_inbox_conversation("c-1", alex.id)

    with pytest.raises(ClaimedByOtherError) as raised:
        await store.record_inbox_reply("c-1", maria.id, "r-1", "reply")
    messages = await store.messages_after("c-1", 0)

    assert raised.value.claimed_by == alex.id
    assert len(messages) == 1


async def test_inbox_reply_take_over_answers(store: Store) -> None:
    site, alex, maria = await site_and_volunteers(store)
    await store.create_inbox_conversation(
        "c-1", site.id, "message", "text", client_id="m-1"
    )
    await store.claim_inbox_conversation("c-1", alex.id)

    message, stored = await store.record_inbox_reply(
        "c-1", maria.id, "r-1", "reply", take_over=True
    )
    entry = await store.get_inbox_entry("c-1")

    assert stored
    assert message.sender == "volunteer"
    assert message.volunteer_id == maria.id
    assert entry is not None
    assert entry.state == "answered"
    assert entry.claimed_by == maria.id


async def test_inbox_reply_unclaimed_claims_it(store: Store) -> None:
    site, alex, _ = await site_and_volunteers(store)
    await store.create_inbox_conversation(
        "c-1", site.id, "message", "text", client_id="m-1"
    )

    await store.record_inbox_reply("c-1", alex.id, "r-1", "reply")
    entry = await store.get_inbox_entry("c-1")

    assert entry is not None
    assert entry.state == "answered"
    assert entry.claimed_by == alex.id


async def test_inbox_reply_retry_stored_once(store: Store) -> None:
    site, alex, _ = await site_and_volunteers(store)
    await store.create_inbox_conversation(
        "c-1", site.id, "message", "text", client_id="m-1"
    )

    first, stored_first = await store.record_inbox_reply("c-1", alex.id, "r-1", "a")
    again, stored_again = await store.record_inbox_reply("c-1", alex.id, "r-1", "a")

    assert stored_first
    assert not stored_again
    assert again.seq == first.seq
    assert len(await store.messages_after("c-1", 0)) == 2


async def test_inbox_visitor_answer_returns_to_claimant(store: Store) -> None:
    site, alex, _ = await site_and_volunteers(store)
    await store.create_inbox_conversation(
        "c-1", site.id, "message", "text", client_id="m-1"
    )
    await store.record_inbox_reply("c-1", alex.id, "r-1", "reply")

    await store.add_inbox_visitor_message("c-1", "m-2", "thanks, one more thing")
    entry = await store.get_inbox_entry("c-1")

    assert entry is not None
    assert entry.state == "claimed"
    assert entry.claimed_by == alex.id


async def test_inbox_release_waits_again(store: Store) -> None:
    site, alex, maria = await site_and_volunteers(store)
    await store.create_inbox_conversation(
        "c-1", site.id, "message", "text", client_id="m-1"
    )
    await store.claim_inbox_conversation("c-1", alex.id)

    not_holder = await store.release_inbox_conversation("c-1", maria.id)
    released = await store.release_inbox_conversation("c-1", alex.id)
    entry = await store.get_inbox_entry("c-1")

    assert not not_holder
    assert released
    assert entry is not None
    assert entry.state == "waiting"
    assert entry.claimed_by is None


async def test_inbox_close_refuses_reply(store: Store) -> None:
    site, alex, _ = await site_and_volunteers(store)
    await store.create_inbox_conversation(
        "c-1", site.id, "message", "text", client_id="m-1"
    )

    closed = await store.close_inbox_conversation("c-1")
    closed_again = await store.close_inbox_conversation("c-1")
    conversation = await store.get_conversation("c-1")

    assert closed
    assert not closed_again
    assert conversation is not None
    assert conversation.status == "ended"
    with pytest.raises(ConversationClosedError):
        await store.record_inbox_reply("c-1", alex.id, "r-1", "reply")
    assert not await store.claim_inbox_conversation("c-1", alex.id)


async def test_inbox_visitor_message_reopens_closed(store: Store) -> None:
    site, _, _ = await site_and_volunteers(store)
    await store.create_inbox_conversation(
        "c-1", site.id, "message", "text", client_id="m-1"
    )
    await store.close_inbox_conversation("c-1")

    await store.add_inbox_visitor_message("c-1", "m-2", "it happened again")
    entry = await store.get_inbox_entry("c-1")
    conversation = await store.get_conversation("c-1")

    assert entry is not None
    assert entry.state == "waiting"
    assert conversation is not None
    assert conversation.status == "active"
    assert conversation.ended_at is None


async def test_inbox_blocked_code_refuses_visitor(store: Store) -> None:
    site, alex, _ = await site_and_volunteers(store)
    await store.create_inbox_conversation(
        "c-1", site.id, "message", "text", client_id="m-1", reply_code_hash="h"
    )

    blocked = await store.block_inbox_reply_code("c-1", alex.id)
    entry = await store.get_inbox_entry_by_reply_code_hash("h")

    assert blocked
    assert entry is not None
    assert entry.blocked
    assert entry.state == "closed"
    with pytest.raises(ConversationBlockedError):
        await store.add_inbox_visitor_message("c-1", "m-2", "more")


async def test_inbox_unknown_conversation_refused(store: Store) -> None:
    await site_and_volunteers(store)

    with pytest.raises(ConversationClosedError):
        await store.add_inbox_visitor_message("nope", "m-1", "text")
    assert await store.get_inbox_entry("nope") is None
    assert not await store.claim_inbox_conversation("nope", 1)
    assert not await store.delete_inbox_conversation("nope")


async def test_inbox_list_by_state_and_site(store: Store) -> None:
    site, alex, _ = await site_and_volunteers(store)
    other = await store.add_site("other", "Other", [], "https://www.google.com/")
    for number in range(1, 4):
        await store.create_inbox_conversation(
            f"c-{number}", site.id, "message", "text", client_id="m-1"
        )
    await store.create_inbox_conversation(
        "c-other", other.id, "email", "text", client_id="m-1"
    )
    await store.claim_inbox_conversation("c-2", alex.id)
    await store.close_inbox_conversation("c-3")

    waiting = await store.list_inbox(["waiting"])
    claimed = await store.list_inbox(["claimed"])
    of_site = await store.list_inbox(INBOX_ALL, site_ids=[site.id])
    counts = await store.count_inbox()

    assert [e.conversation_id for e in waiting] == ["c-1", "c-other"]
    assert [e.conversation_id for e in claimed] == ["c-2"]
    assert sorted(e.conversation_id for e in of_site) == ["c-1", "c-2", "c-3"]
    assert counts == {"waiting": 2, "claimed": 1, "answered": 0, "closed": 1}
    with pytest.raises(ValueError, match="Unknown inbox states"):
        await store.list_inbox(["open"])


async def test_inbox_delete_keeps_count(store: Store) -> None:
    site, _, _ = await site_and_volunteers(store)
    await store.create_inbox_conversation(
        "c-1", site.id, "message", "text", client_id="m-1", reply_code_hash="h"
    )

    deleted = await store.delete_inbox_conversation("c-1")
    counts = await store.conversation_counts()

    assert deleted
    assert await store.get_inbox_entry_by_reply_code_hash("h") is None
    assert await store.messages_after("c-1", 0) == []
    assert [(row[2], row[5]) for row in counts] == [("message", 1)]


async def test_inbox_text_encrypted_at_rest(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    store = await Store.open(path, DataCipher.from_text(new_key_text()))
    try:
        site, alex, _ = await site_and_volunteers(store)
        await store.create_inbox_conversation(
            "c-1",
            site.id,
            "message",
            SECRET_TEXT,
            client_id="m-1",
            notify_address=SECRET_ADDRESS,
        )
        await store.record_inbox_reply("c-1", alex.id, "r-1", "a reply " + SECRET_TEXT)
        address = await store.get_notify_address("c-1")
        entry = await store.get_inbox_entry("c-1")
    finally:
        await store.close()
    raw = b"".join(file.read_bytes() for file in tmp_path.iterdir() if file.is_file())
    with sqlite3.connect(path) as db:
        bodies = [row[0] for row in db.execute("SELECT body FROM messages")]

    assert address == SECRET_ADDRESS
    assert entry is not None
    assert entry.has_notify_address
    assert SECRET_TEXT.encode() not in raw
    assert SECRET_ADDRESS.encode() not in raw
    assert all(body.startswith("vso1:") for body in bodies)
