"""Visitor safety and privacy against a real relay: encryption at rest, deletion,
retention, blocking, rate limits, sign-in throttling and what the log holds."""

from __future__ import annotations

import asyncio
import re
import secrets
import sqlite3
import stat
import time
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from relay.crypto import new_key_text
from tests.relayserver import Client, RelayServer, visitor
from tests.test_relay import (
    add_partner_site,
    demo_volunteer,
    handshake_status,
    open_chat,
    running_relay,
    second_volunteer,
    visitor_send,
    volunteer_send,
)

pytestmark = pytest.mark.anyio

POLL_SECONDS = 10.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def query(database: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple]:
    """Read the relay's database the way an operator's copy would be read."""
    with sqlite3.connect(database) as db:
        return list(db.execute(sql, params))


def database_bytes(database: Path) -> bytes:
    """Return the database file and its write-ahead log, as a copy would hold."""
    parts = [database, database.with_name(database.name + "-wal")]
    return b"".join(path.read_bytes() for path in parts if path.exists())


async def wait_until_gone(database: Path, conversation: str) -> bool:
    deadline = time.monotonic() + POLL_SECONDS
    while time.monotonic() < deadline:
        rows = query(
            database, "SELECT 1 FROM conversations WHERE id = ?", (conversation,)
        )
        if not rows:
            return True
        await asyncio.sleep(0.1)
    return False


# Encryption at rest


async def test_message_body_not_in_database_file(relay: RelayServer) -> None:
    chat = await open_chat(relay, await demo_volunteer(relay))
    marker = "marker-" + secrets.token_hex(8)

    await chat.visitor.send(visitor_send("m-1", f"He hurt me again {marker}"))
    delivered = await chat.volunteer.expect("message", seq=1)
    stored = query(relay.database, "SELECT body FROM messages")

    assert marker in delivered["body"]
    assert marker.encode() not in database_bytes(relay.database)
    assert stored[0][0].startswith("vso1:")


async def test_data_key_generated_beside_database(relay: RelayServer) -> None:
    key_file = relay.database.parent / "data_key"

    assert key_file.exists()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert "generated a data key" in relay.log()


async def test_rotate_key_old_key_no_longer_needed(tmp_path: Path) -> None:
    old_key, new_key = new_key_text(), new_key_text()
    async with running_relay(tmp_path, data_key=old_key) as relay:
        chat = await open_chat(relay, await demo_volunteer(relay))
        await chat.visitor.send(visitor_send("m-1", "before the rotation"))
        await chat.volunteer.expect("message", seq=1)
        token = chat.token
        await chat.visitor.close()
    relay.env["VSO_DATA_KEY"] = f"{new_key} {old_key}"
    result = relay.cli("rotate-key")
    relay.env["VSO_DATA_KEY"] = new_key
    await asyncio.to_thread(relay.start)
    try:
        client = await visitor(relay)
        await client.send({"type": "resume", "token": token, "last_seq": 0})
        message = await client.expect("message", seq=1)
    finally:
        await asyncio.to_thread(relay.stop)

    assert result.returncode == 0, result.stderr
    assert "Sealed 1 messages" in result.stdout
    assert message["body"] == "before the rotation"


async def test_serve_invalid_data_key_exits(tmp_path: Path) -> None:
    relay = RelayServer(tmp_path, data_key="too-short")

    result = relay.cli("serve")

    assert result.returncode == 2
    assert "VSO_DATA_KEY is invalid" in result.stderr


# Deletion by the visitor


async def test_visitor_delete_removes_rows(relay: RelayServer) -> None:
    chat = await open_chat(relay, await demo_volunteer(relay))
    await chat.visitor.send(visitor_send("m-1", "please forget this"))
    await chat.volunteer.expect("message", seq=1)
    await chat.visitor.send({"type": "end"})
    await chat.visitor.expect("ended")

    await chat.visitor.send({"type": "delete", "token": chat.token})
    deleted = await chat.visitor.expect("deleted")
    told = await chat.volunteer.expect("deleted", conversation=chat.conversation)
    conversations = query(relay.database, "SELECT id FROM conversations")
    messages = query(relay.database, "SELECT seq FROM messages")
    counts = query(
        relay.database, "SELECT status, end_reason, count FROM conversation_counts"
    )

    assert deleted["conversation"] == chat.conversation
    assert told["conversation"] == chat.conversation
    assert conversations == []
    assert messages == []
    assert counts == [("ended", "visitor", 1)]


async def test_visitor_delete_open_chat_ends_it_first(relay: RelayServer) -> None:
    chat = await open_chat(relay, await demo_volunteer(relay))

    await chat.visitor.send({"type": "delete", "token": chat.token})
    ended = await chat.volunteer.expect("ended", conversation=chat.conversation)
    await chat.visitor.expect("deleted")

    assert ended["reason"] == "visitor"
    assert await wait_until_gone(relay.database, chat.conversation)


