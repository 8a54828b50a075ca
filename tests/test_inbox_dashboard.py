"""The volunteers' inbox and the admin's opening hours page, over plain HTTP
against a real relay: claim, reply, take over, close, block and who may read."""

from __future__ import annotations

import asyncio
import html
import re
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import aclosing

import httpx
import pyotp
import pytest

from tests.relayserver import RelayServer
from tests.test_messages import HOSTILE, leave, open_code, reply_code
from tests.test_nojs import form_fields
from tests.test_two_factor import PASSWORD, password_step, secret_of, send_code

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def visitor_client(relay: RelayServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=relay.base_url) as client:
        yield client


async def staff_client(
    relay: RelayServer, username: str, display_name: str, role: str = "volunteer"
) -> httpx.AsyncClient:
    """Add a staff member and return a client signed in as them."""
    result = relay.cli(
        "volunteer",
        "add",
        username,
        "--display-name",
        display_name,
        "--role",
        role,
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert result.returncode == 0, result.stderr
    client = httpx.AsyncClient(base_url=relay.base_url)
    page = await password_step(client, username)
    if role != "volunteer":
        page = await send_code(client, page, pyotp.TOTP(secret_of(page)).now())
    assert client.cookies.get("vso_session"), page.text
    return client


def conversation_id(relay: RelayServer) -> str:
    with sqlite3.connect(relay.database) as db:
        return str(db.execute("SELECT conversation_id FROM inbox").fetchone()[0])


def inbox_state(relay: RelayServer) -> tuple[str, str | None]:
    with sqlite3.connect(relay.database) as db:
        row = db.execute(
            "SELECT inbox.state, volunteers.username FROM inbox"
            " LEFT JOIN volunteers ON volunteers.id = inbox.claimed_by"
        ).fetchone()
    return row[0], row[1]


async def logged(relay: RelayServer, text: str, timeout: float = 5.0) -> bool:
    """Return True once the relay's log contains ``text``, False at the deadline."""
    deadline = time.monotonic() + timeout
    while text not in relay.log():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def post_form(
    client: httpx.AsyncClient, page: str, action: str, **fields: str
) -> httpx.Response:
    return await client.post(action, data={**form_fields(page, action), **fields})


async def test_inbox_claim_reply_close_flow(
    relay: RelayServer, visitor_client: httpx.AsyncClient
) -> None:
    code = reply_code((await leave(visitor_client, "I need advice.")).text)
    alex = await staff_client(relay, "alex", "Alex")
    async with aclosing(alex):
        listing = await alex.get("/dashboard/inbox")
        conversation = conversation_id(relay)
        claimed = await post_form(
            alex, listing.text, f"/dashboard/inbox/{conversation}/claim"
        )
        page = await alex.get(claimed.headers["location"])
        replied = await post_form(
            alex,
            page.text,
            f"/dashboard/inbox/{conversation}/reply",
            body="We are here to help. " + HOSTILE,
        )
        after_reply = inbox_state(relay)
        page = await alex.get(f"/dashboard/inbox/{conversation}")
        closed = await post_form(
            alex, page.text, f"/dashboard/inbox/{conversation}/close"
        )
        closed_list = await alex.get("/dashboard/inbox?state=closed")
    thread = await open_code(visitor_client, code)

    assert listing.status_code == 200
    assert "I need advice." in listing.text
    assert "Not claimed" in listing.text
    assert claimed.status_code == 303
    assert "Claimed by you" in page.text
    assert replied.status_code == 303
    assert after_reply == ("answered", "alex")
    assert closed.status_code == 303
    assert inbox_state(relay) == ("closed", "alex")
    assert conversation in closed_list.text
    assert "We are here to help." in thread.text
    assert "Alex" in thread.text
    assert "<script>alert" not in thread.text
    assert "<script>alert" not in page.text


async def test_inbox_other_claim_shown_and_hidden(
    relay: RelayServer, visitor_client: httpx.AsyncClient
) -> None:
    await leave(visitor_client, "Private words")
    alex = await staff_client(relay, "alex", "Alex")
    maria = await staff_client(relay, "maria", "Maria")
    async with aclosing(alex), aclosing(maria):
        conversation = conversation_id(relay)
        listing = await alex.get("/dashboard/inbox")
        listing_for_maria = await maria.get("/dashboard/inbox")
        await post_form(alex, listing.text, f"/dashboard/inbox/{conversation}/claim")
        seen_by_maria = await maria.get("/dashboard/inbox?state=claimed")
        page_for_maria = await maria.get(f"/dashboard/inbox/{conversation}")
        second_claim = await post_form(
            maria, listing_for_maria.text, f"/dashboard/inbox/{conversation}/claim"
        )

    assert "Claimed by Alex" in seen_by_maria.text
    assert "Private words" not in seen_by_maria.text
    assert "Private words" not in page_for_maria.text
    assert "Take it over from Alex" in page_for_maria.text
    assert second_claim.status_code == 409
    assert "Alex claimed this conversation first." in second_claim.text
    assert inbox_state(relay) == ("claimed", "alex")


async def test_inbox_reply_refused_then_take_over(
    relay: RelayServer, visitor_client: httpx.AsyncClient
) -> None:
    await leave(visitor_client, "Text")
    alex = await staff_client(relay, "alex", "Alex")
    maria = await staff_client(relay, "maria", "Maria")
    async with aclosing(alex), aclosing(maria):
        conversation = conversation_id(relay)
        page_for_maria = await maria.get(f"/dashboard/inbox/{conversation}")
        listing = await alex.get("/dashboard/inbox")
        await post_form(alex, listing.text, f"/dashboard/inbox/{conversation}/claim")
        refused = await post_form(
            maria,
            page_for_maria.text,
            f"/dashboard/inbox/{conversation}/reply",
            body="My careful reply",
        )
        taken = await post_form(
            maria,
            refused.text,
            f"/dashboard/inbox/{conversation}/reply",
            body="My careful reply",
            take_over="yes",
        )

    assert refused.status_code == 409
    assert "Alex claimed this conversation, so your reply was not sent." in (
        html.unescape(refused.text)
    )
    assert ">My careful reply</textarea>" in refused.text
    assert 'name="take_over"' in refused.text
    assert taken.status_code == 303
    assert inbox_state(relay) == ("answered", "maria")


async def test_inbox_supervisor_reads_other_claim(
    relay: RelayServer, visitor_client: httpx.AsyncClient
) -> None:
    await leave(visitor_client, "Private words")
    alex = await staff_client(relay, "alex", "Alex")
    sofia = await staff_client(relay, "sofia", "Sofia", "supervisor")
    async with aclosing(alex), aclosing(sofia):
        conversation = conversation_id(relay)
        listing = await alex.get("/dashboard/inbox")
        await post_form(alex, listing.text, f"/dashboard/inbox/{conversation}/claim")
        page = await sofia.get(f"/dashboard/inbox/{conversation}")

    assert "Private words" in page.text
    assert "Claimed by Alex" in page.text


async def test_inbox_block_stops_reply_code(
    relay: RelayServer, visitor_client: httpx.AsyncClient
) -> None:
    code = reply_code((await leave(visitor_client, "Abuse")).text)
    alex = await staff_client(relay, "alex", "Alex")
    async with aclosing(alex):
        conversation = conversation_id(relay)
        page = await alex.get(f"/dashboard/inbox/{conversation}")
        unconfirmed = await post_form(
            alex, page.text, f"/dashboard/inbox/{conversation}/block"
        )
        blocked = await post_form(
            alex, page.text, f"/dashboard/inbox/{conversation}/block", confirm="yes"
        )
    thread = await open_code(visitor_client, code)
    answer = await visitor_client.post(
        "/replies/send?site=demo",
        data={
            "code": code,
            "csrf_token": form_fields(thread.text, "/replies/delete")["csrf_token"],
            "key": "k-blocked-1",
            "body": "more abuse",
        },
    )

    assert unconfirmed.status_code == 400
    assert blocked.status_code == 303
    assert inbox_state(relay) == ("closed", None)
    assert "This reply code is blocked" in thread.text
    assert 'action="/replies/send' not in thread.text
    assert answer.status_code == 403
    with sqlite3.connect(relay.database) as db:
        assert db.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 1


async def test_inbox_reply_notifies_only_with_address(
    relay: RelayServer, visitor_client: httpx.AsyncClient
) -> None:
    await leave(visitor_client, "Tell me", "me@example.org")
    alex = await staff_client(relay, "alex", "Alex")
    async with aclosing(alex):
        conversation = conversation_id(relay)
        page = await alex.get(f"/dashboard/inbox/{conversation}")
        await post_form(
            alex, page.text, f"/dashboard/inbox/{conversation}/reply", body="Hello"
        )

    assert await logged(relay, f"reply waiting in {conversation}")
    assert "me@example.org" not in relay.log()


async def test_inbox_forms_checked(
    relay: RelayServer, visitor_client: httpx.AsyncClient
) -> None:
    await leave(visitor_client, "Text")
    alex = await staff_client(relay, "alex", "Alex")
    async with aclosing(alex):
        conversation = conversation_id(relay)
        page = await alex.get(f"/dashboard/inbox/{conversation}")
        action = f"/dashboard/inbox/{conversation}/reply"
        no_token = await alex.post(action, data={"body": "x", "key": "k1"})
        cross_site = await alex.post(
            action,
            data={**form_fields(page.text, action), "body": "x"},
            headers={"sec-fetch-site": "cross-site"},
        )
        empty = await post_form(alex, page.text, action, body="  ")
        too_long = await post_form(alex, page.text, action, body="y" * 4001)
        unknown = await alex.get("/dashboard/inbox/no-such-id")
        hostile_id = await alex.get("/dashboard/inbox/%3Cscript%3E")
    async with httpx.AsyncClient(base_url=relay.base_url) as anonymous:
        signed_out = await anonymous.get("/dashboard/inbox")
        signed_out_post = await anonymous.post(action, data={"body": "x"})

    assert no_token.status_code == 400
    assert cross_site.status_code == 403
    assert empty.status_code == 400
    assert "Write a reply before sending." in empty.text
    assert too_long.status_code == 400
    assert "y" * 4001 in too_long.text
    assert unknown.status_code == 404
    assert hostile_id.status_code == 404
    assert "<script>" not in hostile_id.text
    assert signed_out.status_code == 303
    assert signed_out_post.status_code == 403
    assert inbox_state(relay) == ("waiting", None)


# Opening hours


async def test_hours_page_admin_only(relay: RelayServer) -> None:
    alex = await staff_client(relay, "alex", "Alex")
    async with aclosing(alex):
        page = await alex.get("/dashboard/sites/1/hours")
        post = await alex.post("/dashboard/sites/1/hours", data={"limited": "yes"})

    assert page.status_code == 403
    assert post.status_code == 403


async def test_hours_page_saves_and_closes_chat(
    relay: RelayServer, visitor_client: httpx.AsyncClient
) -> None:
    admin = await staff_client(relay, "ada", "Ada", "admin")
    async with aclosing(admin):
        index = await admin.get("/dashboard/hours")
        page = await admin.get("/dashboard/sites/1/hours")
        invalid = await post_form(
            admin,
            page.text,
            "/dashboard/sites/1/hours",
            limited="yes",
            time_zone="Europe/Malta",
            day0="09:00-17:00",
            day2="17:00-09:00",
            closed_dates="2026-12-25",
        )
        bad_zone = await post_form(
            admin,
            page.text,
            "/dashboard/sites/1/hours",
            limited="yes",
            time_zone="<b>Nowhere</b>",
        )
        saved = await post_form(
            admin,
            page.text,
            "/dashboard/sites/1/hours",
            limited="yes",
            time_zone="Europe/Malta",
            closed_dates="2026-12-25\n2027-01-01",
        )
        after = await admin.get(saved.headers["location"])
        missing = await admin.get("/dashboard/sites/999/hours")
    chat = await visitor_client.get("/chat?site=demo")

    assert index.status_code == 200
    assert "/dashboard/sites/1/hours" in index.text
    assert page.status_code == 200
    assert invalid.status_code == 400
    assert "Wednesday" in invalid.text
    assert "ends before it starts" in invalid.text
    assert 'value="09:00-17:00"' in invalid.text
    assert bad_zone.status_code == 400
    assert "<b>Nowhere</b>" not in bad_zone.text
    assert saved.status_code == 303
    assert "The opening hours are saved." in after.text
    assert "2027-01-01" in after.text
    assert missing.status_code == 404
    assert "The chat is closed now." in chat.text
    with sqlite3.connect(relay.database) as db:
        days = db.execute("SELECT day FROM closed_dates ORDER BY day").fetchall()
    assert [day[0] for day in days] == ["2026-12-25", "2027-01-01"]


async def test_hours_page_open_all_hours_again(
    relay: RelayServer, visitor_client: httpx.AsyncClient
) -> None:
    admin = await staff_client(relay, "ada", "Ada", "admin")
    async with aclosing(admin):
        page = await admin.get("/dashboard/sites/1/hours")
        await post_form(
            admin,
            page.text,
            "/dashboard/sites/1/hours",
            limited="yes",
            time_zone="Europe/Malta",
        )
        closed = await visitor_client.get("/chat?site=demo")
        await post_form(admin, page.text, "/dashboard/sites/1/hours")
    reopened = await visitor_client.get("/chat?site=demo")

    assert "The chat is closed now." in closed.text
    assert "The chat is closed now." not in reopened.text
    assert re.search(r'data-within-hours="true"', reopened.text)


async def test_inbox_long_maltese_reply_is_kept(
    relay: RelayServer, visitor_client: httpx.AsyncClient
) -> None:
    code = reply_code((await leave(visitor_client, "Għandi bżonn għajnuna.")).text)
    alex = await staff_client(relay, "alex", "Alex")
    # Each "ħ" is two bytes of UTF-8 and six once URL-encoded.
    body = "Aħna hawn għalik. " + "ħ" * 3900
    async with aclosing(alex):
        listing = await alex.get("/dashboard/inbox")
        conversation = conversation_id(relay)
        claimed = await post_form(
            alex, listing.text, f"/dashboard/inbox/{conversation}/claim"
        )
        page = await alex.get(claimed.headers["location"])
        replied = await post_form(
            alex, page.text, f"/dashboard/inbox/{conversation}/reply", body=body
        )
    thread = await open_code(visitor_client, code)

    assert len(body) < 4000
    assert replied.status_code == 303
    assert body in thread.text


async def test_hours_form_saves_every_field_a_browser_sends(
    relay: RelayServer,
) -> None:
    admin = await staff_client(relay, "ada", "Ada", "admin")
    async with aclosing(admin):
        page = await admin.get("/dashboard/sites/1/hours")
        days = {f"day{weekday}": "09:00-17:00" for weekday in range(7)}
        saved = await post_form(
            admin,
            page.text,
            "/dashboard/sites/1/hours",
            limited="yes",
            time_zone="Europe/Malta",
            closed_dates="2026-12-25",
            **days,
        )
    assert saved.status_code == 303
    with sqlite3.connect(relay.database) as db:
        rows = db.execute("SELECT COUNT(*) FROM opening_hours").fetchone()[0]
    assert rows == 7
