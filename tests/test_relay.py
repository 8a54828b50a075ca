"""The relay over real WebSockets: pairing, delivery, resume, grace periods,
limits and origin checks, against a ``vso serve`` subprocess."""

from __future__ import annotations

import asyncio
import re
import secrets
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from itsdangerous import URLSafeTimedSerializer
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.relayserver import (
    Client,
    RelayServer,
    available_volunteer,
    started_visitor,
    visitor,
    volunteer,
)

pytestmark = pytest.mark.anyio

GRACE_SECONDS = 2.0  # both grace periods of the ``relay`` fixture
SECOND_PASSWORD = "second-volunteer-password"
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
MESSAGE_FIELDS = {"type", "conversation", "seq", "sender", "body", "sent_at"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def running_relay(directory: Path, **settings: str) -> AsyncIterator[RelayServer]:
    """Start a relay with other settings than the ``relay`` fixture's.

    Starting and stopping run in a thread, so that the test's open sockets can
    still complete the relay's close handshakes.
    """
    server = RelayServer(directory, **settings)
    await asyncio.to_thread(server.start)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.stop)


@dataclass
class Chat:
    """A visitor and a volunteer paired in one conversation."""

    visitor: Client
    volunteer: Client
    conversation: str
    token: str


async def demo_volunteer(relay: RelayServer, available: bool = True) -> Client:
    """Sign in the demo volunteer ("Sam") and open their dashboard socket."""
    assert relay.demo_password is not None
    cookie = await relay.sign_in("demo", relay.demo_password)
    if available:
        return await available_volunteer(relay, cookie)
    return await volunteer(relay, cookie)


async def second_volunteer(
    relay: RelayServer, available: bool = True, capacity: int = 2
) -> Client:
    """Add volunteer "alex" (shown as "Alex") and open their dashboard socket."""
    relay.add_volunteer("alex", "Alex", SECOND_PASSWORD, capacity=capacity)
    cookie = await relay.sign_in("alex", SECOND_PASSWORD)
    if available:
        return await available_volunteer(relay, cookie)
    return await volunteer(relay, cookie)


async def open_chat(relay: RelayServer, volunteer_client: Client) -> Chat:
    """Start a visitor and have ``volunteer_client`` accept it."""
    visitor_client, started = await started_visitor(relay)
    conversation = started["conversation"]
    await volunteer_client.send({"type": "accept", "conversation": conversation})
    await volunteer_client.expect("assigned", conversation=conversation)
    await visitor_client.expect("assigned")
    return Chat(visitor_client, volunteer_client, conversation, started["token"])


def visitor_send(client_id: str, body: str) -> dict[str, Any]:
    return {"type": "send", "client_id": client_id, "body": body}


def volunteer_send(conversation: str, client_id: str, body: str) -> dict[str, Any]:
    return {
        "type": "send",
        "conversation": conversation,
        "client_id": client_id,
        "body": body,
    }


async def resume(relay: RelayServer, token: str, last_seq: int) -> Client:
    """Open a new visitor socket and send ``resume``."""
    client = await visitor(relay)
    await client.send({"type": "resume", "token": token, "last_seq": last_seq})
    return client


async def receive_messages(client: Client, count: int) -> list[dict[str, Any]]:
    """Return the next ``count`` message frames in the order they arrived."""
    return [await client.expect("message") for _ in range(count)]


def stored_count(relay: RelayServer, sql: str, *params: object) -> int:
    """Run a ``SELECT count(*)`` on the relay's database file."""
    with sqlite3.connect(relay.database) as db:
        return int(db.execute(sql, params).fetchone()[0])


async def dashboard_csrf_token(relay: RelayServer, cookie: str) -> str:
    async with httpx.AsyncClient(
        base_url=relay.base_url, headers={"Cookie": f"vso_session={cookie}"}
    ) as client:
        page = await client.get("/dashboard")
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match is not None, "the dashboard page has no CSRF token"
    return match.group(1)


async def handshake_status(url: str, origin: str | None, cookie: str = "") -> int:
    """Open a WebSocket and return the HTTP status of a rejected handshake.

    Returns 101 when the relay accepts the handshake.
    """
    headers = {"Cookie": cookie} if cookie else {}
    try:
        connection = await connect(
            url,
            origin=origin,  # type: ignore[arg-type]
            additional_headers=headers,
        )
    except InvalidStatus as error:
        return error.response.status_code
    await connection.close()
    return 101


def tampered(cookie: str) -> str:
    """Change one character inside the signed payload of a session cookie.

    The payload's middle is used because the signature's last base64 character
    carries padding bits, so changing it may leave the signature valid.
    """
    replacement = "A" if cookie[5] != "A" else "B"
    return cookie[:5] + replacement + cookie[6:]


def add_partner_site(relay: RelayServer) -> str:
    """Add a site that allows https://partner.example and return its key."""
    result = relay.cli("site", "add", "Partner", "--origin", "https://partner.example")
    assert result.returncode == 0, result.stderr
    match = re.search(r"with key ([A-Za-z0-9_-]+)\.", result.stdout)
    assert match is not None, result.stdout
    return match.group(1)


# Pairing


