"""Leaving a message and reading replies by code, over plain HTTP against a real
relay: the offline chat page, reply codes, rate limits, deletion and bad input."""

from __future__ import annotations

import html
import re
import sqlite3

import httpx
import pytest

from tests.relayserver import RelayServer, available_volunteer, visitor
from tests.test_nojs import bodies, form_fields

pytestmark = pytest.mark.anyio

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def reply_code(page: str) -> str:
    match = re.search(r'<span id="reply-code">([^<]+)</span>', page)
    assert match, "no reply code on the page"
    return match.group(1)


def inbox_rows(relay: RelayServer) -> list[sqlite3.Row]:
    with sqlite3.connect(relay.database) as db:
        db.row_factory = sqlite3.Row
        return db.execute(
            "SELECT inbox.*, conversations.channel, conversations.status"
            " FROM inbox JOIN conversations ON conversations.id = inbox.conversation_id"
        ).fetchall()


def close_site(relay: RelayServer) -> None:
    """Give the demo site opening hours with no opening: closed at all times."""
    with sqlite3.connect(relay.database) as db:
        db.execute(
            "INSERT INTO site_hours (site_id, time_zone, updated_at)"
            " SELECT id, 'Europe/Malta', '2026-01-01T00:00:00.000Z' FROM sites"
            " WHERE key = 'demo'"
        )


async def leave(
    client: httpx.AsyncClient, body: str, address: str = ""
) -> httpx.Response:
    page = await client.get("/message?site=demo")
    fields = form_fields(page.text, "/message")
    return await client.post(
        "/message?site=demo",
        data={**fields, "body": body, "notify_address": address},
    )


async def open_code(client: httpx.AsyncClient, code: str) -> httpx.Response:
    page = await client.get("/replies?site=demo")
    fields = form_fields(page.text, "/replies")
    return await client.post("/replies?site=demo", data={**fields, "code": code})


@pytest.fixture
async def client(relay: RelayServer) -> httpx.AsyncClient:
    async with httpx.AsyncClient(base_url=relay.base_url) as opened:
        yield opened


# The offline chat page


async def test_chat_page_offers_message_without_volunteers(
    client: httpx.AsyncClient,
) -> None:
    page = (await client.get("/chat?site=demo")).text

    assert re.search(r'<section id="offline-state"[^>]*>', page)
    assert not re.search(r'<section id="offline-state"[^>]*hidden', page)
    assert re.search(r'<form id="start-form"[^>]*hidden', page)
    assert 'action="/message?site=demo"' in page
    assert "Nobody is available to chat right now." in page


async def test_chat_page_with_volunteer_hides_message_form(
    relay: RelayServer, client: httpx.AsyncClient
) -> None:
    volunteer = await available_volunteer(
        relay, await relay.sign_in("demo", relay.demo_password or "")
    )
    try:
        page = (await client.get("/chat?site=demo")).text
    finally:
        await volunteer.close()

    assert re.search(r'<section id="offline-state"[^>]*hidden', page)
    assert not re.search(r'<form id="start-form"[^>]*hidden', page)


async def test_chat_closed_outside_hours(
    relay: RelayServer, client: httpx.AsyncClient
) -> None:
    volunteer = await available_volunteer(
        relay, await relay.sign_in("demo", relay.demo_password or "")
    )
    close_site(relay)
    try:
        page = (await client.get("/chat?site=demo")).text
        fields = form_fields(page, "/chat/nojs/start")
        started = await client.post("/chat/nojs/start?site=demo", data=fields)
        socket = await visitor(relay)
        await socket.send({"type": "start"})
        refused = await socket.expect("unavailable")
        await socket.close()
    finally:
        await volunteer.close()

    assert "The chat is closed now." in page
    assert not re.search(r'<section id="offline-state"[^>]*hidden', page)
    assert re.search(r'<form id="start-form"[^>]*hidden', page)
    assert "Sorry, nobody is available to chat right now." in started.text
    assert refused["emergency"] == "112"
    with sqlite3.connect(relay.database) as db:
        assert db.execute("SELECT COUNT(*) FROM conversations").fetchone()[0] == 0


