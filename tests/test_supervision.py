"""Supervision over real WebSockets against a ``vso serve`` subprocess: the
overview, read-only watching, whispers, joining, transfers, "Need support",
breaks after hard chats, and that volunteers are refused all of it."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.relayserver import (
    Client,
    RelayServer,
    available_volunteer,
    started_visitor,
    visitor,
    volunteer,
)
from tests.staff import supervisor_cookie

pytestmark = pytest.mark.anyio

ALEX_PASSWORD = "second-volunteer-password"
WHISPER = "Ask whether they are safe right now"
SUPERVISOR_FRAMES: list[dict[str, Any]] = [
    {"type": "supervise"},
    {"type": "watch", "conversation": "c1"},
    {"type": "unwatch", "conversation": "c1"},
    {"type": "whisper", "conversation": "c1", "body": "note"},
    {"type": "join", "conversation": "c1"},
    {"type": "leave", "conversation": "c1"},
    {"type": "supervisor_send", "conversation": "c1", "client_id": "s1", "body": "hi"},
    {"type": "transfer", "conversation": "c1", "volunteer": 1},
    {"type": "acknowledge", "alert": 1},
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def running_relay(directory: Path, **settings: str) -> AsyncIterator[RelayServer]:
    server = RelayServer(
        directory, visitor_grace_seconds="2", volunteer_grace_seconds="2", **settings
    )
    await asyncio.to_thread(server.start)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.stop)


async def sam(relay: RelayServer, available: bool = True) -> Client:
    assert relay.demo_password is not None
    cookie = await relay.sign_in("demo", relay.demo_password)
    if available:
        return await available_volunteer(relay, cookie)
    return await volunteer(relay, cookie)


async def alex(relay: RelayServer, available: bool = True, capacity: int = 2) -> Client:
    relay.add_volunteer("alex", "Alex", ALEX_PASSWORD, capacity=capacity)
    cookie = await relay.sign_in("alex", ALEX_PASSWORD)
    if available:
        return await available_volunteer(relay, cookie)
    return await volunteer(relay, cookie)


async def supervisor(relay: RelayServer) -> Client:
    """Sign in supervisor "Sofia" and subscribe a socket to the overview."""
    client = await volunteer(relay, await supervisor_cookie(relay), hello=False)
    await client.send({"type": "supervise"})
    # Kept for the test, which may look for a volunteer in the first overview.
    client.frames.append(await client.expect("overview"))
    return client


async def paired(relay: RelayServer, volunteer_client: Client) -> tuple[Client, str]:
    visitor_client, started = await started_visitor(relay)
    conversation = started["conversation"]
    await volunteer_client.send({"type": "accept", "conversation": conversation})
    await volunteer_client.expect("assigned", conversation=conversation)
    await visitor_client.expect("assigned")
    return visitor_client, conversation


async def overview_where(
    client: Client, predicate: Any, timeout: float = 5.0
) -> dict[str, Any]:
    """Return the next ``overview`` frame for which ``predicate`` is true."""
    return await client.expect_where(
        lambda frame: frame["type"] == "overview" and predicate(frame), timeout
    )


def volunteer_id(overview: dict[str, Any], name: str) -> int:
    for entry in overview["volunteers"]:
        if entry["display_name"] == name:
            return int(entry["id"])
    raise AssertionError(f"no volunteer {name} in {overview['volunteers']}")


def visitor_send(client_id: str, body: str) -> dict[str, Any]:
    return {"type": "send", "client_id": client_id, "body": body}


# The overview


async def test_overview_lists_waiting_then_active(relay: RelayServer) -> None:
    watcher = await supervisor(relay)
    volunteer_client = await sam(relay)
    visitor_client, started = await started_visitor(relay)
    conversation = started["conversation"]

    waiting = await overview_where(watcher, lambda f: len(f["conversations"]) == 1)
    await volunteer_client.send({"type": "accept", "conversation": conversation})
    await visitor_client.send(visitor_send("v1", "hello"))
    await visitor_client.send(visitor_send("v2", "are you there"))
    active = await overview_where(
        watcher,
        lambda f: (
            f["conversations"]
            and f["conversations"][0]["status"] == "active"
            and f["conversations"][0]["unanswered"] == 2
        ),
    )

    entry = waiting["conversations"][0]
    assert entry["conversation"] == conversation
    assert entry["status"] == "waiting"
    assert entry["site"] == "Demo partner site"
    assert entry["volunteer"] is None
    assert entry["created_at"]
    assert active["conversations"][0]["volunteer"] == "Sam"
    assert active["conversations"][0]["assigned_at"]
    assert active["supervisors_online"] == 1


async def test_overview_unanswered_resets_on_reply(relay: RelayServer) -> None:
    watcher = await supervisor(relay)
    volunteer_client = await sam(relay)
    visitor_client, conversation = await paired(relay, volunteer_client)

    await visitor_client.send(visitor_send("v1", "hello"))
    await overview_where(
        watcher,
        lambda f: f["conversations"] and f["conversations"][0]["unanswered"] == 1,
    )
    # Older overviews, from before the visitor wrote, must not count as answered.
    watcher.frames.clear()
    await volunteer_client.send(
        {"type": "send", "conversation": conversation, "client_id": "o1", "body": "hi"}
    )
    answered = await overview_where(
        watcher,
        lambda f: f["conversations"] and f["conversations"][0]["unanswered"] == 0,
    )

    assert answered["conversations"][0]["conversation"] == conversation


async def test_overview_shows_volunteer_load(relay: RelayServer) -> None:
    watcher = await supervisor(relay)
    volunteer_client = await sam(relay)
    await paired(relay, volunteer_client)

    frame = await overview_where(
        watcher,
        lambda f: any(
            v["display_name"] == "Sam" and v["chats_today"] == 1
            for v in f["volunteers"]
        ),
    )
    entry = next(v for v in frame["volunteers"] if v["display_name"] == "Sam")

    assert entry["connected"] is True
    assert entry["available"] is True
    assert entry["chats"] == 1
    assert entry["capacity"] == 2
    assert entry["chats_week"] == 1
    assert entry["available_seconds_week"] >= entry["available_seconds_today"] >= 0
    assert entry["break_until"] is None


# Least privilege


async def test_volunteer_gets_403_on_supervision_page(relay: RelayServer) -> None:
    assert relay.demo_password is not None
    cookie = await relay.sign_in("demo", relay.demo_password)
    async with httpx.AsyncClient(
        base_url=relay.base_url, headers={"Cookie": f"vso_session={cookie}"}
    ) as client:
        response = await client.get("/dashboard/supervision")

    assert response.status_code == 403
    assert "Supervision" not in response.text


async def test_supervision_page_without_session_redirects(relay: RelayServer) -> None:
    async with httpx.AsyncClient(base_url=relay.base_url) as client:
        response = await client.get("/dashboard/supervision")

    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard"


async def test_supervisor_gets_supervision_page(relay: RelayServer) -> None:
    cookie = await supervisor_cookie(relay)
    async with httpx.AsyncClient(
        base_url=relay.base_url, headers={"Cookie": f"vso_session={cookie}"}
    ) as client:
        response = await client.get("/dashboard/supervision")

    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert "Sam" in response.text


async def test_volunteer_refused_every_supervisor_frame(relay: RelayServer) -> None:
    volunteer_client = await sam(relay)
    visitor_client, conversation = await paired(relay, volunteer_client)

    for frame in SUPERVISOR_FRAMES:
        frame = {**frame}
        if "conversation" in frame:
            frame["conversation"] = conversation
        await volunteer_client.send(frame)
        error = await volunteer_client.expect("error")
        assert error["code"] == "forbidden", frame
    await volunteer_client.expect_silence("overview", 0.5)
    await volunteer_client.expect_silence("watching", 0.1)
    await visitor_client.expect_silence("message", 0.1)


# Watching read-only


async def test_watch_sends_history_and_live_messages(relay: RelayServer) -> None:
    volunteer_client = await sam(relay)
    visitor_client, conversation = await paired(relay, volunteer_client)
    await visitor_client.send(visitor_send("v1", "first"))
    await volunteer_client.expect("message", seq=1)
    watcher = await supervisor(relay)

    await watcher.send({"type": "watch", "conversation": conversation})
    watching = await watcher.expect("watching", conversation=conversation)
    history = await watcher.expect("message", seq=1)
    await visitor_client.send(visitor_send("v2", "second"))
    live = await watcher.expect("message", seq=2)

    assert watching["status"] == "active"
    assert watching["volunteer"] == "Sam"
    assert watching["joined"] is False
    assert history["body"] == "first"
    assert live["body"] == "second"
    assert live["mine"] is False


async def test_watch_unknown_conversation_not_found(relay: RelayServer) -> None:
    watcher = await supervisor(relay)

    await watcher.send({"type": "watch", "conversation": "no-such-chat"})
    error = await watcher.expect("error")

    assert error["code"] == "not_found"


async def test_watcher_cannot_write_without_join(relay: RelayServer) -> None:
    volunteer_client = await sam(relay)
    visitor_client, conversation = await paired(relay, volunteer_client)
    watcher = await supervisor(relay)
    await watcher.send({"type": "watch", "conversation": conversation})
    await watcher.expect("watching")

    await watcher.send(
        {
            "type": "supervisor_send",
            "conversation": conversation,
            "client_id": "s1",
            "body": "hello from the supervisor",
        }
    )
    error = await watcher.expect("error")
    # An ordinary send names a conversation that is not the supervisor's own.
    await watcher.send(
        {"type": "send", "conversation": conversation, "client_id": "s2", "body": "x"}
    )
    second = await watcher.expect("error")

    assert error["code"] == "forbidden"
    assert second["code"] == "forbidden"
    await visitor_client.expect_silence("message", 0.5)
    with sqlite3.connect(relay.database) as db:
        count = db.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
    assert count == 0


# Whispers


async def test_whisper_reaches_volunteer_only(relay: RelayServer) -> None:
    volunteer_client = await sam(relay)
    visitor_client, conversation = await paired(relay, volunteer_client)
    await visitor_client.send(visitor_send("v1", "hello"))
    await volunteer_client.expect("message", seq=1)
    watcher = await supervisor(relay)

    await watcher.send(
        {"type": "whisper", "conversation": conversation, "body": WHISPER}
    )
    received = await volunteer_client.expect("whisper")
    await visitor_client.send(visitor_send("v2", "still here"))
    await visitor_client.expect("message", seq=2)

    assert received["conversation"] == conversation
    assert received["body"] == WHISPER
    assert received["author"] == "Sofia"
    assert received["after_seq"] == 1
    everything_visitor_got = str(visitor_client.frames)
    assert WHISPER not in everything_visitor_got
    assert "whisper" not in everything_visitor_got


async def test_whisper_absent_from_visitor_resume(relay: RelayServer) -> None:
    volunteer_client = await sam(relay)
    visitor_client, started = await started_visitor(relay)
    conversation = started["conversation"]
    await volunteer_client.send({"type": "accept", "conversation": conversation})
    await visitor_client.expect("assigned")
    watcher = await supervisor(relay)
    await watcher.send(
        {"type": "whisper", "conversation": conversation, "body": WHISPER}
    )
    await volunteer_client.expect("whisper")
    await volunteer_client.send(
        {"type": "send", "conversation": conversation, "client_id": "o1", "body": "hi"}
    )
    await visitor_client.expect("message", seq=1)
    await visitor_client.close()

    resumed = await visitor(relay)
    await resumed.send({"type": "resume", "token": started["token"], "last_seq": 0})
    await resumed.expect("assigned")
    replayed = await resumed.expect("message", seq=1)
    await resumed.expect_silence("message", 0.5)

    assert replayed["body"] == "hi"
    assert WHISPER not in str(resumed.frames)


async def test_whisper_stored_sealed(relay: RelayServer) -> None:
    volunteer_client = await sam(relay)
    _, conversation = await paired(relay, volunteer_client)
    watcher = await supervisor(relay)

    await watcher.send(
        {"type": "whisper", "conversation": conversation, "body": WHISPER}
    )
    await volunteer_client.expect("whisper")

    with sqlite3.connect(relay.database) as db:
        rows = db.execute("SELECT body FROM whispers").fetchall()
        in_messages = db.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
    assert len(rows) == 1
    assert WHISPER not in rows[0][0]
    assert in_messages == 0
    assert WHISPER not in relay.log()


async def test_whisper_resent_after_volunteer_reconnects(relay: RelayServer) -> None:
    assert relay.demo_password is not None
    cookie = await relay.sign_in("demo", relay.demo_password)
    volunteer_client = await available_volunteer(relay, cookie)
    _, conversation = await paired(relay, volunteer_client)
    watcher = await supervisor(relay)
    await watcher.send(
        {"type": "whisper", "conversation": conversation, "body": WHISPER}
    )
    await volunteer_client.expect("whisper")
    await volunteer_client.close()

    again = await volunteer(relay, cookie)
    repeated = await again.expect("whisper")

    assert repeated["body"] == WHISPER


async def test_whisper_to_waiting_chat_not_found(relay: RelayServer) -> None:
    await sam(relay)
    _, started = await started_visitor(relay)
    watcher = await supervisor(relay)

    await watcher.send(
        {"type": "whisper", "conversation": started["conversation"], "body": "x"}
    )
    error = await watcher.expect("error")

    assert error["code"] == "not_found"


async def test_whisper_empty_rejected(relay: RelayServer) -> None:
    watcher = await supervisor(relay)

    await watcher.send({"type": "whisper", "conversation": "c1", "body": "  \u200b "})
    error = await watcher.expect("error")

    assert error["code"] == "empty_message"


# Joining


async def test_join_lets_supervisor_write_to_visitor(relay: RelayServer) -> None:
    volunteer_client = await sam(relay)
    visitor_client, conversation = await paired(relay, volunteer_client)
    watcher = await supervisor(relay)

    await watcher.send({"type": "join", "conversation": conversation})
    joined = await volunteer_client.expect("supervisor_joined")
    await watcher.send(
        {
            "type": "supervisor_send",
            "conversation": conversation,
            "client_id": "s1",
            "body": "I am Sofia, also here for you.",
        }
    )
    ack = await watcher.expect("ack")
    seen_by_visitor = await visitor_client.expect("message", seq=1)
    seen_by_volunteer = await volunteer_client.expect("message", seq=1)

    assert joined["name"] == "Sofia"
    assert ack["client_id"] == "s1"
    assert seen_by_visitor["author"] == "Sofia"
    assert seen_by_visitor["sender"] == "volunteer"
    assert "supervisor" not in seen_by_visitor
    assert seen_by_volunteer["mine"] is False
    assert seen_by_volunteer["supervisor"] is True


async def test_leave_stops_supervisor_writing(relay: RelayServer) -> None:
    volunteer_client = await sam(relay)
    visitor_client, conversation = await paired(relay, volunteer_client)
    watcher = await supervisor(relay)
    await watcher.send({"type": "join", "conversation": conversation})
    await volunteer_client.expect("supervisor_joined")

    await watcher.send({"type": "leave", "conversation": conversation})
    left = await volunteer_client.expect("supervisor_left")
    await watcher.send(
        {
            "type": "supervisor_send",
            "conversation": conversation,
            "client_id": "s1",
            "body": "too late",
        }
    )
    error = await watcher.expect("error")

    assert left["name"] == "Sofia"
    assert error["code"] == "forbidden"
    await visitor_client.expect_silence("message", 0.5)


# Transfers


async def test_transfer_moves_delivery(relay: RelayServer) -> None:
    sam_client = await sam(relay)
    visitor_client, conversation = await paired(relay, sam_client)
    await visitor_client.send(visitor_send("v1", "before"))
    await sam_client.expect("message", seq=1)
    alex_client = await alex(relay)
    watcher = await supervisor(relay)
    frame = await overview_where(
        watcher, lambda f: any(v["display_name"] == "Alex" for v in f["volunteers"])
    )

    await watcher.send(
        {
            "type": "transfer",
            "conversation": conversation,
            "volunteer": volunteer_id(frame, "Alex"),
        }
    )
    ended = await sam_client.expect("ended", conversation=conversation)
    assigned = await alex_client.expect("assigned", conversation=conversation)
    history = await alex_client.expect("message", seq=1)
    told = await visitor_client.expect("assigned")
    await visitor_client.send(visitor_send("v2", "after"))
    after = await alex_client.expect("message", seq=2)

    assert ended["reason"] == "transferred"
    assert assigned["transferred"] is True
    assert history["body"] == "before"
    assert told == {"type": "assigned", "volunteer": "Alex"}
    assert after["body"] == "after"
    await sam_client.expect_silence("message", 0.5)


async def test_transfer_previous_volunteer_cannot_send(relay: RelayServer) -> None:
    sam_client = await sam(relay)
    visitor_client, conversation = await paired(relay, sam_client)
    alex_client = await alex(relay)
    watcher = await supervisor(relay)
    frame = await overview_where(
        watcher, lambda f: any(v["display_name"] == "Alex" for v in f["volunteers"])
    )
    await watcher.send(
        {
            "type": "transfer",
            "conversation": conversation,
            "volunteer": volunteer_id(frame, "Alex"),
        }
    )
    await alex_client.expect("assigned", conversation=conversation)

    await sam_client.send(
        {"type": "send", "conversation": conversation, "client_id": "o1", "body": "x"}
    )
    error = await sam_client.expect("error")

    assert error["code"] == "forbidden"
    await visitor_client.expect_silence("message", 0.3)


async def test_transfer_with_messages_in_flight(relay: RelayServer) -> None:
    """Every message sent around the switch reaches the new volunteer, and the
    previous one receives nothing after being told."""
    sam_client = await sam(relay)
    visitor_client, conversation = await paired(relay, sam_client)
    alex_client = await alex(relay)
    watcher = await supervisor(relay)
    frame = await overview_where(
        watcher, lambda f: any(v["display_name"] == "Alex" for v in f["volunteers"])
    )
    count = 40

    async def flood() -> None:
        for index in range(count):
            await visitor_client.send(visitor_send(f"v{index}", f"message {index}"))

    transfer = {
        "type": "transfer",
        "conversation": conversation,
        "volunteer": volunteer_id(frame, "Alex"),
    }
    await asyncio.gather(flood(), watcher.send(transfer))
    alex_seqs: set[int] = set()
    while len(alex_seqs) < count:
        message = await alex_client.expect("message", conversation=conversation)
        alex_seqs.add(message["seq"])
    sam_frames = []
    while True:
        sam_frame = await sam_client.expect_where(
            lambda f: f["type"] in ("message", "ended")
        )
        sam_frames.append(sam_frame)
        if sam_frame["type"] == "ended":
            break

    assert alex_seqs == set(range(1, count + 1))
    assert sam_frames[-1]["reason"] == "transferred"
    sam_seqs = [f["seq"] for f in sam_frames if f["type"] == "message"]
    assert sam_seqs == list(range(1, len(sam_seqs) + 1))
    await sam_client.expect_silence("message", 0.5)


async def test_transfer_to_away_volunteer_rejected(relay: RelayServer) -> None:
    sam_client = await sam(relay)
    visitor_client, conversation = await paired(relay, sam_client)
    await alex(relay, available=False)
    watcher = await supervisor(relay)
    frame = await overview_where(
        watcher, lambda f: any(v["display_name"] == "Alex" for v in f["volunteers"])
    )

    await watcher.send(
        {
            "type": "transfer",
            "conversation": conversation,
            "volunteer": volunteer_id(frame, "Alex"),
        }
    )
    error = await watcher.expect("error")
    await visitor_client.send(visitor_send("v1", "still with Sam"))
    delivered = await sam_client.expect("message", seq=1)

    assert error["code"] == "not_available"
    assert delivered["body"] == "still with Sam"


async def test_transfer_to_full_volunteer_rejected(relay: RelayServer) -> None:
    sam_client = await sam(relay)
    _, conversation = await paired(relay, sam_client)
    alex_client = await alex(relay, capacity=1)
    await paired(relay, alex_client)
    watcher = await supervisor(relay)
    frame = await overview_where(
        watcher, lambda f: any(v["display_name"] == "Alex" for v in f["volunteers"])
    )

    await watcher.send(
        {
            "type": "transfer",
            "conversation": conversation,
            "volunteer": volunteer_id(frame, "Alex"),
        }
    )
    error = await watcher.expect("error")

    assert error["code"] == "at_capacity"


async def test_transfer_to_unknown_volunteer_not_found(relay: RelayServer) -> None:
    sam_client = await sam(relay)
    _, conversation = await paired(relay, sam_client)
    watcher = await supervisor(relay)

    await watcher.send(
        {"type": "transfer", "conversation": conversation, "volunteer": 999}
    )
    error = await watcher.expect("error")

    assert error["code"] in ("not_found", "not_available")


async def test_transfer_invalid_volunteer_field(relay: RelayServer) -> None:
    watcher = await supervisor(relay)

    await watcher.send({"type": "transfer", "conversation": "c1", "volunteer": "x"})
    error = await watcher.expect("error")

    assert error["code"] == "invalid_frame"


# Need support


async def test_need_support_alerts_supervisor(relay: RelayServer) -> None:
    watcher = await supervisor(relay)
    volunteer_client = await sam(relay)
    _, conversation = await paired(relay, volunteer_client)

    await volunteer_client.send({"type": "need_support", "conversation": conversation})
    alert = await watcher.expect("support_alert")
    requested = await volunteer_client.expect("support_requested")
    listed = await overview_where(watcher, lambda f: bool(f["alerts"]))

    assert alert["conversation"] == conversation
    assert alert["volunteer"] == "Sam"
    assert requested["supervisors_online"] == 1
    assert listed["alerts"][0]["id"] == alert["id"]
    assert listed["conversations"][0]["support_alert"] is True


async def test_need_support_without_supervisor(relay: RelayServer) -> None:
    volunteer_client = await sam(relay)
    _, conversation = await paired(relay, volunteer_client)

    await volunteer_client.send({"type": "need_support", "conversation": conversation})
    requested = await volunteer_client.expect("support_requested")

    assert requested["supervisors_online"] == 0


async def test_need_support_other_chat_forbidden(relay: RelayServer) -> None:
    sam_client = await sam(relay)
    _, conversation = await paired(relay, sam_client)
    alex_client = await alex(relay)

    await alex_client.send({"type": "need_support", "conversation": conversation})
    error = await alex_client.expect("error")

    assert error["code"] == "forbidden"


async def test_acknowledge_clears_alert(relay: RelayServer) -> None:
    watcher = await supervisor(relay)
    volunteer_client = await sam(relay)
    _, conversation = await paired(relay, volunteer_client)
    await volunteer_client.send({"type": "need_support", "conversation": conversation})
    alert = await watcher.expect("support_alert")
    await overview_where(watcher, lambda f: bool(f["alerts"]))
    # Older overviews, from before the alert, must not count as cleared.
    watcher.frames.clear()

    await watcher.send({"type": "acknowledge", "alert": alert["id"]})
    acknowledged = await watcher.expect("support_acknowledged")
    told = await volunteer_client.expect("support_acknowledged")
    cleared = await overview_where(
        watcher, lambda f: f["conversations"] and not f["alerts"]
    )
    await watcher.send({"type": "acknowledge", "alert": alert["id"]})
    again = await watcher.expect("error")

    assert acknowledged["id"] == alert["id"]
    assert told["by"] == "Sofia"
    assert told["conversation"] == conversation
    assert cleared["conversations"][0]["support_alert"] is False
    assert again["code"] == "not_found"


async def test_alert_reaches_supervisor_signing_in_later(relay: RelayServer) -> None:
    volunteer_client = await sam(relay)
    _, conversation = await paired(relay, volunteer_client)
    await volunteer_client.send({"type": "need_support", "conversation": conversation})
    await volunteer_client.expect("support_requested")

    watcher = await volunteer(relay, await supervisor_cookie(relay), hello=False)
    await watcher.send({"type": "supervise"})
    overview = await watcher.expect("overview")

    assert overview["alerts"][0]["conversation"] == conversation


# Hard chats and breaks


async def end_hard_chat(relay: RelayServer, volunteer_client: Client) -> str:
    visitor_client, conversation = await paired(relay, volunteer_client)
    await volunteer_client.send({"type": "end", "conversation": conversation})
    await volunteer_client.expect("ended", conversation=conversation)
    await volunteer_client.send({"type": "hard_chat", "conversation": conversation})
    return conversation


async def test_hard_chat_starts_break(tmp_path: Path) -> None:
    # The break must outlast the steps between marking and the refused accept,
    # which take a few seconds on a loaded machine.
    async with running_relay(tmp_path, break_seconds="6") as relay:
        watcher = await supervisor(relay)
        volunteer_client = await sam(relay)
        # Alex keeps the relay open for visitors while Sam is on a break.
        await alex(relay)
        conversation = await end_hard_chat(relay, volunteer_client)
        on_break = await volunteer_client.expect("break")
        switched_off = await volunteer_client.expect("availability")
        told = await watcher.expect("hard_chat")
        _, started = await started_visitor(relay)
        await volunteer_client.send(
            {"type": "accept", "conversation": started["conversation"]}
        )
        refused = await volunteer_client.expect("error")

        await volunteer_client.expect("break_ended", timeout=15)
        await volunteer_client.expect("availability", available=True)
        await volunteer_client.send(
            {"type": "accept", "conversation": started["conversation"]}
        )
        accepted = await volunteer_client.expect(
            "assigned", conversation=started["conversation"]
        )

    assert on_break["until"]
    assert switched_off["available"] is False
    assert told["volunteer"] == "Sam"
    assert told["conversation"] == conversation
    assert refused["code"] == "not_available"
    assert accepted["conversation"] == started["conversation"]


async def test_break_ended_early(relay: RelayServer) -> None:
    volunteer_client = await sam(relay)
    await end_hard_chat(relay, volunteer_client)
    await volunteer_client.expect("break")
    await volunteer_client.expect("availability", available=False)

    await volunteer_client.send({"type": "end_break"})
    await volunteer_client.expect("break_ended")
    back = await volunteer_client.expect("availability", available=True)

    assert back["available"] is True


async def test_switching_on_ends_break(relay: RelayServer) -> None:
    volunteer_client = await sam(relay)
    await end_hard_chat(relay, volunteer_client)
    await volunteer_client.expect("break")
    await volunteer_client.expect("availability", available=False)

    await volunteer_client.send({"type": "availability", "available": True})
    await volunteer_client.expect("break_ended")
    back = await volunteer_client.expect("availability", available=True)

    assert back["available"] is True


async def test_break_keeps_volunteer_out_of_pairing(relay: RelayServer) -> None:
    watcher = await supervisor(relay)
    volunteer_client = await sam(relay)
    await end_hard_chat(relay, volunteer_client)
    await volunteer_client.expect("break")

    overview = await overview_where(
        watcher,
        lambda f: any(
            v["display_name"] == "Sam" and v["break_until"] for v in f["volunteers"]
        ),
    )
    # With the only volunteer on a break, a new visitor hears nobody is available.
    visitor_client = await visitor(relay)
    await visitor_client.send({"type": "start"})
    unavailable = await visitor_client.expect("unavailable")

    entry = next(v for v in overview["volunteers"] if v["display_name"] == "Sam")
    assert entry["available"] is False
    assert entry["hard_today"] == 1
    assert unavailable["emergency"] == "112"


async def test_hard_chat_open_conversation_rejected(relay: RelayServer) -> None:
    volunteer_client = await sam(relay)
    _, conversation = await paired(relay, volunteer_client)

    await volunteer_client.send({"type": "hard_chat", "conversation": conversation})
    error = await volunteer_client.expect("error")

    assert error["code"] == "not_found"
    await volunteer_client.expect_silence("break", 0.3)


async def test_hard_chat_of_other_volunteer_rejected(relay: RelayServer) -> None:
    sam_client = await sam(relay)
    visitor_client, conversation = await paired(relay, sam_client)
    await visitor_client.send({"type": "end"})
    await sam_client.expect("ended")
    alex_client = await alex(relay)

    await alex_client.send({"type": "hard_chat", "conversation": conversation})
    error = await alex_client.expect("error")

    assert error["code"] == "not_found"


async def test_role_taken_away_applies_to_open_socket(relay: RelayServer) -> None:
    watcher = await supervisor(relay)
    with sqlite3.connect(relay.database) as db:
        db.execute("UPDATE volunteers SET role = 'volunteer' WHERE username = 'sofia'")

    await watcher.send({"type": "supervise"})
    error = await watcher.expect("error")

    assert error["code"] == "forbidden"


async def test_need_support_twice_keeps_one_alert(relay: RelayServer) -> None:
    watcher = await supervisor(relay)
    volunteer_client = await sam(relay)
    _, conversation = await paired(relay, volunteer_client)

    for _ in range(2):
        await volunteer_client.send(
            {"type": "need_support", "conversation": conversation}
        )
        await volunteer_client.expect("support_requested")
    first = await watcher.expect("support_alert")
    second = await watcher.expect("support_alert")

    assert first["id"] == second["id"]
    with sqlite3.connect(relay.database) as db:
        stored = db.execute("SELECT COUNT(*) FROM support_alerts").fetchone()[0]
    assert stored == 1