async def test_pairing_assigns_both_sides(relay: RelayServer) -> None:
    volunteer_client = await demo_volunteer(relay)
    visitor_client = await visitor(relay)

    await visitor_client.send({"type": "start"})
    started = await visitor_client.expect("started")
    queued = await visitor_client.expect("queued")
    conversation = started["conversation"]
    queue = await volunteer_client.expect_where(
        lambda frame: frame["type"] == "queue" and len(frame["entries"]) == 1
    )
    await volunteer_client.send({"type": "accept", "conversation": conversation})
    volunteer_assigned = await volunteer_client.expect("assigned")
    visitor_assigned = await visitor_client.expect("assigned")

    assert queued["position"] == 1
    assert queue["entries"][0]["conversation"] == conversation
    assert queue["entries"][0]["position"] == 1
    assert TIMESTAMP.fullmatch(queue["entries"][0]["queued_at"])
    assert volunteer_assigned["conversation"] == conversation
    assert TIMESTAMP.fullmatch(volunteer_assigned["started_at"])
    # Only the display name: no username ("demo"), no id, nothing else.
    assert visitor_assigned == {"type": "assigned", "volunteer": "Sam"}


async def test_queue_entry_removed_after_accept(relay: RelayServer) -> None:
    volunteer_client = await demo_volunteer(relay)
    chat = await open_chat(relay, volunteer_client)

    queue = await volunteer_client.expect_where(
        lambda frame: frame["type"] == "queue" and not frame["entries"]
    )

    assert chat.conversation not in str(queue)


# Delivery


async def test_message_visitor_to_volunteer(relay: RelayServer) -> None:
    chat = await open_chat(relay, await demo_volunteer(relay))

    await chat.visitor.send(visitor_send("v-1", "I need to talk to someone."))
    first = await chat.visitor.receive()
    second = await chat.visitor.receive()
    delivered = await chat.volunteer.expect("message")

    assert first == {
        "type": "ack",
        "conversation": chat.conversation,
        "client_id": "v-1",
        "seq": 1,
    }
    assert second["type"] == "message"
    assert second["seq"] == 1
    assert delivered["conversation"] == chat.conversation
    assert delivered["seq"] == 1
    assert delivered["sender"] == "visitor"
    assert delivered["body"] == "I need to talk to someone."
    assert delivered["client_id"] == "v-1"
    assert TIMESTAMP.fullmatch(delivered["sent_at"])


async def test_message_volunteer_to_visitor(relay: RelayServer) -> None:
    chat = await open_chat(relay, await demo_volunteer(relay))

    await chat.volunteer.send(volunteer_send(chat.conversation, "o-1", "I am here."))
    ack = await chat.volunteer.expect_where(
        lambda frame: frame["type"] in ("ack", "message")
    )
    echo = await chat.volunteer.expect("message")
    delivered = await chat.visitor.expect("message")

    assert ack == {
        "type": "ack",
        "conversation": chat.conversation,
        "client_id": "o-1",
        "seq": 1,
    }
    assert echo["seq"] == 1
    assert delivered["sender"] == "volunteer"
    assert delivered["body"] == "I am here."
    assert delivered["seq"] == 1
    # The visitor's copy names the volunteer only by their display name.
    assert set(delivered) == MESSAGE_FIELDS | {"client_id", "author"}
    assert delivered["author"] == "Sam"


async def test_body_trimmed_and_4000_chars_accepted(relay: RelayServer) -> None:
    chat = await open_chat(relay, await demo_volunteer(relay))
    body = "a" * 4000

    await chat.visitor.send(visitor_send("v-1", f"  \n{body}\t "))
    ack = await chat.visitor.expect("ack")
    delivered = await chat.volunteer.expect("message")

    assert ack["seq"] == 1
    assert delivered["body"] == body


async def test_messages_interleaved_keep_order(relay: RelayServer) -> None:
    chat = await open_chat(relay, await demo_volunteer(relay))
    count = 50

    for index in range(count):
        await chat.visitor.send(visitor_send(f"v-{index}", f"visitor {index}"))
        await chat.volunteer.send(
            volunteer_send(chat.conversation, f"o-{index}", f"volunteer {index}")
        )
    seen_by_visitor = await receive_messages(chat.visitor, 2 * count)
    seen_by_volunteer = await receive_messages(chat.volunteer, 2 * count)

    visitor_seqs = [frame["seq"] for frame in seen_by_visitor]
    volunteer_seqs = [frame["seq"] for frame in seen_by_volunteer]
    visitor_order = [
        frame["client_id"] for frame in seen_by_visitor if frame["sender"] == "visitor"
    ]
    volunteer_order = [
        frame["client_id"]
        for frame in seen_by_volunteer
        if frame["sender"] == "volunteer"
    ]
    assert visitor_seqs == list(range(1, 2 * count + 1))
    assert volunteer_seqs == list(range(1, 2 * count + 1))
    # Dashboards also get ``mine``; everything else is the same frame.
    assert seen_by_visitor == [
        {key: value for key, value in frame.items() if key != "mine"}
        for frame in seen_by_volunteer
    ]
    assert visitor_order == [f"v-{index}" for index in range(count)]
    assert volunteer_order == [f"o-{index}" for index in range(count)]