async def test_waiting_chat_carried_into_message_form(
    relay: RelayServer, client: httpx.AsyncClient
) -> None:
    cookie = await relay.sign_in("demo", relay.demo_password or "")
    volunteer = await available_volunteer(relay, cookie)
    page = (await client.get("/chat?site=demo")).text
    started = await client.post(
        "/chat/nojs/start?site=demo",
        data=form_fields(page, "/chat/nojs/start"),
        headers={"sec-fetch-dest": "document"},
    )
    page = (await client.get(started.headers["location"])).text
    sent = await client.post(
        "/chat/nojs/send?site=demo",
        data={**form_fields(page, "/chat/nojs/send"), "body": "He followed me home."},
    )
    assert sent.status_code == 303
    await volunteer.send({"type": "availability", "available": False})
    await volunteer.expect("availability", available=False)
    await volunteer.close()

    waiting = (await client.get("/chat?site=demo")).text
    leave_fields = form_fields(waiting, "/chat/nojs/send")
    instead = await client.post(
        "/chat/nojs/leave?site=demo", data={**leave_fields, "body": "I am scared."}
    )
    fields = form_fields(instead.text, "/message")
    left = await client.post(
        "/message?site=demo",
        data={**fields, "body": "He followed me home.\n\nI am scared."},
    )

    assert "He followed me home." in waiting
    assert not re.search(r'<section id="offline-state"[^>]*hidden', waiting)
    assert "He followed me home.\n\nI am scared.</textarea>" in instead.text
    assert fields["chat_token"]
    assert left.status_code == 200
    with sqlite3.connect(relay.database) as db:
        chat = db.execute(
            "SELECT status FROM conversations WHERE channel = 'chat'"
        ).fetchone()
    assert chat[0] == "ended"
    assert [row["state"] for row in inbox_rows(relay)] == ["waiting"]


# Leaving a message


async def test_leave_message_shows_code_once(
    relay: RelayServer, client: httpx.AsyncClient
) -> None:
    response = await leave(client, "Someone is threatening me.")
    code = reply_code(response.text)
    rows = inbox_rows(relay)

    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert len(code.split()) == 8
    assert len(rows) == 1
    assert rows[0]["channel"] == "message"
    assert rows[0]["state"] == "waiting"
    assert rows[0]["notify_address"] is None
    assert code not in rows[0]["reply_code_hash"]
    assert bodies(relay) == ["Someone is threatening me."]
    assert code.split()[0] not in relay.log()
    assert "threatening" not in relay.log()


async def test_leave_message_resubmit_stores_once(
    relay: RelayServer, client: httpx.AsyncClient
) -> None:
    page = await client.get("/message?site=demo")
    fields = {**form_fields(page.text, "/message"), "body": "Help please"}

    first = await client.post("/message?site=demo", data=fields)
    second = await client.post("/message?site=demo", data=fields)

    assert reply_code(first.text) == reply_code(second.text)
    assert len(inbox_rows(relay)) == 1


async def test_leave_message_address_sealed(
    relay: RelayServer, client: httpx.AsyncClient
) -> None:
    response = await leave(client, "Please e-mail me", "hidden.box@example.org")
    raw = b"".join(
        path.read_bytes()
        for path in relay.directory.iterdir()
        if path.name.startswith("vso.sqlite3")
    )

    assert response.status_code == 200
    assert "send a short e-mail" in response.text
    assert inbox_rows(relay)[0]["notify_address"].startswith("vso1:")
    assert b"hidden.box@example.org" not in raw
    assert "hidden.box" not in relay.log()


@pytest.mark.parametrize(
    ("body", "address", "status", "error"),
    [
        ("   ", "", 400, "Please write a message before sending."),
        ("x" * 4001, "", 400, "That message is too long."),
        ("Keep this text", "not an address", 400, "e-mail address is not valid"),
        ("Keep this text", "a@b.c" + "x" * 300, 400, "e-mail address is not valid"),
    ],
)
async def test_leave_message_invalid_keeps_text(
    relay: RelayServer,
    client: httpx.AsyncClient,
    body: str,
    address: str,
    status: int,
    error: str,
) -> None:
    response = await leave(client, body, address)

    assert response.status_code == status
    assert error in response.text
    if body.strip():
        assert f">{body}</textarea>" in response.text
    assert inbox_rows(relay) == []


async def test_leave_message_forged_form_rejected(
    relay: RelayServer, client: httpx.AsyncClient
) -> None:
    page = await client.get("/message?site=demo")
    fields = {**form_fields(page.text, "/message"), "body": "Keep this text"}

    forged = await client.post(
        "/message?site=demo", data={**fields, "csrf_token": "forged"}
    )
    cross_site = await client.post(
        "/message?site=demo", data=fields, headers={"sec-fetch-site": "cross-site"}
    )
    robot = await client.post(
        "/message?site=demo", data={**fields, "website": "http://spam.example"}
    )
    unknown_site = await client.post("/message?site=nope", data=fields)
    oversize = await client.post(
        "/message?site=demo", data={**fields, "body": "x" * 70_000}
    )

    assert forged.status_code == 400
    assert ">Keep this text</textarea>" in forged.text
    assert cross_site.status_code == 403
    assert ">Keep this text</textarea>" in cross_site.text
    assert robot.status_code == 400
    assert unknown_site.status_code == 400
    assert oversize.status_code == 413
    assert inbox_rows(relay) == []


async def test_leave_message_hostile_html_escaped(
    relay: RelayServer, client: httpx.AsyncClient
) -> None:
    response = await leave(client, HOSTILE)
    thread = await open_code(client, reply_code(response.text))

    assert thread.status_code == 200
    assert "<script>alert" not in thread.text
    assert html.escape(HOSTILE, quote=False) in thread.text.replace("&#34;", '"')
    assert bodies(relay) == [HOSTILE]