async def test_visitor_delete_unknown_token_not_found(relay: RelayServer) -> None:
    client = await visitor(relay)

    await client.send({"type": "delete", "token": "x" * 43})
    error = await client.expect("error")

    assert error["code"] == "not_found"


async def test_visitor_deleted_token_cannot_resume(relay: RelayServer) -> None:
    chat = await open_chat(relay, await demo_volunteer(relay))
    await chat.visitor.send({"type": "delete", "token": chat.token})
    await chat.visitor.expect("deleted")

    client = await visitor(relay)
    await client.send({"type": "resume", "token": chat.token, "last_seq": 0})
    error = await client.expect("error")

    assert error["code"] == "not_found"


# Retention


async def test_purge_command_deletes_closed_conversations(relay: RelayServer) -> None:
    chat = await open_chat(relay, await demo_volunteer(relay))
    await chat.visitor.send(visitor_send("m-1", "old news"))
    await chat.volunteer.expect("message", seq=1)
    await chat.visitor.send({"type": "end"})
    await chat.visitor.expect("ended")

    result = relay.cli("purge", "--days", "0")
    messages = query(relay.database, "SELECT seq FROM messages")
    counts = query(
        relay.database, "SELECT channel, status, count FROM conversation_counts"
    )

    assert result.returncode == 0, result.stderr
    assert "Deleted 1 conversations" in result.stdout
    assert messages == []
    assert counts == [("chat", "ended", 1)]


async def test_purge_command_keeps_open_conversations(relay: RelayServer) -> None:
    chat = await open_chat(relay, await demo_volunteer(relay))

    result = relay.cli("purge", "--days", "0")
    rows = query(relay.database, "SELECT status FROM conversations")

    assert "Deleted 0 conversations" in result.stdout
    assert rows == [("active",)]
    await chat.visitor.close()


async def test_purge_command_keeps_recent_conversations(relay: RelayServer) -> None:
    chat = await open_chat(relay, await demo_volunteer(relay))
    await chat.visitor.send({"type": "end"})
    await chat.visitor.expect("ended")

    result = relay.cli("purge")
    rows = query(relay.database, "SELECT status FROM conversations")

    assert "Deleted 0 conversations closed more than 30 days ago" in result.stdout
    assert rows == [("ended",)]


async def test_retention_task_purges_in_background(tmp_path: Path) -> None:
    async with running_relay(
        tmp_path, retention_days="0", purge_interval_seconds="0.2"
    ) as relay:
        chat = await open_chat(relay, await demo_volunteer(relay))
        await chat.visitor.send({"type": "end"})
        await chat.visitor.expect("ended")

        gone = await wait_until_gone(relay.database, chat.conversation)

    assert gone
    assert "purged 1 conversations" in relay.log()


# Blocking


async def test_block_ends_chat_as_blocked(relay: RelayServer) -> None:
    chat = await open_chat(relay, await demo_volunteer(relay))

    await chat.volunteer.send({"type": "block", "conversation": chat.conversation})
    visitor_ended = await chat.visitor.expect("ended")
    volunteer_ended = await chat.volunteer.expect("ended")

    assert visitor_ended["reason"] == "blocked"
    assert volunteer_ended["reason"] == "blocked"


async def test_block_token_no_longer_sends(relay: RelayServer) -> None:
    chat = await open_chat(relay, await demo_volunteer(relay))
    await chat.volunteer.send({"type": "block", "conversation": chat.conversation})
    await chat.visitor.expect("ended")

    client = await visitor(relay)
    await client.send({"type": "resume", "token": chat.token, "last_seq": 0})
    ended = await client.expect("ended")
    await client.send(visitor_send("m-9", "still here"))
    error = await client.expect("error")

    assert ended["reason"] == "blocked"
    assert error["code"] == "not_started"


async def test_block_refuses_new_start_with_help(relay: RelayServer) -> None:
    chat = await open_chat(relay, await demo_volunteer(relay))
    await chat.volunteer.send({"type": "block", "conversation": chat.conversation})
    await chat.visitor.expect("ended")

    client = await visitor(relay)
    await client.send({"type": "start"})
    error = await client.expect("error")

    assert error["code"] == "blocked"
    assert "112" in error["message"]
    assert {"name": "Supportline, 24 hours, free", "number": "179"} in error["help"]


async def test_block_other_volunteers_chat_forbidden(relay: RelayServer) -> None:
    chat = await open_chat(relay, await demo_volunteer(relay))
    other = await second_volunteer(relay)

    await other.send({"type": "block", "conversation": chat.conversation})
    error = await other.expect("error")
    await chat.visitor.send(visitor_send("m-1", "still open"))
    ack = await chat.visitor.expect("ack")

    assert error["code"] == "forbidden"
    assert ack["seq"] == 1