async def test_visitor_retry_stored_once(relay: RelayServer) -> None:
    chat = await open_chat(relay, await demo_volunteer(relay))

    await chat.visitor.send(visitor_send("m-1", "Are you there?"))
    first_ack = await chat.visitor.expect("ack")
    await chat.visitor.send(visitor_send("m-1", "Are you there?"))
    second_ack = await chat.visitor.expect("ack")
    # A later message shows what the volunteer received in between.
    await chat.visitor.send(visitor_send("m-2", "Hello?"))
    delivered = await receive_messages(chat.volunteer, 2)

    assert first_ack["seq"] == 1
    assert second_ack["seq"] == 1
    assert [frame["client_id"] for frame in delivered] == ["m-1", "m-2"]
    assert [frame["seq"] for frame in delivered] == [1, 2]
    assert (
        stored_count(
            relay,
            "SELECT count(*) FROM messages WHERE conversation_id = ?"
            " AND client_id = 'm-1'",
            chat.conversation,
        )
        == 1
    )


async def test_volunteer_retry_stored_once(relay: RelayServer) -> None:
    chat = await open_chat(relay, await demo_volunteer(relay))

    await chat.volunteer.send(volunteer_send(chat.conversation, "r-1", "Hi."))
    first_ack = await chat.volunteer.expect("ack")
    await chat.volunteer.send(volunteer_send(chat.conversation, "r-1", "Hi."))
    second_ack = await chat.volunteer.expect("ack")
    await chat.volunteer.send(volunteer_send(chat.conversation, "r-2", "Take time."))
    delivered = await receive_messages(chat.visitor, 2)

    assert first_ack["seq"] == 1
    assert second_ack["seq"] == 1
    assert [frame["client_id"] for frame in delivered] == ["r-1", "r-2"]
    assert [frame["seq"] for frame in delivered] == [1, 2]


async def test_client_id_shared_by_both_sides(relay: RelayServer) -> None:
    chat = await open_chat(relay, await demo_volunteer(relay))

    await chat.visitor.send(visitor_send("m-1", "From the visitor."))
    visitor_ack = await chat.visitor.expect("ack")
    await chat.volunteer.send(volunteer_send(chat.conversation, "m-1", "From Sam."))
    volunteer_ack = await chat.volunteer.expect("ack")

    assert visitor_ack["seq"] == 1
    assert volunteer_ack["seq"] == 2


# Resume


async def test_resume_delivers_missed_messages(relay: RelayServer) -> None:
    chat = await open_chat(relay, await demo_volunteer(relay))
    await chat.visitor.send(visitor_send("v-1", "Before the drop."))
    await chat.visitor.expect("message", seq=1)

    await chat.visitor.close()
    dropped = await chat.volunteer.expect("visitor_status")
    for index in range(3):
        await chat.volunteer.send(
            volunteer_send(chat.conversation, f"o-{index}", f"missed {index}")
        )
        await chat.volunteer.expect("ack", client_id=f"o-{index}")
    resumed = await resume(relay, chat.token, last_seq=1)
    replay = [await resumed.receive() for _ in range(4)]
    back = await chat.volunteer.expect("visitor_status")
    await chat.volunteer.send(volunteer_send(chat.conversation, "o-live", "live"))
    live = await resumed.expect("message")

    assert dropped["connected"] is False
    assert replay[0] == {"type": "assigned", "volunteer": "Sam"}
    assert [frame["type"] for frame in replay[1:]] == ["message"] * 3
    assert [frame["seq"] for frame in replay[1:]] == [2, 3, 4]
    assert [frame["body"] for frame in replay[1:]] == [
        "missed 0",
        "missed 1",
        "missed 2",
    ]
    assert back["connected"] is True
    assert live["seq"] == 5


async def test_resume_from_zero_sends_transcript_once(relay: RelayServer) -> None:
    chat = await open_chat(relay, await demo_volunteer(relay))
    await chat.visitor.send(visitor_send("v-1", "one"))
    await chat.volunteer.send(volunteer_send(chat.conversation, "o-1", "two"))
    await chat.visitor.send(visitor_send("v-2", "three"))
    await receive_messages(chat.volunteer, 3)

    await chat.visitor.close()
    resumed = await resume(relay, chat.token, last_seq=0)
    await resumed.expect("assigned")
    await chat.volunteer.send(volunteer_send(chat.conversation, "o-2", "four"))
    received = await receive_messages(resumed, 4)

    assert [frame["seq"] for frame in received] == [1, 2, 3, 4]
    assert [frame["body"] for frame in received] == ["one", "two", "three", "four"]


async def test_resume_unknown_token_not_found(relay: RelayServer) -> None:
    await demo_volunteer(relay)
    await started_visitor(relay)

    resumed = await resume(relay, secrets.token_urlsafe(32), last_seq=0)
    error = await resumed.expect("error")

    assert error["code"] == "not_found"


async def test_resume_token_of_other_site_not_found(relay: RelayServer) -> None:
    key = add_partner_site(relay)
    await demo_volunteer(relay)
    _, started = await started_visitor(relay)

    client = await visitor(relay, site=key, origin="https://partner.example")
    await client.send({"type": "resume", "token": started["token"], "last_seq": 0})
    error = await client.expect("error")

    assert error["code"] == "not_found"


async def test_resume_ended_conversation_gets_ended(relay: RelayServer) -> None:
    chat = await open_chat(relay, await demo_volunteer(relay))
    await chat.visitor.send({"type": "end"})
    await chat.visitor.expect("ended")

    resumed = await resume(relay, chat.token, last_seq=0)
    ended = await resumed.expect("ended")
    await resumed.send(visitor_send("v-1", "Still there?"))
    error = await resumed.expect("error")

    assert ended["reason"] == "visitor"
    assert error["code"] == "not_started"


# Accepting


