"""The supervision tables of ``relay.store`` on a real SQLite file: whispers,
hard chats, support alerts, availability periods and the volunteers' load.
Also the parsing of the supervision and wellbeing frames."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from relay import protocol
from relay.crypto import DataCipher, new_key_text
from relay.protocol import ProtocolError
from relay.store import ConversationClosedError, Store
from relay.supervision import period_starts

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(
        tmp_path / "vso.sqlite3", DataCipher.from_text(new_key_text())
    )
    try:
        yield opened
    finally:
        await opened.close()


async def active_conversation(store: Store, volunteer_id: int) -> str:
    site = await store.add_site("key", "Site", ["https://example.org"], "https://x")
    await store.create_conversation("c1", site.id, "hash-1")
    assert await store.assign_conversation("c1", volunteer_id)
    return "c1"


async def add_volunteer(store: Store, username: str) -> int:
    volunteer = await store.add_volunteer(username, username.title(), "hash", 2)
    return volunteer.id


def execute(path: Path, sql: str, *params: object) -> None:
    with sqlite3.connect(path) as db:
        db.execute(sql, params)


# Whispers


async def test_whisper_sealed_and_read_back(store: Store, tmp_path: Path) -> None:
    volunteer = await add_volunteer(store, "sam")
    supervisor = await add_volunteer(store, "sofia")
    conversation = await active_conversation(store, volunteer)
    await store.add_message(conversation, "visitor", "v1", "hello")

    whisper = await store.add_whisper(conversation, supervisor, "ask about safety")
    read = await store.whispers_of(conversation)

    assert whisper.after_seq == 1
    assert [w.body for w in read] == ["ask about safety"]
    assert read[0].supervisor_id == supervisor
    with sqlite3.connect(tmp_path / "vso.sqlite3") as db:
        stored = db.execute("SELECT body FROM whispers").fetchone()[0]
    assert "safety" not in stored
    assert [m.body for m in await store.messages_after(conversation, 0)] == ["hello"]


async def test_whisper_on_ended_conversation_rejected(store: Store) -> None:
    volunteer = await add_volunteer(store, "sam")
    conversation = await active_conversation(store, volunteer)
    await store.end_conversation(conversation, "ended", "visitor")

    with pytest.raises(ConversationClosedError):
        await store.add_whisper(conversation, volunteer, "too late")


async def test_whispers_deleted_with_conversation(store: Store) -> None:
    volunteer = await add_volunteer(store, "sam")
    conversation = await active_conversation(store, volunteer)
    await store.add_whisper(conversation, volunteer, "note")
    await store.end_conversation(conversation, "ended", "visitor")

    assert await store.delete_conversation(conversation)

    assert await store.whispers_of(conversation) == []


# Hard chats and alerts


async def test_hard_chat_only_ended_and_own_once(store: Store) -> None:
    volunteer = await add_volunteer(store, "sam")
    other = await add_volunteer(store, "alex")
    conversation = await active_conversation(store, volunteer)

    while_open = await store.add_hard_chat(volunteer, conversation, "2030-01-01")
    await store.end_conversation(conversation, "ended", "visitor")
    by_other = await store.add_hard_chat(other, conversation, "2030-01-01")
    first = await store.add_hard_chat(volunteer, conversation, "2030-01-01")
    second = await store.add_hard_chat(volunteer, conversation, "2030-01-01")

    assert while_open is False
    assert by_other is False
    assert first is True
    assert second is False


async def test_support_alert_acknowledged_once(store: Store) -> None:
    volunteer = await add_volunteer(store, "sam")
    supervisor = await add_volunteer(store, "sofia")
    conversation = await active_conversation(store, volunteer)
    alert = await store.add_support_alert(volunteer, conversation)

    listed = await store.open_support_alerts()
    first = await store.acknowledge_support_alert(alert.id, supervisor)
    second = await store.acknowledge_support_alert(alert.id, supervisor)

    assert [a.id for a in listed] == [alert.id]
    assert first is True
    assert second is False
    assert await store.open_support_alerts() == []


# Availability and load


async def test_load_counts_intervals_inside_day_and_week(
    store: Store, tmp_path: Path
) -> None:
    volunteer = await add_volunteer(store, "sam")
    path = tmp_path / "vso.sqlite3"
    # Monday 2030-01-07 is the week's start; the day is Wednesday 2030-01-09.
    periods = [
        ("2030-01-06T23:00:00.000Z", "2030-01-07T01:00:00.000Z"),  # 1 h in the week
        ("2030-01-08T10:00:00.000Z", "2030-01-08T12:30:00.000Z"),  # 2.5 h, week only
        ("2030-01-08T23:30:00.000Z", "2030-01-09T00:15:00.000Z"),  # 15 min today
    ]
    for start, end in periods:
        execute(
            path,
            "INSERT INTO availability_intervals (volunteer_id, started_at, ended_at)"
            " VALUES (?, ?, ?)",
            volunteer,
            start,
            end,
        )

    loads = await store.volunteer_load(
        "2030-01-09T00:00:00.000Z", "2030-01-07T00:00:00.000Z"
    )

    assert loads[volunteer].available_seconds_today == 15 * 60
    assert loads[volunteer].available_seconds_week == (60 + 150 + 45) * 60


async def test_load_skips_intervals_without_volunteer(
    store: Store, tmp_path: Path
) -> None:
    # Statistics keep the intervals of a deleted account, without its id.
    execute(
        tmp_path / "vso.sqlite3",
        "INSERT INTO availability_intervals (volunteer_id, started_at, ended_at)"
        " VALUES (NULL, '2030-01-09T08:00:00.000Z', '2030-01-09T09:00:00.000Z')",
    )

    loads = await store.volunteer_load(
        "2030-01-09T00:00:00.000Z", "2030-01-07T00:00:00.000Z"
    )

    assert loads == {}


async def test_load_counts_chats_and_hard_chats(store: Store, tmp_path: Path) -> None:
    volunteer = await add_volunteer(store, "sam")
    conversation = await active_conversation(store, volunteer)
    await store.end_conversation(conversation, "ended", "visitor")
    await store.add_hard_chat(volunteer, conversation, "2030-01-01")
    day_start, week_start = period_starts(datetime.now(UTC))

    loads = await store.volunteer_load(day_start, week_start)

    assert loads[volunteer].chats_today == 1
    assert loads[volunteer].chats_week == 1
    assert loads[volunteer].hard_today == 1
    assert loads[volunteer].hard_week == 1


def test_period_starts_monday_and_midnight() -> None:
    day, week = period_starts(datetime(2030, 1, 9, 15, 30, tzinfo=UTC))

    assert day == "2030-01-09T00:00:00.000Z"
    assert week == "2030-01-07T00:00:00.000Z"


async def test_unanswered_counts_after_last_reply(store: Store) -> None:
    volunteer = await add_volunteer(store, "sam")
    conversation = await active_conversation(store, volunteer)
    await store.add_message(conversation, "visitor", "v1", "one")
    await store.add_message(conversation, "volunteer", "o1", "reply", volunteer)
    await store.add_message(conversation, "visitor", "v2", "two")
    await store.add_message(conversation, "visitor", "v3", "three")

    assert await store.unanswered_counts() == {conversation: 2}


async def test_transfer_conversation_needs_current_volunteer(store: Store) -> None:
    volunteer = await add_volunteer(store, "sam")
    other = await add_volunteer(store, "alex")
    conversation = await active_conversation(store, volunteer)

    wrong_owner = await store.transfer_conversation(conversation, other, volunteer)
    moved = await store.transfer_conversation(conversation, volunteer, other)
    stored = await store.get_conversation(conversation)

    assert wrong_owner is False
    assert moved is True
    assert stored is not None
    assert stored.volunteer_id == other


# Frames


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"type":"need_support","conversation":"c1"}', protocol.NeedSupport("c1")),
        ('{"type":"hard_chat","conversation":"c1"}', protocol.HardChat("c1")),
        ('{"type":"end_break"}', protocol.EndBreak()),
        ('{"type":"supervise"}', protocol.Supervise()),
        ('{"type":"watch","conversation":"c1"}', protocol.Watch("c1")),
        ('{"type":"unwatch","conversation":"c1"}', protocol.Unwatch("c1")),
        (
            '{"type":"whisper","conversation":"c1","body":"  note "}',
            protocol.WhisperNote("c1", "note"),
        ),
        ('{"type":"join","conversation":"c1"}', protocol.Join("c1")),
        ('{"type":"leave","conversation":"c1"}', protocol.Leave("c1")),
        (
            '{"type":"transfer","conversation":"c1","volunteer":3}',
            protocol.Transfer("c1", 3),
        ),
        ('{"type":"acknowledge","alert":7}', protocol.Acknowledge(7)),
    ],
)
def test_staff_frame_parsed(text: str, expected: object) -> None:
    assert protocol.parse_volunteer_frame(text) == expected


def test_supervisor_send_parsed() -> None:
    frame = protocol.parse_volunteer_frame(
        '{"type":"supervisor_send","conversation":"c1","client_id":"s1","body":"hi"}'
    )

    assert frame == protocol.SupervisorSend(protocol.Send("s1", "hi", "c1"))


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ('{"type":"transfer","conversation":"c1","volunteer":0}', "invalid_frame"),
        ('{"type":"transfer","conversation":"c1","volunteer":true}', "invalid_frame"),
        ('{"type":"transfer","conversation":"c1"}', "invalid_frame"),
        ('{"type":"transfer","conversation":"c 1","volunteer":2}', "invalid_frame"),
        ('{"type":"acknowledge","alert":-1}', "invalid_frame"),
        ('{"type":"acknowledge","alert":"1"}', "invalid_frame"),
        ('{"type":"watch"}', "invalid_frame"),
        ('{"type":"whisper","conversation":"c1","body":""}', "empty_message"),
        ('{"type":"whisper","conversation":"c1","body":7}', "invalid_frame"),
        (
            '{"type":"whisper","conversation":"c1","body":"' + "x" * 4001 + '"}',
            "message_too_long",
        ),
        ('{"type":"need_support"}', "invalid_frame"),
        ('{"type":"supervise_all"}', "invalid_frame"),
    ],
)
def test_staff_frame_rejected(text: str, code: str) -> None:
    with pytest.raises(ProtocolError) as raised:
        protocol.parse_volunteer_frame(text)

    assert raised.value.code == code
