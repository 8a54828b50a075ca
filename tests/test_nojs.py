"""The chat page without scripts over plain HTTP: forms, idempotency, CSRF, bad
input, tokens, presence and the transport the volunteer sees."""

from __future__ import annotations

import asyncio
import html
import re
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from itsdangerous import URLSafeTimedSerializer

from relay.crypto import load_cipher
from relay.store import _message_context
from tests.relayserver import (
    Client,
    RelayServer,
    available_volunteer,
    visitor,
)

pytestmark = pytest.mark.anyio

PRESENCE_SECONDS = 10.0  # relay.conversations.HTTP_PRESENCE_SECONDS


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def form_fields(page: str, action: str) -> dict[str, str]:
    """Return the hidden fields of the first form posting to ``action``."""
    match = re.search(
        rf'<form[^>]*action="{re.escape(action)}[^"]*"[^>]*>(.*?)</form>',
        page,
        flags=re.S,
    )
    assert match, f"no form for {action}"
    return {
        name: html.unescape(value)
        for name, value in re.findall(
            r'<input type="hidden" name="(\w+)" value="([^"]*)"', match.group(1)
        )
    }


def transcript_path(page: str) -> str:
    match = re.search(r'src="(/chat/nojs/transcript\?[^"]+)"', page)
    assert match, "no transcript frame"
    return html.unescape(match.group(1))


def bodies(relay: RelayServer) -> list[str]:
    """Return the stored message bodies, decrypted, in order."""
    cipher = load_cipher("", None, relay.database)
    with sqlite3.connect(relay.database) as db:
        rows = db.execute(
            "SELECT conversation_id, seq, body FROM messages"
            " ORDER BY conversation_id, seq"
        ).fetchall()
    return [
        cipher.decrypt(body, _message_context(conversation, seq))
        for conversation, seq, body in rows
    ]


def conversation_count(relay: RelayServer) -> int:
    with sqlite3.connect(relay.database) as db:
        return int(db.execute("SELECT COUNT(*) FROM conversations").fetchone()[0])


@dataclass
class Visitor:
    """A browser without scripts: an HTTP client that keeps cookies (or not)."""

    client: httpx.AsyncClient
    keeps_cookies: bool = True
    page: str = ""

    def forget_cookies(self) -> None:
        if not self.keeps_cookies:
            self.client.cookies.clear()

    async def open(self) -> str:
        response = await self.client.get("/chat?site=demo")
        self.forget_cookies()
        assert response.status_code == 200
        self.page = response.text
        return self.page

    async def start(self) -> httpx.Response:
        fields = form_fields(await self.open(), "/chat/nojs/start")
        return await self.post("/chat/nojs/start?site=demo", fields)

    async def post(self, path: str, fields: dict[str, str]) -> httpx.Response:
        response = await self.client.post(path, data=fields)
        self.forget_cookies()
        if response.status_code == 303:
            followed = await self.client.get(response.headers["location"])
            self.page = followed.text
        else:
            self.page = response.text
        return response

    def send_fields(self, body: str) -> dict[str, str]:
        return {**form_fields(self.page, "/chat/nojs/send"), "body": body}

    async def send(self, body: str) -> httpx.Response:
        return await self.post("/chat/nojs/send?site=demo", self.send_fields(body))

    async def transcript(self) -> str:
        return (await self.client.get(transcript_path(self.page))).text


def new_visitor(relay: RelayServer, cookies: bool = True) -> Visitor:
    """``cookies=False`` behaves as a cross-site iframe, where no cookie sticks."""
    # Browsers say where a request goes; the relay uses PRG only in a tab.
    headers = {"sec-fetch-dest": "document" if cookies else "iframe"}
    client = httpx.AsyncClient(base_url=relay.base_url, timeout=10, headers=headers)
    return Visitor(client, keeps_cookies=cookies)


async def demo_volunteer(relay: RelayServer) -> Client:
    assert relay.demo_password is not None
    return await available_volunteer(
        relay, await relay.sign_in("demo", relay.demo_password)
    )


async def accepted(relay: RelayServer) -> tuple[Client, Visitor, str]:
    """A volunteer and a no-script visitor in one conversation."""
    volunteer = await demo_volunteer(relay)
    person = new_visitor(relay)
    response = await person.start()
    assert response.status_code == 303
    queue = await volunteer.expect_where(
        lambda frame: frame["type"] == "queue" and bool(frame["entries"])
    )
    conversation = queue["entries"][0]["conversation"]
    await volunteer.send({"type": "accept", "conversation": conversation})
    await volunteer.expect("assigned", conversation=conversation)
    return volunteer, person, conversation