async def test_accept_race_has_one_winner(relay: RelayServer) -> None:
    sam = await demo_volunteer(relay)
    alex = await second_volunteer(relay)
    volunteers = {"Sam": sam, "Alex": alex}

    for round_number in range(10):
        visitor_client, started = await started_visitor(relay)
        conversation = started["conversation"]
        accept = {"type": "accept", "conversation": conversation}

        await asyncio.gather(sam.send(accept), alex.send(accept))
        outcomes = {
            name: await client.expect_where(
                lambda frame, conversation=conversation: (
                    frame["type"] in ("assigned", "error")
                    and frame.get("conversation") == conversation
                )
            )
            for name, client in volunteers.items()
        }
        winners = [
            name for name, outcome in outcomes.items() if outcome["type"] == "assigned"
        ]
        errors = [
            outcome for outcome in outcomes.values() if outcome["type"] == "error"
        ]
        assigned = await visitor_client.expect("assigned")

        assert len(winners) == 1, f"round {round_number}: {outcomes}"
        assert len(errors) == 1, f"round {round_number}: {outcomes}"
        assert errors[0]["code"] == "already_taken", f"round {round_number}"
        assert assigned["volunteer"] == winners[0], f"round {round_number}"

        # Free the winner's capacity for the next round.
        winner = volunteers[winners[0]]
        await winner.send({"type": "end", "conversation": conversation})
        await winner.expect("ended", conversation=conversation)
        await visitor_client.close()


async def test_accept_at_capacity_rejected(relay: RelayServer) -> None:
    volunteer_client = await demo_volunteer(relay)  # capacity 2
    await open_chat(relay, volunteer_client)
    await open_chat(relay, volunteer_client)
    _, third = await started_visitor(relay)

    await volunteer_client.send(
        {"type": "accept", "conversation": third["conversation"]}
    )
    error = await volunteer_client.expect("error")

    assert error["code"] == "at_capacity"
    assert error["conversation"] == third["conversation"]


async def test_accept_while_away_rejected(relay: RelayServer) -> None:
    volunteer_client = await demo_volunteer(relay)
    _, started = await started_visitor(relay)
    await volunteer_client.send({"type": "availability", "available": False})
    await volunteer_client.expect("availability", available=False)

    await volunteer_client.send(
        {"type": "accept", "conversation": started["conversation"]}
    )
    error = await volunteer_client.expect("error")

    assert error["code"] == "not_available"


# Queue and availability


async def test_queue_positions_after_leave(relay: RelayServer) -> None:
    await demo_volunteer(relay)
    first, _ = await started_visitor(relay)
    second, _ = await started_visitor(relay)
    third, _ = await started_visitor(relay)

    await first.send({"type": "end"})
    second_position = await second.expect("queued")
    third_position = await third.expect("queued")

    assert second_position["position"] == 1
    assert third_position["position"] == 2


async def test_queue_positions_after_accept(relay: RelayServer) -> None:
    volunteer_client = await demo_volunteer(relay)
    _, first = await started_visitor(relay)
    second, _ = await started_visitor(relay)
    third, _ = await started_visitor(relay)

    await volunteer_client.send(
        {"type": "accept", "conversation": first["conversation"]}
    )
    second_position = await second.expect("queued")
    third_position = await third.expect("queued")

    assert second_position["position"] == 1
    assert third_position["position"] == 2


async def test_start_without_volunteers_unavailable(relay: RelayServer) -> None:
    volunteer_client = await demo_volunteer(relay, available=False)
    visitor_client = await visitor(relay)

    await visitor_client.send({"type": "start"})
    unavailable = await visitor_client.expect("unavailable")
    await visitor_client.send({"type": "ping"})
    await visitor_client.expect("pong")
    await visitor_client.send(visitor_send("v-1", "Hello?"))
    error = await visitor_client.expect("error")
    await volunteer_client.send({"type": "hello", "last_seq": {}})
    queue = await volunteer_client.expect("queue")

    assert unavailable == {"type": "unavailable", "emergency": "112"}
    assert "started" not in [frame["type"] for frame in visitor_client.frames]
    assert error["code"] == "not_started"
    assert queue["entries"] == []
    assert stored_count(relay, "SELECT count(*) FROM conversations") == 0


async def test_status_follows_availability(relay: RelayServer) -> None:
    volunteer_client = await demo_volunteer(relay, available=False)
    connection = await connect(
        f"{relay.ws_url}/chat/ws?site=demo",
        origin=relay.base_url,  # type: ignore[arg-type]
    )
    idle_visitor = Client(connection)

    initial = await idle_visitor.expect("status")
    await volunteer_client.send({"type": "availability", "available": True})
    switched_on = await idle_visitor.expect("status")
    await volunteer_client.send({"type": "availability", "available": False})
    switched_off = await idle_visitor.expect("status")

    assert initial["volunteers_available"] is False
    assert switched_on["volunteers_available"] is True
    assert switched_off["volunteers_available"] is False


# Grace periods and hand-back


async def test_visitor_gone_past_grace_abandoned(relay: RelayServer) -> None:
    chat = await open_chat(relay, await demo_volunteer(relay))

    await chat.visitor.close()
    status = await chat.volunteer.expect("visitor_status")
    ended = await chat.volunteer.expect("ended", timeout=GRACE_SECONDS + 5)

    assert status["connected"] is False
    assert ended["conversation"] == chat.conversation
    assert ended["reason"] == "abandoned"


