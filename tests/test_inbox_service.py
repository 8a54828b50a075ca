"""InboxService on a real store and chat service: reply codes, limits, notices."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from relay.conversations import ChatService, Timeouts
from relay.crypto import DataCipher, new_key_text
from relay.hours import Interval, Schedule
from relay.hub import LocalHub
from relay.inbox import InboxError, InboxService, check_notify_address
from relay.ratelimit import RateLimiter
from relay.replycodes import (
    hash_reply_code,
    new_reply_code,
    normalise_reply_code,
)
from relay.store import Site, Store

pytestmark = pytest.mark.anyio

SECRET = "test-secret-key-" + "y" * 32


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Parts:
    store: Store
    chat: ChatService
    site: Site
    volunteer_id: int


@pytest.fixture
async def parts(tmp_path: Path) -> AsyncIterator[Parts]:
    store = await Store.open(
        tmp_path / "db.sqlite3", DataCipher.from_text(new_key_text())
    )
    chat = ChatService(store, LocalHub(), Timeouts(visitor=60, volunteer=30))
    site = await store.add_site("k", "Site", [], "https://www.google.com/")
    volunteer = await store.add_volunteer("alex", "Alex", "hash", 2)
    try:
        yield Parts(store, chat, site, volunteer.id)
    finally:
        await chat.stop()
        await store.close()


@dataclass
class RecordingNotifier:
    """A ReplyNotifier that records calls, and raises when ``fail`` is set."""

    fail: bool = False
    calls: list[str] = field(default_factory=list)
    called: asyncio.Event = field(default_factory=asyncio.Event)

    async def reply_waiting(self, conversation_id: str) -> None:
        self.calls.append(conversation_id)
        self.called.set()
        if self.fail:
            raise ConnectionError("smtp server down")


def test_reply_code_has_eight_list_words() -> None:
    codes = {new_reply_code() for _ in range(50)}

    assert len(codes) == 50
    for code in codes:
        assert normalise_reply_code(code) == code
        assert len(code.split()) == 8


def test_reply_code_normalised_forgivingly() -> None:
    code = "abandon ability able about above absent absorb abstract"

    assert normalise_reply_code(code.upper()) == code
    assert normalise_reply_code(
        " abandon-abil able, about\nabove absent abso abstr "
    ) == (code)
    assert normalise_reply_code("abandon ability able about above absent") is None
    assert normalise_reply_code(code + " zoo") is None
    assert normalise_reply_code("xxxx " * 8) is None
    assert normalise_reply_code("<qqqq>" * 8) is None
    assert normalise_reply_code("a" * 500) is None


def test_reply_code_hash_keyed() -> None:
    code = new_reply_code()

    assert hash_reply_code(SECRET, code) == hash_reply_code(SECRET, code)
    assert hash_reply_code(SECRET, code) != hash_reply_code(SECRET + "z", code)
    assert code.split()[0] not in hash_reply_code(SECRET, code)


def test_rate_limiter_has_token_takes_nothing() -> None:
    now = [0.0]
    limiter = RateLimiter(burst=1, per_seconds=10, clock=lambda: now[0])

    assert limiter.has_token("a")
    assert limiter.has_token("a")
    assert limiter.allow("a")
    assert not limiter.has_token("a")
    now[0] = 10.0
    assert limiter.has_token("a")


@pytest.mark.parametrize(
    "address",
    ["plain", "two@@example.org", "no space@example.org", "<a@b.org>", "a@b"],
)
def test_notify_address_invalid(address: str) -> None:
    with pytest.raises(InboxError) as raised:
        check_notify_address(address)

    assert raised.value.code == "invalid_address"


def test_notify_address_empty_and_valid() -> None:
    assert check_notify_address("   ") is None
    assert check_notify_address(" me@example.org ") == "me@example.org"


async def test_inbox_global_ceiling_limits_everyone(parts: Parts) -> None:
    inbox = InboxService(
        parts.store,
        parts.chat,
        SECRET,
        max_chars=4000,
        attempts_burst=100,
        global_burst=3,
        global_per_seconds=3600,
    )
    left = await inbox.leave_message(parts.site, "f-1", "text")
    for number in range(3):
        with pytest.raises(InboxError, match="No conversation"):
            await inbox.find_by_code(f"address-{number}", "wrong words")

    with pytest.raises(InboxError) as raised:
        await inbox.find_by_code("a-fresh-address", left.reply_code)

    assert raised.value.code == "rate_limited"


async def test_inbox_right_codes_not_counted(parts: Parts) -> None:
    inbox = InboxService(
        parts.store, parts.chat, SECRET, max_chars=4000, attempts_burst=2
    )
    left = await inbox.leave_message(parts.site, "f-1", "text")

    for _ in range(10):
        entry = await inbox.find_by_code("one-address", left.reply_code)

    assert entry.conversation_id == left.conversation_id


async def test_inbox_notice_only_with_address(parts: Parts) -> None:
    notifier = RecordingNotifier()
    inbox = InboxService(
        parts.store, parts.chat, SECRET, max_chars=4000, notifier=notifier
    )
    plain = await inbox.leave_message(parts.site, "f-1", "no address")
    noted = await inbox.leave_message(parts.site, "f-2", "with", "me@example.org")

    await inbox.reply(plain.conversation_id, parts.volunteer_id, "r-1", "hi")
    await inbox.reply(noted.conversation_id, parts.volunteer_id, "r-2", "hi")
    await asyncio.wait_for(notifier.called.wait(), 5)
    await inbox.stop()

    assert notifier.calls == [noted.conversation_id]


async def test_inbox_failed_notice_logged_reply_kept(
    parts: Parts, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = RecordingNotifier(fail=True)
    inbox = InboxService(
        parts.store, parts.chat, SECRET, max_chars=4000, notifier=notifier
    )
    noted = await inbox.leave_message(parts.site, "f-1", "with", "me@example.org")

    with caplog.at_level(logging.ERROR, logger="relay.inbox"):
        await inbox.reply(noted.conversation_id, parts.volunteer_id, "r-1", "hi")
        await asyncio.wait_for(notifier.called.wait(), 5)
        await inbox.stop()
    messages = await parts.store.messages_after(noted.conversation_id, 0)

    assert [m.sender for m in messages] == ["visitor", "volunteer"]
    assert f"telling the visitor of {noted.conversation_id} failed" in caplog.text


async def test_inbox_availability_pinned_clock(parts: Parts) -> None:
    weekdays = tuple(Interval(day, 9 * 60, 17 * 60) for day in range(5))
    await parts.store.set_site_schedule(parts.site.id, Schedule(intervals=weekdays))
    saturday = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)
    inbox = InboxService(
        parts.store, parts.chat, SECRET, max_chars=4000, clock=lambda: saturday
    )

    availability = await inbox.availability(parts.site)

    assert not availability.within_hours
    assert not availability.volunteers_available
    assert not availability.chat_open
    assert availability.next_opening is not None
    assert availability.next_opening.isoformat() == "2026-03-30T09:00:00+02:00"
    assert not await inbox.within_hours(parts.site)


async def test_inbox_leave_message_rejects_bad_input(parts: Parts) -> None:
    inbox = InboxService(parts.store, parts.chat, SECRET, max_chars=10)

    cases = [
        ("f-1", "   ", "", "empty_message"),
        ("f-2", "x" * 11, "", "message_too_long"),
        ("f-3", "ok", "nope", "invalid_address"),
        ("bad key!", "ok", "", "invalid_form"),
        ("f-4", "\u200b\u200b", "", "empty_message"),
    ]
    codes = []
    for form_key, body, address, _expected in cases:
        with pytest.raises(InboxError) as raised:
            await inbox.leave_message(parts.site, form_key, body, address)
        codes.append(raised.value.code)

    assert codes == [case[3] for case in cases]
    assert await parts.store.count_inbox() == {
        "waiting": 0,
        "claimed": 0,
        "answered": 0,
        "closed": 0,
    }