# Start


async def test_start_uses_cookie_and_redirects(relay: RelayServer) -> None:
    await demo_volunteer(relay)
    person = new_visitor(relay)

    response = await person.start()

    assert response.status_code == 303
    assert response.headers["location"] == "/chat?site=demo"
    cookie = next(c for c in person.client.cookies.jar if c.name == "vso_chat")
    assert cookie.expires is None  # a session cookie
    assert cookie.has_nonstandard_attr("HttpOnly")
    set_cookie = response.headers.get_list("set-cookie")
    assert any("vso_chat=" in h and "samesite=lax" in h.lower() for h in set_cookie)
    assert "Waiting for a volunteer" in await person.transcript()
    assert conversation_count(relay) == 1


async def test_start_form_twice_opens_one_conversation(relay: RelayServer) -> None:
    await demo_volunteer(relay)
    person = new_visitor(relay)
    fields = form_fields(await person.open(), "/chat/nojs/start")

    first, second = await asyncio.gather(
        person.client.post("/chat/nojs/start?site=demo", data=fields),
        person.client.post("/chat/nojs/start?site=demo", data=fields),
    )
    third = await person.client.post("/chat/nojs/start?site=demo", data=fields)

    assert first.status_code == second.status_code == third.status_code == 303
    assert conversation_count(relay) == 1


async def test_start_in_cross_site_frame_renders_without_redirect(
    relay: RelayServer,
) -> None:
    await demo_volunteer(relay)
    person = new_visitor(relay, cookies=False)
    fields = form_fields(await person.open(), "/chat/nojs/start")

    first = await person.post("/chat/nojs/start?site=demo", fields)
    token = form_fields(person.page, "/chat/nojs/send")["token"]
    again = await person.client.post("/chat/nojs/start?site=demo", data=fields)
    person.forget_cookies()

    assert first.status_code == 200
    assert "location" not in first.headers
    assert first.headers["cache-control"] == "no-store"
    # The token is in the page's hidden fields, never in a URL.
    assert token not in transcript_path(person.page)
    assert all(
        token not in url
        for url in re.findall(r'(?:src|href|action)="([^"]*)"', person.page)
    )
    assert form_fields(again.text, "/chat/nojs/send")["token"] == token
    assert conversation_count(relay) == 1


async def test_start_without_volunteers_creates_nothing(relay: RelayServer) -> None:
    person = new_visitor(relay)

    response = await person.start()

    assert response.status_code == 200
    assert "Sorry, nobody is available to chat right now." in response.text
    assert conversation_count(relay) == 0


@pytest.mark.parametrize("csrf", ["", "forged", "missing"])
async def test_start_without_valid_csrf_is_rejected(
    relay: RelayServer, csrf: str
) -> None:
    await demo_volunteer(relay)
    person = new_visitor(relay)
    fields = form_fields(await person.open(), "/chat/nojs/start")
    if csrf == "missing":
        del fields["csrf_token"]
    else:
        fields["csrf_token"] = csrf

    response = await person.post("/chat/nojs/start?site=demo", fields)

    assert response.status_code == 400
    assert "The form expired" in response.text
    assert conversation_count(relay) == 0


async def test_cross_site_post_is_rejected(relay: RelayServer) -> None:
    await demo_volunteer(relay)
    person = new_visitor(relay)
    fields = form_fields(await person.open(), "/chat/nojs/start")

    response = await person.client.post(
        "/chat/nojs/start?site=demo",
        data=fields,
        headers={"sec-fetch-site": "cross-site"},
    )

    assert response.status_code == 400
    assert conversation_count(relay) == 0


# Send


async def test_send_twice_with_one_key_stores_once(relay: RelayServer) -> None:
    volunteer, person, conversation = await accepted(relay)
    fields = person.send_fields("Hello, is anyone there?")

    responses = await asyncio.gather(
        *[
            person.client.post("/chat/nojs/send?site=demo", data=fields)
            for _ in range(3)
        ]
    )

    assert [r.status_code for r in responses] == [303, 303, 303]
    message = await volunteer.expect("message", conversation=conversation)
    assert message["body"] == "Hello, is anyone there?"
    assert message["client_id"] == fields["key"]
    await volunteer.expect_silence("message", 0.5)
    assert bodies(relay) == ["Hello, is anyone there?"]