async def test_visitor_back_within_grace_continues(relay: RelayServer) -> None:
    chat = await open_chat(relay, await demo_volunteer(relay))

    await chat.visitor.close()
    await chat.volunteer.expect("visitor_status", connected=False)
    resumed = await resume(relay, chat.token, last_seq=0)
    await resumed.expect("assigned")
    await chat.volunteer.expect("visitor_status", connected=True)
    # Wait past the grace period, then check that the conversation is still open.
    await chat.volunteer.expect_silence("ended", GRACE_SECONDS + 1)
    await resumed.send(visitor_send("v-1", "Sorry, my battery died."))
    ack = await resumed.expect("ack")
    delivered = await chat.volunteer.expect("message")

    assert ack["seq"] == 1
    assert delivered["body"] == "Sorry, my battery died."


async def test_volunteer_gone_past_grace_requeues_front(relay: RelayServer) -> None:
    sam = await demo_volunteer(relay)
    alex = await second_volunteer(relay, available=False)
    chat = await open_chat(relay, sam)
    waiting, waiting_started = await started_visitor(relay)

    await sam.close()
    requeued = await chat.visitor.expect("requeued", timeout=GRACE_SECONDS + 5)
    moved = await waiting.expect("queued")
    queue = await alex.expect_where(
        lambda frame: (
            frame["type"] == "queue"
            and [entry["conversation"] for entry in frame["entries"]]
            == [chat.conversation, waiting_started["conversation"]]
        )
    )

    assert requeued["position"] == 1
    assert moved["position"] == 2
    assert queue["entries"][0]["position"] == 1


async def test_sign_out_closes_sockets_and_requeues(tmp_path: Path) -> None:
    # A long volunteer grace period shows that sign-out does not wait for it.
    async with running_relay(
        tmp_path, visitor_grace_seconds="60", volunteer_grace_seconds="60"
    ) as relay:
        assert relay.demo_password is not None
        cookie = await relay.sign_in("demo", relay.demo_password)
        first_tab = await available_volunteer(relay, cookie)
        second_tab = await volunteer(relay, cookie)
        chat = await open_chat(relay, first_tab)
        token = await dashboard_csrf_token(relay, cookie)

        async with httpx.AsyncClient(
            base_url=relay.base_url, headers={"Cookie": f"vso_session={cookie}"}
        ) as client:
            response = await client.post(
                "/dashboard/logout", data={"csrf_token": token}
            )
        first_code = await first_tab.close_code()
        second_code = await second_tab.close_code()
        requeued = await chat.visitor.expect("requeued")

        assert response.status_code == 303
        assert first_code == 4001
        assert second_code == 4001
        assert requeued["position"] == 1


# Ending


async def test_end_by_visitor(relay: RelayServer) -> None:
    chat = await open_chat(relay, await demo_volunteer(relay))

    await chat.visitor.send({"type": "end"})
    visitor_ended = await chat.visitor.expect("ended")
    volunteer_ended = await chat.volunteer.expect("ended")

    assert visitor_ended["reason"] == "visitor"
    assert volunteer_ended["reason"] == "visitor"
    assert volunteer_ended["conversation"] == chat.conversation


async def test_end_by_volunteer(relay: RelayServer) -> None:
    chat = await open_chat(relay, await demo_volunteer(relay))

    await chat.volunteer.send({"type": "end", "conversation": chat.conversation})
    visitor_ended = await chat.visitor.expect("ended")
    volunteer_ended = await chat.volunteer.expect("ended")

    assert visitor_ended["reason"] == "volunteer"
    assert volunteer_ended["reason"] == "volunteer"
    assert volunteer_ended["conversation"] == chat.conversation


async def test_visitor_send_after_end_rejected(relay: RelayServer) -> None:
    chat = await open_chat(relay, await demo_volunteer(relay))
    await chat.volunteer.send({"type": "end", "conversation": chat.conversation})
    await chat.visitor.expect("ended")

    await chat.visitor.send(visitor_send("v-1", "Wait!"))
    error = await chat.visitor.expect("error")

    assert error["code"] == "conversation_ended"
    assert error["client_id"] == "v-1"


async def test_volunteer_send_after_end_rejected(relay: RelayServer) -> None:
    chat = await open_chat(relay, await demo_volunteer(relay))
    await chat.visitor.send({"type": "end"})
    await chat.volunteer.expect("ended")

    await chat.volunteer.send(volunteer_send(chat.conversation, "o-1", "Take care."))
    error = await chat.volunteer.expect("error")

    assert error["code"] == "conversation_ended"
    assert error["client_id"] == "o-1"


async def test_send_to_other_volunteers_chat_forbidden(relay: RelayServer) -> None:
    sam = await demo_volunteer(relay)
    alex = await second_volunteer(relay)
    chat = await open_chat(relay, sam)

    await alex.send(volunteer_send(chat.conversation, "x-1", "Not my chat."))
    error = await alex.expect("error")
    await sam.send(volunteer_send(chat.conversation, "o-1", "Hello."))
    to_visitor = await chat.visitor.expect("message")
    to_sam = await sam.expect("message")

    assert error["code"] == "forbidden"
    assert error["client_id"] == "x-1"
    # The first message either side receives is Sam's, stored as seq 1.
    assert to_visitor["client_id"] == "o-1"
    assert to_visitor["seq"] == 1
    assert to_sam["client_id"] == "o-1"