# Rate limits


async def test_messages_rate_limited_per_conversation(relay: RelayServer) -> None:
    chat = await open_chat(relay, await demo_volunteer(relay))
    count = 70

    for index in range(count):
        await chat.visitor.send(visitor_send(f"m-{index}", f"message {index}"))
    error = await chat.visitor.expect("error")
    stored = query(relay.database, "SELECT COUNT(*) FROM messages")[0][0]

    assert error["code"] == "rate_limited"
    assert "116 006" in error["message"]
    assert error["client_id"].startswith("m-")
    assert stored < count


async def test_rate_limit_leaves_other_conversations(relay: RelayServer) -> None:
    volunteer_client = await demo_volunteer(relay)
    busy = await open_chat(relay, volunteer_client)
    calm = await open_chat(relay, volunteer_client)

    for index in range(70):
        await busy.visitor.send(visitor_send(f"m-{index}", "flood"))
    await busy.visitor.expect("error", code="rate_limited")
    await calm.visitor.send(visitor_send("c-1", "hello"))
    ack = await calm.visitor.expect("ack")

    assert ack["seq"] == 1


async def test_starts_rate_limited_per_address(relay: RelayServer) -> None:
    await demo_volunteer(relay)
    errors = []

    for _ in range(21):
        client = await visitor(relay)
        await client.send({"type": "start"})
        frame = await client.expect_where(
            lambda frame: frame["type"] in ("started", "error")
        )
        if frame["type"] == "error":
            errors.append(frame["code"])
        await client.close()

    assert errors == ["rate_limited"]


async def test_volunteer_messages_not_rate_limited(relay: RelayServer) -> None:
    chat = await open_chat(relay, await demo_volunteer(relay))

    for index in range(70):
        await chat.volunteer.send(
            volunteer_send(chat.conversation, f"o-{index}", f"reply {index}")
        )
    last = await chat.volunteer.expect("ack", client_id="o-69")

    assert last["seq"] == 70


# Sign-in throttling


async def sign_in_status(relay: RelayServer, password: str) -> int:
    async with httpx.AsyncClient(base_url=relay.base_url) as client:
        page = await client.get("/dashboard")
        match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert match is not None
        response = await client.post(
            "/dashboard/login",
            data={"username": "demo", "password": password, "csrf_token": match[1]},
        )
        return response.status_code


async def test_sign_in_throttled_per_account(relay: RelayServer) -> None:
    statuses = [await sign_in_status(relay, "wrong password!") for _ in range(5)]

    throttled = await sign_in_status(relay, relay.demo_password or "")

    assert statuses == [401] * 5
    assert throttled == 429


# Logs


async def test_log_free_of_content_for_full_conversation(relay: RelayServer) -> None:
    assert relay.demo_password is not None
    cookie = await relay.sign_in("demo", relay.demo_password)
    chat = await open_chat(relay, await demo_volunteer(relay))
    visitor_text = "visitor-secret-" + secrets.token_hex(6)
    volunteer_text = "volunteer-secret-" + secrets.token_hex(6)
    await chat.visitor.send(visitor_send("m-1", visitor_text))
    await chat.volunteer.expect("message", seq=1)
    await chat.volunteer.send(volunteer_send(chat.conversation, "o-1", volunteer_text))
    await chat.visitor.expect("message", seq=2)
    await chat.visitor.send({"type": "end"})
    await chat.visitor.expect("ended")
    await chat.visitor.send({"type": "delete", "token": chat.token})
    await chat.visitor.expect("deleted")
    await asyncio.to_thread(relay.stop)
    log = relay.log()
    client_addresses = {
        port
        for port in re.findall(r"127\.0\.0\.1:(\d+)", log)
        if port != str(relay.port)
    }

    assert f"conversation {chat.conversation}" in log
    assert visitor_text not in log
    assert volunteer_text not in log
    assert chat.token not in log
    assert cookie not in log
    assert client_addresses == set()


# Deletion by plain form, for pages without scripts


async def post_delete(
    relay: RelayServer, data: dict[str, str], headers: dict[str, str] | None = None
) -> httpx.Response:
    async with httpx.AsyncClient(base_url=relay.base_url) as client:
        return await client.post(
            "/chat/delete?site=demo", data=data, headers=headers or {}
        )


async def test_delete_form_deletes_conversation(relay: RelayServer) -> None:
    chat = await open_chat(relay, await demo_volunteer(relay))

    response = await post_delete(relay, {"token": chat.token, "confirm": "yes"})
    told = await chat.volunteer.expect("deleted", conversation=chat.conversation)

    assert response.status_code == 200
    assert "This conversation is deleted" in response.text
    assert told["conversation"] == chat.conversation
    assert query(relay.database, "SELECT id FROM conversations") == []