async def test_reply_shows_in_transcript(relay: RelayServer) -> None:
    volunteer, person, conversation = await accepted(relay)
    await volunteer.send(
        {
            "type": "send",
            "conversation": conversation,
            "client_id": "r-1",
            "body": "I am <here>",
        }
    )
    await volunteer.expect("ack", client_id="r-1")

    frame = await person.transcript()

    assert "You are chatting with Sam" in frame
    assert "I am &lt;here&gt;" in frame
    assert 'http-equiv="refresh"' in frame


@pytest.mark.parametrize(
    "body",
    ["", "   ", "\n\t", "\u200b", "\u200b\u200c\u200d\u2060\ufeff", " \u200b \u3164 "],
    ids=["empty", "spaces", "whitespace", "zwsp", "zero-width-mix", "fillers"],
)
async def test_blank_message_is_rejected(relay: RelayServer, body: str) -> None:
    volunteer, person, _ = await accepted(relay)

    response = await person.send(body)

    assert response.status_code == 400
    assert "Please write a message before sending." in response.text
    assert "End chat" in response.text  # the conversation is still there
    assert bodies(relay) == []
    await volunteer.expect_silence("message", 0.3)


async def test_over_long_message_is_rejected_and_kept(relay: RelayServer) -> None:
    _, person, _ = await accepted(relay)
    text = "é" * 4001

    response = await person.send(text)

    assert response.status_code == 400
    assert "That message is too long." in response.text
    assert f">{text}</textarea>" in response.text
    assert bodies(relay) == []


async def test_huge_form_is_rejected(relay: RelayServer) -> None:
    _, person, _ = await accepted(relay)

    response = await person.send("x" * 70_000)

    assert response.status_code == 413
    assert "That message is too long." in response.text
    assert bodies(relay) == []


@pytest.mark.parametrize("token", ["", "missing", "A" * 43, "short"])
async def test_missing_or_forged_token_is_rejected(
    relay: RelayServer, token: str
) -> None:
    _, person, _ = await accepted(relay)
    fields = person.send_fields("Should not be stored")
    if token == "missing":
        del fields["token"]
    else:
        fields["token"] = token

    response = await person.post("/chat/nojs/send?site=demo", fields)

    assert response.status_code == 403
    assert "This chat could not be found." in response.text
    # The cookie's conversation is intact and still shown.
    assert "End chat" in response.text
    assert bodies(relay) == []


async def test_form_of_another_conversation_is_rejected(relay: RelayServer) -> None:
    volunteer, first, _ = await accepted(relay)
    second = new_visitor(relay)
    await second.start()
    mixed = {
        **second.send_fields("Mixed up"),
        "csrf_token": first.send_fields("x")["csrf_token"],
    }

    response = await second.post("/chat/nojs/send?site=demo", mixed)

    assert response.status_code == 400
    assert "The form expired or came from another page." in response.text
    assert ">Mixed up</textarea>" in response.text
    assert bodies(relay) == []


async def test_forms_after_end_store_nothing(relay: RelayServer) -> None:
    volunteer, person, conversation = await accepted(relay)
    send_fields = person.send_fields("After the end")
    end_fields = form_fields(person.page, "/chat/nojs/end")
    old_transcript = transcript_path(person.page)
    assert "You are chatting" in await person.transcript()

    ended = await person.post("/chat/nojs/end?site=demo", end_fields)

    assert ended.status_code == 303
    assert ended.headers["location"] == "/chat?site=demo&ended=visitor"
    assert "You ended the chat." in person.page
    frame = await volunteer.expect("ended", conversation=conversation)
    assert frame["reason"] == "visitor"
    # Every token of the conversation is revoked.
    replay = await person.client.post("/chat/nojs/send?site=demo", data=send_fields)
    assert replay.status_code == 409
    assert "This chat has ended" in replay.text
    again = await person.client.post("/chat/nojs/end?site=demo", data=end_fields)
    assert again.status_code == 409
    old = await person.client.get(old_transcript)
    assert "This chat has ended." in old.text
    assert "message-body" not in old.text
    assert 'http-equiv="refresh"' not in old.text
    assert bodies(relay) == []
    # The cookie outlives the end only for "Delete this conversation"; the next
    # plain visit shows the start page and removes it.
    home = await person.client.get("/chat?site=demo")
    assert "Start chat" in home.text
    assert 'data-phase="welcome"' in home.text
    assert "vso_chat" not in person.client.cookies