async def test_send_to_waiting_visitor_forbidden(relay: RelayServer) -> None:
    volunteer_client = await demo_volunteer(relay)
    waiting, started = await started_visitor(relay)

    await volunteer_client.send(
        volunteer_send(started["conversation"], "o-1", "Not accepted yet.")
    )
    error = await volunteer_client.expect("error")
    await waiting.send(visitor_send("v-1", "Anyone?"))
    ack = await waiting.expect("ack")

    assert error["code"] == "forbidden"
    assert ack["seq"] == 1


# Bad input and limits

# Each case is a label and a frame. A bytes frame is sent as a binary message.
MALFORMED_FRAMES: list[tuple[str, str | bytes]] = [
    ("malformed JSON", '{"type": "send",'),
    ("JSON array", '["send"]'),
    ("JSON string", '"send"'),
    ("no type", "{}"),
    ("unknown type", '{"type": "dance"}'),
    ("binary frame", b'{"type": "ping"}'),
]


async def send_raw(client: Client, frame: str | bytes) -> None:
    await client.connection.send(frame)


async def test_visitor_socket_bad_frames(relay: RelayServer) -> None:
    await demo_volunteer(relay)
    client, _ = await started_visitor(relay)
    cases: list[tuple[str, str | bytes | dict[str, Any], str]] = [
        *((label, frame, "invalid_frame") for label, frame in MALFORMED_FRAMES),
        ("bad client_id", visitor_send("has space", "hi"), "invalid_frame"),
        (
            "number body",
            {"type": "send", "client_id": "b-0", "body": 5},
            "invalid_frame",
        ),
        (
            "negative last_seq",
            {"type": "resume", "token": "t" * 43, "last_seq": -1},
            "invalid_frame",
        ),
        (
            "short token",
            {"type": "resume", "token": "abc", "last_seq": 0},
            "invalid_frame",
        ),
        ("empty body", visitor_send("b-1", ""), "empty_message"),
        ("white space body", visitor_send("b-2", " \n\t "), "empty_message"),
        ("4001 characters", visitor_send("b-3", "a" * 4001), "message_too_long"),
    ]

    for label, frame, code in cases:
        if isinstance(frame, bytes):
            await send_raw(client, frame)
        else:
            await client.send(frame)
        error = await client.expect("error")
        assert error["code"] == code, label

    await client.send(visitor_send("ok-1", "A valid message."))
    ack = await client.expect("ack")
    assert ack["client_id"] == "ok-1"
    assert ack["seq"] == 1


async def test_visitor_body_error_names_client_id(relay: RelayServer) -> None:
    await demo_volunteer(relay)
    client, _ = await started_visitor(relay)

    await client.send(visitor_send("b-1", "   "))
    error = await client.expect("error")

    assert error["client_id"] == "b-1"


async def test_volunteer_socket_bad_frames(relay: RelayServer) -> None:
    volunteer_client = await demo_volunteer(relay)
    chat = await open_chat(relay, volunteer_client)
    conversation = chat.conversation
    cases: list[tuple[str, str | bytes | dict[str, Any], str]] = [
        *((label, frame, "invalid_frame") for label, frame in MALFORMED_FRAMES),
        (
            "availability not bool",
            {"type": "availability", "available": "yes"},
            "invalid_frame",
        ),
        ("accept without conversation", {"type": "accept"}, "invalid_frame"),
        ("hello last_seq list", {"type": "hello", "last_seq": []}, "invalid_frame"),
        ("send without conversation", visitor_send("b-0", "hi"), "invalid_frame"),
        ("empty body", volunteer_send(conversation, "b-1", ""), "empty_message"),
        (
            "white space body",
            volunteer_send(conversation, "b-2", "  \n "),
            "empty_message",
        ),
        (
            "4001 characters",
            volunteer_send(conversation, "b-3", "a" * 4001),
            "message_too_long",
        ),
    ]

    for label, frame, code in cases:
        if isinstance(frame, bytes):
            await send_raw(volunteer_client, frame)
        else:
            await volunteer_client.send(frame)
        error = await volunteer_client.expect("error")
        assert error["code"] == code, label

    await volunteer_client.send(volunteer_send(conversation, "ok-1", "Valid."))
    ack = await volunteer_client.expect("ack")
    assert ack["client_id"] == "ok-1"
    assert ack["seq"] == 1


async def test_escaped_message_at_limit_accepted(relay: RelayServer) -> None:
    chat = await open_chat(relay, await demo_volunteer(relay))
    body = "\U0001f600" * 4000
    # json.dumps escapes each emoji as a 12-byte surrogate pair: 48 KB in all.
    await chat.visitor.send({"type": "send", "client_id": "emoji", "body": body})
    ack = await chat.visitor.expect("ack")
    message = await chat.volunteer.expect("message")

    assert ack["seq"] == 1
    assert message["body"] == body


async def test_frame_over_64_kib_closes_1009(relay: RelayServer) -> None:
    chat = await open_chat(relay, await demo_volunteer(relay))
    sender = await visitor(relay)
    body = "a" * 65536
    oversized = f'{{"type": "send", "client_id": "big", "body": "{body}"}}'

    await send_raw(sender, oversized)
    code = await sender.close_code()
    await chat.visitor.send(visitor_send("v-1", "Still here."))
    ack = await chat.visitor.expect("ack")
    newcomer = await visitor(relay)
    await newcomer.send({"type": "ping"})
    pong = await newcomer.expect("pong")

    assert code == 1009
    assert ack["seq"] == 1
    assert pong == {"type": "pong"}