async def test_delete_form_without_confirm_keeps_it(relay: RelayServer) -> None:
    chat = await open_chat(relay, await demo_volunteer(relay))

    response = await post_delete(relay, {"token": chat.token})

    assert response.status_code == 400
    assert query(relay.database, "SELECT status FROM conversations") == [("active",)]


async def test_delete_form_cross_site_403(relay: RelayServer) -> None:
    chat = await open_chat(relay, await demo_volunteer(relay))

    response = await post_delete(
        relay,
        {"token": chat.token, "confirm": "yes"},
        {"Sec-Fetch-Site": "cross-site"},
    )

    assert response.status_code == 403
    assert query(relay.database, "SELECT status FROM conversations") == [("active",)]


async def test_delete_form_unknown_token_404(relay: RelayServer) -> None:
    response = await post_delete(relay, {"token": "y" * 43, "confirm": "yes"})

    assert response.status_code == 404
    assert "Nothing to delete" in response.text


async def test_delete_form_page_has_quick_exit(relay: RelayServer) -> None:
    response = await post_delete(relay, {"token": "y" * 43, "confirm": "yes"})

    assert 'id="quick-exit"' in response.text
    assert response.headers["cache-control"] == "no-store"


# Honeypot


async def test_sign_in_honeypot_filled_rejected(relay: RelayServer) -> None:
    async with httpx.AsyncClient(base_url=relay.base_url) as client:
        page = await client.get("/dashboard")
        match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert match is not None
        response = await client.post(
            "/dashboard/login",
            data={
                "username": "demo",
                "password": relay.demo_password or "",
                "website": "http://spam.example",
                "csrf_token": match[1],
            },
        )

    assert response.status_code == 401
    assert client.cookies.get("vso_session") is None


# Cross-site WebSocket hijacking and other volunteers' chats


@pytest.mark.parametrize(
    "origin",
    [
        "http://partner.example",
        "https://partner.example:8443",
        "https://partner.example.evil.example",
        "https://www.partner.example",
        "https://partner-example.com",
    ],
)
async def test_visitor_origin_near_miss_rejected(
    relay: RelayServer, origin: str
) -> None:
    key = add_partner_site(relay)

    status = await handshake_status(f"{relay.ws_url}/chat/ws?site={key}", origin)

    assert status == 403


async def test_dashboard_socket_partner_origin_rejected(relay: RelayServer) -> None:
    add_partner_site(relay)
    assert relay.demo_password is not None
    cookie = await relay.sign_in("demo", relay.demo_password)

    status = await handshake_status(
        f"{relay.ws_url}/dashboard/ws",
        "https://partner.example",
        cookie=f"vso_session={cookie}",
    )

    assert status == 403


async def test_hello_other_volunteers_chat_not_sent(relay: RelayServer) -> None:
    chat = await open_chat(relay, await demo_volunteer(relay))
    await chat.visitor.send(visitor_send("m-1", "for Sam only"))
    await chat.volunteer.expect("message", seq=1)
    other = await second_volunteer(relay)

    await other.send({"type": "hello", "last_seq": {chat.conversation: 0}})
    state = await other.expect("state")
    await other.expect("queue")

    assert state["chats"] == []
    await other.expect_silence("message", 0.5)


async def test_end_other_volunteers_chat_forbidden(relay: RelayServer) -> None:
    chat = await open_chat(relay, await demo_volunteer(relay))
    other = await second_volunteer(relay)

    await other.send({"type": "end", "conversation": chat.conversation})
    error = await other.expect("error")

    assert error["code"] == "forbidden"


async def start_via_proxy(relay: RelayServer, forwarded_for: str) -> str:
    """Start a chat as if through a reverse proxy; return the frame type."""
    connection = await connect(
        f"{relay.ws_url}/chat/ws?site=demo",
        origin=relay.base_url,  # type: ignore[arg-type]
        additional_headers={"X-Forwarded-For": forwarded_for},
    )
    client = Client(connection)
    await client.expect("status")
    await client.send({"type": "start"})
    frame = await client.expect_where(
        lambda frame: frame["type"] in ("started", "error")
    )
    await client.close()
    return str(frame.get("code", frame["type"]))


async def test_start_limit_per_forwarded_address(tmp_path: Path) -> None:
    async with running_relay(tmp_path, trusted_proxies="127.0.0.1") as relay:
        await demo_volunteer(relay)
        others = [await start_via_proxy(relay, f"203.0.113.{n}") for n in range(25)]
        same = [await start_via_proxy(relay, "198.51.100.1") for _ in range(21)]

    assert set(others) == {"started"}
    assert same[-1] == "rate_limited"
    assert set(same[:-1]) == {"started"}