async def test_ended_page_offers_deletion(relay: RelayServer) -> None:
    _, person, conversation = await accepted(relay)
    await person.send("Please forget this")
    end_fields = form_fields(person.page, "/chat/nojs/end")
    await person.post("/chat/nojs/end?site=demo", end_fields)
    delete_fields = form_fields(person.page, "/chat/delete")

    unconfirmed = await person.client.post(
        "/chat/delete?site=demo", data={"token": delete_fields["token"]}
    )
    deleted = await person.client.post(
        "/chat/delete?site=demo", data={**delete_fields, "confirm": "yes"}
    )

    assert unconfirmed.status_code == 400
    assert deleted.status_code == 200
    assert bodies(relay) == []
    assert "vso_chat" not in person.client.cookies


# Transcript tokens


@pytest.mark.parametrize(
    "token", ["", "nonsense", "InNvbWV0aGluZyI.aaaaaa.bbbbbbbbbbbbbbbbbbbbbbbbbbb"]
)
async def test_forged_transcript_token_shows_nothing(
    relay: RelayServer, token: str
) -> None:
    _, person, _ = await accepted(relay)
    await person.send("Private words")

    response = await person.client.get(f"/chat/nojs/transcript?site=demo&t={token}")

    assert response.status_code == 404
    assert "Private words" not in response.text


async def test_csrf_token_is_no_transcript_token(relay: RelayServer) -> None:
    _, person, _ = await accepted(relay)
    await person.send("Private words")
    csrf = form_fields(person.page, "/chat/nojs/send")["csrf_token"]

    response = await person.client.get(
        "/chat/nojs/transcript", params={"site": "demo", "t": csrf}
    )

    assert response.status_code == 404
    assert "Private words" not in response.text


async def test_transcript_reloads_to_a_new_token(relay: RelayServer) -> None:
    """Each load links the next reload to a token signed now, so the frame keeps
    working however long the chat lasts."""
    _, person, _ = await accepted(relay)
    await asyncio.sleep(1.1)  # the signature's timestamp counts seconds

    frame = await person.transcript()
    refresh = re.search(r'content="3; url=([^"]+)"', frame)
    assert refresh is not None
    next_url = html.unescape(refresh.group(1))
    reloaded = await person.client.get(next_url)

    assert next_url != transcript_path(person.page)
    assert reloaded.status_code == 200
    assert "You are chatting with Sam" in reloaded.text


# Presence and transport


async def test_volunteer_sees_no_script_transport(relay: RelayServer) -> None:
    volunteer = await demo_volunteer(relay)
    person = new_visitor(relay)
    await person.start()
    queue = await volunteer.expect_where(
        lambda frame: frame["type"] == "queue" and bool(frame["entries"])
    )
    conversation = queue["entries"][0]["conversation"]

    await volunteer.send({"type": "accept", "conversation": conversation})
    assigned = await volunteer.expect("assigned", conversation=conversation)
    await volunteer.send({"type": "hello", "last_seq": {}})
    state = await volunteer.expect("state")

    assert assigned["transport"] == "noscript"
    assert assigned["visitor_connected"] is True
    assert state["chats"][0]["transport"] == "noscript"


async def test_polls_stopping_counts_as_leaving(relay: RelayServer) -> None:
    volunteer, person, conversation = await accepted(relay)
    await person.transcript()

    gone = await volunteer.expect(
        "visitor_status", conversation=conversation, timeout=PRESENCE_SECONDS + 3
    )
    assert gone["connected"] is False
    assert gone["transport"] == "noscript"
    # A reload of the transcript within the grace period brings the visitor back.
    await person.transcript()
    back = await volunteer.expect("visitor_status", conversation=conversation)
    assert back["connected"] is True


async def test_switching_transports_tells_the_volunteer(relay: RelayServer) -> None:
    volunteer, person, conversation = await accepted(relay)
    await person.send("Without scripts")
    token = form_fields(person.page, "/chat/nojs/send")["token"]

    socket = await visitor(relay)
    await socket.send({"type": "resume", "token": token, "last_seq": 0})
    await socket.expect("assigned")
    replay = await socket.expect("message")
    switched = await volunteer.expect(
        "visitor_status", conversation=conversation, transport="script"
    )
    await socket.send({"type": "send", "client_id": "js-1", "body": "With scripts"})
    await socket.expect("ack", client_id="js-1")
    await socket.close()
    await person.transcript()
    back = await volunteer.expect(
        "visitor_status", conversation=conversation, transport="noscript"
    )

    assert replay["body"] == "Without scripts"
    assert switched["connected"] is True
    assert back["connected"] is True
    assert bodies(relay) == ["Without scripts", "With scripts"]