async def test_invalid_frames_over_20_close_1008(relay: RelayServer) -> None:
    client = await visitor(relay)

    for _ in range(20):
        await send_raw(client, "not json")
        await client.expect("error", code="invalid_frame")
    await client.send({"type": "ping"})
    pong = await client.expect("pong")
    await send_raw(client, "not json")
    code = await client.close_code()

    assert pong == {"type": "pong"}
    assert code == 1008


async def test_send_before_start_not_started(relay: RelayServer) -> None:
    client = await visitor(relay)

    await client.send(visitor_send("v-1", "Hello?"))
    error = await client.expect("error")

    assert error["code"] == "not_started"
    assert error["client_id"] == "v-1"


async def test_end_before_start_not_started(relay: RelayServer) -> None:
    client = await visitor(relay)

    await client.send({"type": "end"})
    error = await client.expect("error")

    assert error["code"] == "not_started"


async def test_start_twice_already_started(relay: RelayServer) -> None:
    await demo_volunteer(relay)
    client, _ = await started_visitor(relay)

    await client.send({"type": "start"})
    error = await client.expect("error")

    assert error["code"] == "already_started"


async def test_resume_on_started_socket_already_started(relay: RelayServer) -> None:
    await demo_volunteer(relay)
    client, started = await started_visitor(relay)

    await client.send({"type": "resume", "token": started["token"], "last_seq": 0})
    error = await client.expect("error")

    assert error["code"] == "already_started"


# Origins and authentication of the sockets


async def test_visitor_foreign_origins_rejected(relay: RelayServer) -> None:
    other_port = relay.port + 1 if relay.port < 65535 else relay.port - 1
    origins = [
        "http://evil.example",
        f"http://127.0.0.1:{other_port}",
        f"https://127.0.0.1:{relay.port}",
        f"http://127.0.0.1.evil.example:{relay.port}",
        "http://127.0.0.1.evil.example",
        "null",
        None,
    ]

    for origin in origins:
        status = await handshake_status(f"{relay.ws_url}/chat/ws?site=demo", origin)
        assert status == 403, origin


async def test_visitor_site_origin_accepted(relay: RelayServer) -> None:
    key = add_partner_site(relay)

    client = await visitor(relay, site=key, origin="https://partner.example")
    await client.send({"type": "ping"})
    pong = await client.expect("pong")

    assert pong == {"type": "pong"}


async def test_visitor_origin_of_other_site_rejected(relay: RelayServer) -> None:
    add_partner_site(relay)

    status = await handshake_status(
        f"{relay.ws_url}/chat/ws?site=demo", "https://partner.example"
    )

    assert status == 403


async def test_visitor_unknown_site_closed_1008(relay: RelayServer) -> None:
    connection = await connect(
        f"{relay.ws_url}/chat/ws?site=no-such-site",
        origin=relay.base_url,  # type: ignore[arg-type]
    )
    code = await Client(connection).close_code()

    assert code == 1008


async def test_volunteer_socket_rejected(relay: RelayServer) -> None:
    assert relay.demo_password is not None
    cookie = await relay.sign_in("demo", relay.demo_password)
    forged = URLSafeTimedSerializer(
        "another-secret-key-" + "y" * 32, salt="vso-session"
    )
    url = f"{relay.ws_url}/dashboard/ws"
    cases = [
        ("no cookie", relay.base_url, ""),
        ("forged cookie", relay.base_url, f"vso_session={forged.dumps('x' * 43)}"),
        ("tampered cookie", relay.base_url, f"vso_session={tampered(cookie)}"),
        ("foreign origin", "http://evil.example", f"vso_session={cookie}"),
        ("no origin", None, f"vso_session={cookie}"),
    ]

    for label, origin, cookie_header in cases:
        status = await handshake_status(url, origin, cookie_header)
        assert status == 403, label

    accepted = await handshake_status(url, relay.base_url, f"vso_session={cookie}")
    assert accepted == 101


# Restart


async def test_shutdown_closes_sockets_1012(relay: RelayServer) -> None:
    chat = await open_chat(relay, await demo_volunteer(relay))

    await asyncio.to_thread(relay.stop)
    visitor_code = await chat.visitor.close_code()
    volunteer_code = await chat.volunteer.close_code()

    assert visitor_code == 1012
    assert volunteer_code == 1012


async def test_restart_keeps_open_conversation(tmp_path: Path) -> None:
    # Long grace periods, so that nothing expires while the relay restarts.
    async with running_relay(
        tmp_path, visitor_grace_seconds="60", volunteer_grace_seconds="60"
    ) as relay:
        assert relay.demo_password is not None
        cookie = await relay.sign_in("demo", relay.demo_password)
        chat = await open_chat(relay, await available_volunteer(relay, cookie))
        await chat.visitor.send(visitor_send("v-1", "Before the restart."))
        await chat.volunteer.send(volunteer_send(chat.conversation, "o-1", "Noted."))
        await receive_messages(chat.visitor, 2)

        await asyncio.to_thread(relay.stop)
        await asyncio.to_thread(relay.start)
        resumed = await resume(relay, chat.token, last_seq=0)
        assigned = await resumed.expect("assigned")
        replay = await receive_messages(resumed, 2)
        dashboard = await volunteer(relay, cookie, hello=False)
        await dashboard.send({"type": "hello", "last_seq": {chat.conversation: 2}})
        state = await dashboard.expect("state")
        await dashboard.send(volunteer_send(chat.conversation, "o-2", "Still here."))
        live = await resumed.expect("message")

        assert assigned["volunteer"] == "Sam"
        assert [frame["body"] for frame in replay] == [
            "Before the restart.",
            "Noted.",
        ]
        assert [chat_entry["conversation"] for chat_entry in state["chats"]] == [
            chat.conversation
        ]
        assert state["chats"][0]["visitor_connected"] is True
        assert live["seq"] == 3