# Reading replies


async def test_replies_code_opens_thread(client: httpx.AsyncClient) -> None:
    code = reply_code((await leave(client, "First message")).text)
    sloppy = "  " + code.upper().replace(" ", " - ") + "\n"

    thread = await open_code(client, sloppy)

    assert thread.status_code == 200
    assert thread.headers["cache-control"] == "no-store"
    assert "First message" in thread.text
    assert "No reply yet." in thread.text
    assert 'name="code"' in thread.text
    assert 'autocomplete="off"' in thread.text


async def test_replies_code_never_in_url(client: httpx.AsyncClient) -> None:
    code = reply_code((await leave(client, "Text")).text)
    thread = await open_code(client, code)
    urls = re.findall(r'(?:src|href|action)="([^"]*)"', thread.text)

    assert all(code.split()[0] not in url for url in urls)
    assert str(thread.url).endswith("/replies?site=demo")


async def test_replies_answer_back(
    relay: RelayServer, client: httpx.AsyncClient
) -> None:
    code = reply_code((await leave(client, "First")).text)
    thread = await open_code(client, code)
    fields = form_fields(thread.text, "/replies/send")

    answered = await client.post(
        "/replies/send?site=demo", data={**fields, "body": "Second " + HOSTILE}
    )
    again = await client.post(
        "/replies/send?site=demo", data={**fields, "body": "Second " + HOSTILE}
    )
    empty = await client.post(
        "/replies/send?site=demo",
        data={**form_fields(answered.text, "/replies/send"), "body": " "},
    )

    assert answered.status_code == 200
    assert "Your message was sent." in answered.text
    assert "<script>alert" not in answered.text
    assert again.status_code == 200
    assert empty.status_code == 400
    assert "Please write a message" in empty.text
    assert bodies(relay) == ["First", "Second " + HOSTILE]


async def test_replies_wrong_codes_rate_limited(
    relay: RelayServer, client: httpx.AsyncClient
) -> None:
    code = reply_code((await leave(client, "Text")).text)
    statuses = []
    for _ in range(5):
        wrong = await open_code(client, "abandon " * 8)
        statuses.append(wrong.status_code)
    limited = await open_code(client, "zoo zoo zoo")
    right = await open_code(client, code)

    assert statuses == [404] * 5
    assert "No conversation has this code." in wrong.text
    assert limited.status_code == 429
    assert "Too many wrong codes" in limited.text
    assert "116 006" in limited.text
    assert right.status_code == 429


async def test_replies_delete_removes_everything(
    relay: RelayServer, client: httpx.AsyncClient
) -> None:
    code = reply_code((await leave(client, "Delete me")).text)
    thread = await open_code(client, code)
    fields = form_fields(thread.text, "/replies/delete")

    unconfirmed = await client.post("/replies/delete?site=demo", data=fields)
    deleted = await client.post(
        "/replies/delete?site=demo", data={**fields, "confirm": "yes"}
    )
    gone = await open_code(client, code)

    assert unconfirmed.status_code == 400
    assert "Tick the box" in unconfirmed.text
    assert deleted.status_code == 200
    assert "Your messages are deleted" in deleted.text
    assert gone.status_code == 404
    assert inbox_rows(relay) == []
    assert bodies(relay) == []


async def test_replies_forged_forms_rejected(client: httpx.AsyncClient) -> None:
    code = reply_code((await leave(client, "Text")).text)
    thread = await open_code(client, code)
    fields = form_fields(thread.text, "/replies/send")

    forged = await client.post(
        "/replies/send?site=demo",
        data={**fields, "csrf_token": "forged", "body": "kept draft"},
    )
    cross_site = await client.post(
        "/replies/delete?site=demo",
        data={**fields, "confirm": "yes"},
        headers={"sec-fetch-site": "cross-site"},
    )
    page = await client.get("/replies?site=demo")
    expired = await client.post(
        "/replies?site=demo",
        data={**form_fields(page.text, "/replies"), "csrf_token": "", "code": code},
    )

    assert forged.status_code == 400
    assert ">kept draft</textarea>" in forged.text
    assert cross_site.status_code == 403
    assert expired.status_code == 400


async def test_hostile_address_and_code_escaped(client: httpx.AsyncClient) -> None:
    address = '"><script>alert(1)</script>@x.org'
    bad_address = await leave(client, "Text", address)
    bad_code = await open_code(client, HOSTILE)

    assert bad_address.status_code == 400
    assert "<script>alert(1)" not in bad_address.text
    kept = re.search(r'name="notify_address" value="([^"]*)"', bad_address.text)
    assert kept is not None
    assert html.unescape(kept.group(1)) == address
    assert bad_code.status_code == 404
    assert "<script>" not in bad_code.text