async def test_session_route_lets_a_script_chat_continue_without_scripts(
    relay: RelayServer,
) -> None:
    await demo_volunteer(relay)
    socket = await visitor(relay)
    await socket.send({"type": "start"})
    started = await socket.expect("started")
    person = new_visitor(relay)
    page = await person.open()
    csrf = re.search(r'data-session-csrf="([^"]+)"', page)
    assert csrf is not None

    bad = await person.client.post(
        "/chat/session",
        data={"site": "demo", "token": started["token"], "csrf_token": "x"},
    )
    remembered = await person.client.post(
        "/chat/session",
        data={"site": "demo", "token": started["token"], "csrf_token": csrf.group(1)},
    )
    page = await person.open()

    planted = await person.client.post(
        "/chat/session",
        data={"site": "demo", "token": started["token"], "csrf_token": csrf.group(1)},
        headers={"sec-fetch-site": "cross-site"},
    )

    assert bad.status_code == 400
    assert planted.status_code == 400  # a cross-site post cannot plant a token
    assert remembered.status_code == 204
    assert "nojs-transcript" in page
    assert f'data-resume-token="{started["token"]}"' in page


def assert_no_inline_script(page: str) -> None:
    # A JSON data block is never run, so the CSP allows it: leave it out.
    page = re.sub(r'<script type="application/json"[^>]*>[^<]*</script>', "", page)
    for tag in re.findall(r"<script\b[^>]*>", page, flags=re.IGNORECASE):
        assert " src=" in tag, tag
    assert not re.search(r"<script\b[^>]*>\s*[^<\s]", page, flags=re.IGNORECASE)
    assert not re.search(r"\son[a-z]+\s*=", page, flags=re.IGNORECASE)
    assert "javascript:" not in page.lower()


async def test_no_script_pages_have_no_inline_script(relay: RelayServer) -> None:
    volunteer, person, conversation = await accepted(relay)
    await person.send("Hello")
    conversation_page = person.page
    frame = await person.transcript()
    await person.post(
        "/chat/nojs/end?site=demo", form_fields(person.page, "/chat/nojs/end")
    )

    for page in (conversation_page, frame, person.page):
        assert_no_inline_script(page)
    assert "<script" not in frame


async def test_waiting_visitor_hears_when_nobody_is_left(relay: RelayServer) -> None:
    volunteer = await demo_volunteer(relay)
    person = new_visitor(relay)
    await person.start()
    assert "No volunteer is available at the moment" not in await person.transcript()

    await volunteer.send({"type": "availability", "available": False})
    await volunteer.expect("availability", available=False)
    frame = await person.transcript()

    assert "Waiting for a volunteer" in frame
    assert "No volunteer is available at the moment" in frame
    assert "call 112" in frame


class SignedLongAgo(URLSafeTimedSerializer):
    """Sign as the relay does, with a timestamp ``age`` seconds in the past."""

    age = 0

    def make_signer(self, salt: Any = None) -> Any:
        signer = super().make_signer(salt)
        signer.get_timestamp = lambda: int(time.time()) - self.age  # type: ignore[method-assign]
        return signer


async def test_old_transcript_token_shows_nothing(relay: RelayServer) -> None:
    _, person, conversation = await accepted(relay)
    await person.send("Private words")
    serializer = SignedLongAgo(relay.env["VSO_SECRET_KEY"], salt="vso-transcript")
    serializer.age = 301
    old = serializer.dumps(conversation)
    serializer.age = 0
    fresh = serializer.dumps(conversation)

    expired = await person.client.get(
        "/chat/nojs/transcript", params={"site": "demo", "t": old}
    )
    valid = await person.client.get(
        "/chat/nojs/transcript", params={"site": "demo", "t": fresh}
    )

    assert expired.status_code == 404
    assert "Private words" not in expired.text
    assert "This view has expired." in expired.text
    assert valid.status_code == 200
    assert "Private words" in valid.text