# Logs


async def run_full_conversation(relay: RelayServer, marker: str) -> None:
    """Pair, exchange messages containing ``marker`` and end the conversation."""
    chat = await open_chat(relay, await demo_volunteer(relay))
    await chat.visitor.send(visitor_send("v-1", f"visitor says {marker}"))
    await chat.volunteer.send(
        volunteer_send(chat.conversation, "o-1", f"volunteer says {marker}")
    )
    await receive_messages(chat.visitor, 2)
    await chat.visitor.send({"type": "end"})
    await chat.volunteer.expect("ended")


def client_ports_in(log: str, server_port: int) -> set[int]:
    """Return ports of ``127.0.0.1:PORT`` mentions other than the server's."""
    ports = {int(port) for port in re.findall(r"127\.0\.0\.1:(\d+)", log)}
    return ports - {server_port}


async def test_log_omits_bodies_and_addresses(relay: RelayServer) -> None:
    marker = f"private-{secrets.token_hex(8)}"

    await run_full_conversation(relay, marker)
    await asyncio.to_thread(relay.stop)
    log = relay.log()

    assert marker not in log
    assert client_ports_in(log, relay.port) == set()


async def test_log_at_info_omits_bodies_and_addresses(tmp_path: Path) -> None:
    marker = f"private-{secrets.token_hex(8)}"

    async with running_relay(
        tmp_path,
        visitor_grace_seconds="2",
        volunteer_grace_seconds="2",
        log_level="info",
    ) as relay:
        await run_full_conversation(relay, marker)
    log = relay.log()

    assert marker not in log
    assert client_ports_in(log, relay.port) == set()


async def test_restart_keeps_availability(tmp_path: Path) -> None:
    async with running_relay(tmp_path, volunteer_grace_seconds="60") as relay:
        assert relay.demo_password is not None
        cookie = await relay.sign_in("demo", relay.demo_password)
        await available_volunteer(relay, cookie)

        await asyncio.to_thread(relay.stop)
        await asyncio.to_thread(relay.start)
        dashboard = await volunteer(relay, cookie, hello=False)
        await dashboard.send({"type": "hello", "last_seq": {}})
        state = await dashboard.expect("state")
        client = await visitor(relay)
        await client.send({"type": "start"})
        started = await client.expect("started")

        assert state["available"] is True
        assert started["conversation"]


# Who counts as available


async def test_waiting_visitor_told_nobody_left(relay: RelayServer) -> None:
    dashboard = await demo_volunteer(relay)
    waiting, _ = await started_visitor(relay)

    await dashboard.send({"type": "availability", "available": False})
    status = await waiting.expect("status")

    assert status["volunteers_available"] is False


async def test_disconnected_volunteer_not_counted(tmp_path: Path) -> None:
    async with running_relay(tmp_path, volunteer_grace_seconds="60") as relay:
        dashboard = await demo_volunteer(relay)
        idle = await visitor(relay)

        await dashboard.close()
        status = await idle.expect("status")
        await idle.send({"type": "start"})
        answer = await idle.expect("unavailable")

        assert status["volunteers_available"] is False
        assert answer["emergency"] == "112"


async def test_reconnected_volunteer_counted_again(tmp_path: Path) -> None:
    async with running_relay(tmp_path, volunteer_grace_seconds="60") as relay:
        assert relay.demo_password is not None
        cookie = await relay.sign_in("demo", relay.demo_password)
        dashboard = await available_volunteer(relay, cookie)
        idle = await visitor(relay)

        await dashboard.close()
        await idle.expect("status", volunteers_available=False)
        await volunteer(relay, cookie)
        status = await idle.expect("status")

        assert status["volunteers_available"] is True


# Authors after a hand-back


async def test_handed_back_chat_names_earlier_author(relay: RelayServer) -> None:
    alex = await second_volunteer(relay)
    chat = await open_chat(relay, await demo_volunteer(relay))
    await chat.volunteer.send(volunteer_send(chat.conversation, "o-1", "Hello."))
    await chat.visitor.expect("message", seq=1)

    await chat.volunteer.close()
    await chat.visitor.expect("requeued", timeout=GRACE_SECONDS + 5)
    await alex.send({"type": "accept", "conversation": chat.conversation})
    earlier = await alex.expect("message", seq=1)
    await alex.send(volunteer_send(chat.conversation, "a-1", "I am here now."))
    own = await alex.expect("message", seq=2)
    seen_by_visitor = await chat.visitor.expect("message", seq=2)

    assert earlier["author"] == "Sam"
    assert earlier["mine"] is False
    assert own["author"] == "Alex"
    assert own["mine"] is True
    assert seen_by_visitor["author"] == "Alex"
    assert "mine" not in seen_by_visitor
