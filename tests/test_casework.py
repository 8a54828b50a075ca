"""Case notes, labels, statistics pages and the post-chat question over real HTTP
against a real ``vso serve``: who may open what, forms, CSV and storage."""

from __future__ import annotations

import asyncio
import csv
import html
import io
import re
import sqlite3
import time
from pathlib import Path

import httpx
import markupsafe
import pytest

from relay.crypto import new_key_text
from tests.relayserver import Client, RelayServer
from tests.staff import csrf_of as csrf
from tests.staff import staff_client
from tests.test_relay import (
    Chat,
    demo_volunteer,
    open_chat,
    running_relay,
    visitor_send,
)

pytestmark = pytest.mark.anyio

SECRET_NOTE = "Visitor mentioned a knife at home, needs a safe place"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def session_client(relay: RelayServer, cookie: str) -> httpx.AsyncClient:
    """Return an unopened client that sends the session cookie ``cookie``."""
    client = httpx.AsyncClient(base_url=relay.base_url)
    client.cookies.set("vso_session", cookie)
    return client


async def demo_client(relay: RelayServer) -> httpx.AsyncClient:
    assert relay.demo_password is not None
    return session_client(relay, await relay.sign_in("demo", relay.demo_password))


async def ended_chat(relay: RelayServer, volunteer: Client) -> Chat:
    """Run a short chat with ``volunteer`` and let the volunteer end it."""
    chat = await open_chat(relay, volunteer)
    await chat.visitor.send(visitor_send("c1", "hello"))
    await chat.visitor.expect("ack")
    await volunteer.send({"type": "end", "conversation": chat.conversation})
    await volunteer.expect("ended", conversation=chat.conversation)
    return chat


async def post_note(
    client: httpx.AsyncClient, conversation: str, note: str, labels: list[int]
) -> httpx.Response:
    page = await client.get(f"/dashboard/notes/{conversation}")
    data = {
        "csrf_token": csrf(page),
        "note": note,
        "label": [str(label) for label in labels],
    }
    return await client.post(f"/dashboard/notes/{conversation}", data=data)


def label_ids(page: httpx.Response) -> dict[str, int]:
    return {
        html.unescape(name).strip(): int(value)
        for value, name in re.findall(
            r'name="label" value="(\d+)"[^>]*> ([^<(]+)', page.text
        )
    }


def database_rows(relay: RelayServer, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(relay.database) as db:
        return list(db.execute(sql))


# Case notes


async def test_note_saved_and_listed(relay: RelayServer) -> None:
    volunteer = await demo_volunteer(relay)
    chat = await ended_chat(relay, volunteer)
    async with await demo_client(relay) as client:
        waiting = await client.get("/dashboard/notes")
        page = await client.get(f"/dashboard/notes/{chat.conversation}")
        ids = label_ids(page)
        saved = await post_note(
            client, chat.conversation, SECRET_NOTE, [ids["Assault"], ids["Police"]]
        )
        after = await client.get(saved.headers["location"])
        reopened = await client.get(f"/dashboard/notes/{chat.conversation}")

    assert f"/dashboard/notes/{chat.conversation}" in waiting.text
    assert "Write the note" in waiting.text
    assert saved.status_code == 303
    assert "The case note is saved." in after.text
    assert "Every ended chat has its note." in after.text
    assert "Edit the note" in after.text
    assert html.escape(SECRET_NOTE) in reopened.text
    checked = re.findall(r'value="(\d+)" checked', reopened.text)
    assert sorted(int(value) for value in checked) == sorted(
        [ids["Assault"], ids["Police"]]
    )


async def test_note_encrypted_in_database(relay: RelayServer) -> None:
    volunteer = await demo_volunteer(relay)
    chat = await ended_chat(relay, volunteer)
    async with await demo_client(relay) as client:
        saved = await post_note(client, chat.conversation, SECRET_NOTE, [])

    stored = database_rows(relay, "SELECT note FROM case_notes")
    raw = b"".join(path.read_bytes() for path in relay.directory.glob("vso.sqlite3*"))
    assert saved.status_code == 303
    assert len(stored) == 1
    assert str(stored[0][0]).startswith("vso1:")
    assert SECRET_NOTE.encode() not in raw
    assert b"knife" not in raw
    assert b"knife" not in relay.log().encode()


async def test_note_hostile_html_escaped(relay: RelayServer) -> None:
    volunteer = await demo_volunteer(relay)
    chat = await ended_chat(relay, volunteer)
    hostile = '<script>alert(1)</script><img src=x onerror="alert(2)">'
    async with await demo_client(relay) as client:
        await post_note(client, chat.conversation, hostile, [])
        page = await client.get(f"/dashboard/notes/{chat.conversation}")

    assert "<script>alert(1)" not in page.text
    assert str(markupsafe.escape(hostile)) in page.text


async def test_note_other_volunteer_403(relay: RelayServer) -> None:
    volunteer = await demo_volunteer(relay)
    chat = await ended_chat(relay, volunteer)
    async with await demo_client(relay) as owner:
        await post_note(owner, chat.conversation, SECRET_NOTE, [])
    async with await staff_client(relay, "alex", "volunteer") as other:
        read = await other.get(f"/dashboard/notes/{chat.conversation}")
        unknown = await other.get("/dashboard/notes/no-such-conversation")
        listing = await other.get("/dashboard/notes")
        page = await other.get("/dashboard")
        write = await other.post(
            f"/dashboard/notes/{chat.conversation}",
            data={"csrf_token": csrf(page), "note": "overwritten"},
        )

    assert read.status_code == 403
    assert unknown.status_code == 403
    assert read.text == unknown.text
    assert "knife" not in read.text
    assert chat.conversation not in listing.text
    assert write.status_code == 403
    async with await demo_client(relay) as owner:
        kept = await owner.get(f"/dashboard/notes/{chat.conversation}")
    assert html.escape(SECRET_NOTE) in kept.text


async def test_note_supervisor_may_read(relay: RelayServer) -> None:
    volunteer = await demo_volunteer(relay)
    chat = await ended_chat(relay, volunteer)
    async with await demo_client(relay) as owner:
        await post_note(owner, chat.conversation, SECRET_NOTE, [])
    async with await staff_client(relay, "sofia", "supervisor") as supervisor:
        listing = await supervisor.get("/dashboard/notes")
        page = await supervisor.get(f"/dashboard/notes/{chat.conversation}")

    assert page.status_code == 200
    assert html.escape(SECRET_NOTE) in page.text
    assert "Sam" in listing.text


async def test_note_open_conversation_409(relay: RelayServer) -> None:
    volunteer = await demo_volunteer(relay)
    chat = await open_chat(relay, volunteer)
    async with await demo_client(relay) as client:
        response = await post_note(client, chat.conversation, "too early", [])

    assert response.status_code == 409
    assert "still open" in response.text
    assert "too early" in response.text
    assert database_rows(relay, "SELECT * FROM case_notes") == []


async def test_note_bad_forms_rejected(relay: RelayServer) -> None:
    volunteer = await demo_volunteer(relay)
    chat = await ended_chat(relay, volunteer)
    async with await demo_client(relay) as client:
        page = await client.get(f"/dashboard/notes/{chat.conversation}")
        token = csrf(page)
        url = f"/dashboard/notes/{chat.conversation}"
        bad_label = await client.post(
            url, data={"csrf_token": token, "note": "kept", "label": "x1"}
        )
        unknown_label = await client.post(
            url, data={"csrf_token": token, "note": "kept", "label": "999999"}
        )
        too_long = await client.post(
            url, data={"csrf_token": token, "note": "a" * 10_001}
        )
        no_csrf = await client.post(url, data={"note": "kept"})
        cross_site = await client.post(
            url,
            data={"csrf_token": token, "note": "kept"},
            headers={"sec-fetch-site": "cross-site"},
        )

    assert bad_label.status_code == 400
    assert unknown_label.status_code == 400
    assert "kept" in unknown_label.text
    assert too_long.status_code == 400
    assert "10,000" in too_long.text
    assert no_csrf.status_code == 400
    assert cross_site.status_code == 403
    assert database_rows(relay, "SELECT * FROM case_notes") == []


# Labels


async def test_labels_admin_only(relay: RelayServer) -> None:
    async with await staff_client(relay, "sofia", "supervisor") as supervisor:
        page = await supervisor.get("/dashboard/labels")
        post = await supervisor.post(
            "/dashboard/labels", data={"action": "add", "kind": "category"}
        )
    async with await demo_client(relay) as volunteer:
        volunteer_page = await volunteer.get("/dashboard/labels")

    assert page.status_code == 403
    assert post.status_code == 403
    assert volunteer_page.status_code == 403


async def test_labels_add_rename_retire(relay: RelayServer) -> None:
    volunteer = await demo_volunteer(relay)
    chat = await ended_chat(relay, volunteer)
    async with await staff_client(relay, "ada", "admin") as admin:
        page = await admin.get("/dashboard/labels")
        token = csrf(page)
        added = await admin.post(
            "/dashboard/labels",
            data={
                "csrf_token": token,
                "action": "add",
                "kind": "category",
                "name": "  Arson  ",
            },
        )
        duplicate = await admin.post(
            "/dashboard/labels",
            data={
                "csrf_token": token,
                "action": "add",
                "kind": "category",
                "name": "Arson",
            },
        )
        label = int(re.findall(r'name="label" value="(\d+)"', added.text)[-1])
        renamed = await admin.post(
            "/dashboard/labels",
            data={
                "csrf_token": token,
                "action": "rename",
                "label": str(label),
                "name": "Arson or criminal damage",
            },
        )
        empty = await admin.post(
            "/dashboard/labels",
            data={
                "csrf_token": token,
                "action": "rename",
                "label": str(label),
                "name": "   ",
            },
        )
        # The admin also had the chat's note: admins may write any note.
        noted = await post_note(admin, chat.conversation, "", [label])
        retired = await admin.post(
            "/dashboard/labels",
            data={"csrf_token": token, "action": "retire", "label": str(label)},
        )
        unknown = await admin.post(
            "/dashboard/labels",
            data={"csrf_token": token, "action": "retire", "label": "999999"},
        )
        note_page = await admin.get(f"/dashboard/notes/{chat.conversation}")
    async with await demo_client(relay) as client:
        other = await ended_chat(relay, volunteer)
        offered = await client.get(f"/dashboard/notes/{other.conversation}")
        refused = await post_note(client, other.conversation, "", [label])

    assert added.status_code == 200
    assert "Added “Arson”." in added.text
    assert duplicate.status_code == 400
    assert "already exists" in duplicate.text
    assert renamed.status_code == 200
    assert "Arson or criminal damage" in renamed.text
    assert empty.status_code == 400
    assert noted.status_code == 303
    assert retired.status_code == 200
    assert "(retired)" in retired.text
    assert unknown.status_code == 404
    assert f'value="{label}" checked' in note_page.text
    assert f'value="{label}"' not in offered.text
    assert refused.status_code == 400
    assert "retired" in refused.text


# Statistics


async def test_statistics_volunteer_403(relay: RelayServer) -> None:
    async with await demo_client(relay) as client:
        page = await client.get("/dashboard/statistics")
        export = await client.get("/dashboard/statistics/daily.csv")
        dashboard = await client.get("/dashboard")

    assert page.status_code == 403
    assert export.status_code == 403
    assert "/dashboard/statistics" not in dashboard.text


async def test_statistics_signed_out_redirect(relay: RelayServer) -> None:
    async with httpx.AsyncClient(base_url=relay.base_url) as client:
        page = await client.get("/dashboard/statistics")
        export = await client.get("/dashboard/statistics/daily.csv")

    assert page.status_code == 303
    assert export.status_code == 303


async def test_statistics_page_counts_chat(relay: RelayServer) -> None:
    volunteer = await demo_volunteer(relay)
    chat = await ended_chat(relay, volunteer)
    async with await demo_client(relay) as client:
        ids = label_ids(await client.get(f"/dashboard/notes/{chat.conversation}"))
        await post_note(client, chat.conversation, SECRET_NOTE, [ids["Hate crime"]])
    async with await staff_client(relay, "sofia", "supervisor") as supervisor:
        page = await supervisor.get("/dashboard/statistics")
        daily = await supervisor.get("/dashboard/statistics/daily.csv")
        categories = await supervisor.get("/dashboard/statistics/categories.csv")

    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "<script" not in page.text
    assert page.text.count('<svg class="chart"') == 5
    assert '<title id="chart-daily-title">Conversations per day</title>' in page.text
    assert "knife" not in page.text
    rows = list(csv.reader(io.StringIO(daily.text, newline="")))
    assert daily.headers["content-type"] == "text/csv; charset=utf-8"
    assert "attachment" in daily.headers["content-disposition"]
    assert rows[0] == ["day", "site", "channel", "conversations", "missed"]
    assert len(rows) == 2
    assert rows[1][1:] == ["Demo partner site", "chat", "1", "0"]
    category_rows = dict(csv.reader(io.StringIO(categories.text, newline="")))
    assert category_rows["Hate crime"] == "1"
    assert category_rows["Assault"] == "0"


async def test_statistics_coverage_uses_site_hours(relay: RelayServer) -> None:
    march = {"from": "2026-03-01", "to": "2026-03-31"}
    async with await staff_client(relay, "ada", "admin") as admin:
        form = await admin.get("/dashboard/sites/1/hours")
        saved = await admin.post(
            "/dashboard/sites/1/hours",
            data={
                "csrf_token": csrf(form),
                "limited": "yes",
                "time_zone": "Europe/Malta",
                "day0": "09:00-17:00",
                "closed_dates": "2026-03-16",
            },
        )
        admin_page = await admin.get("/dashboard/statistics", params=march)
    async with await staff_client(relay, "sofia", "supervisor") as supervisor:
        page = await supervisor.get("/dashboard/statistics", params=march)
        export = await supervisor.get(
            "/dashboard/statistics/coverage.csv", params=march
        )

    assert saved.status_code == 303
    assert (
        "<strong>Demo partner site</strong>: hours in Europe/Malta: Monday:"
        " 09:00-17:00; Tuesday: closed;" in page.text
    )
    assert "Sunday: closed. Closed on 2026-03-16. <a" in admin_page.text
    assert "Sunday: closed. Closed on 2026-03-16.</li>" in page.text
    assert 'href="/dashboard/sites/1/hours"' in admin_page.text
    assert 'href="/dashboard/sites/1/hours"' not in page.text
    rows = {row[0]: row[1:] for row in csv.reader(io.StringIO(export.text))}
    # Mondays of March 2026 are open eight hours; 16 March is a closed date.
    for day in ("02", "09", "23", "30"):
        assert rows[f"2026-03-{day}"] == ["480", "0", "0.0"], day
    assert rows["2026-03-16"] == ["0", "0", ""]
    assert rows["2026-03-17"] == ["0", "0", ""]
    assert rows["whole range"] == ["1920", "0", "0.0"]


async def test_statistics_bad_ranges_400(relay: RelayServer) -> None:
    async with await staff_client(relay, "sofia", "supervisor") as supervisor:
        reversed_range = await supervisor.get(
            "/dashboard/statistics", params={"from": "2026-03-31", "to": "2026-03-01"}
        )
        huge = await supervisor.get(
            "/dashboard/statistics", params={"from": "2020-01-01", "to": "2026-01-01"}
        )
        malformed = await supervisor.get(
            "/dashboard/statistics", params={"from": "<b>x</b>", "to": "2026-01-01"}
        )
        missing = await supervisor.get(
            "/dashboard/statistics", params={"from": "2026-01-01"}
        )
        csv_reversed = await supervisor.get(
            "/dashboard/statistics/daily.csv",
            params={"from": "2026-03-31", "to": "2026-03-01"},
        )
        unknown_table = await supervisor.get("/dashboard/statistics/nothing.csv")

    assert reversed_range.status_code == 400
    assert "is before the start date" in reversed_range.text
    assert huge.status_code == 400
    assert "choose at most 366" in huge.text
    assert malformed.status_code == 400
    assert "<b>x</b>" not in malformed.text
    assert missing.status_code == 400
    assert csv_reversed.status_code == 400
    assert unknown_table.status_code == 404
    assert "daily" in unknown_table.text


# Post-chat question


async def test_feedback_counted_once(relay: RelayServer) -> None:
    volunteer = await demo_volunteer(relay)
    chat = await ended_chat(relay, volunteer)
    url = "/chat/feedback?site=demo"
    async with httpx.AsyncClient(base_url=relay.base_url) as client:
        first = await client.post(
            url, data={"chat_token": chat.token, "helped": "yes", "rating": "4"}
        )
        second = await client.post(
            url, data={"chat_token": chat.token, "helped": "no", "rating": "1"}
        )

    assert first.status_code == 200
    assert "Thank you for your answers." in first.text
    assert first.headers["cache-control"] == "no-store"
    assert second.status_code == 409
    assert "already counted" in second.text
    rows = database_rows(
        relay, "SELECT feedback_given, helped, rating FROM conversation_statistics"
    )
    assert rows == [(1, 1, 4)]


async def test_feedback_bad_posts_rejected(relay: RelayServer) -> None:
    volunteer = await demo_volunteer(relay)
    running = await open_chat(relay, volunteer)
    url = "/chat/feedback?site=demo"
    async with httpx.AsyncClient(base_url=relay.base_url) as client:
        still_open = await client.post(
            url, data={"chat_token": running.token, "helped": "yes"}
        )
        await volunteer.send({"type": "end", "conversation": running.conversation})
        await volunteer.expect("ended", conversation=running.conversation)
        empty = await client.post(url, data={"chat_token": running.token})
        rating = await client.post(
            url, data={"chat_token": running.token, "rating": "6"}
        )
        helped = await client.post(
            url, data={"chat_token": running.token, "helped": "1"}
        )
        unknown = await client.post(url, data={"chat_token": "A" * 43, "helped": "yes"})
        other_site = await client.post(
            "/chat/feedback?site=nope",
            data={"chat_token": running.token, "helped": "yes"},
        )
        cross_site = await client.post(
            url,
            data={"chat_token": running.token, "helped": "yes"},
            headers={"sec-fetch-site": "cross-site"},
        )

    assert still_open.status_code == 409
    assert empty.status_code == 400
    assert rating.status_code == 400
    assert helped.status_code == 400
    assert unknown.status_code == 404
    assert other_site.status_code == 404
    assert cross_site.status_code == 403
    rows = database_rows(relay, "SELECT feedback_given FROM conversation_statistics")
    assert rows == [(0,)]


# Available time


async def wait_for_rows(relay: RelayServer, sql: str, count: int) -> None:
    """Poll the database until ``sql`` returns ``count`` rows, for up to 5 s."""
    deadline = time.monotonic() + 5
    while len(database_rows(relay, sql)) != count:
        assert time.monotonic() < deadline, f"{sql} did not return {count} rows"
        await asyncio.sleep(0.05)


async def test_availability_intervals_recorded(relay: RelayServer) -> None:
    all_rows = "SELECT * FROM availability_intervals"
    open_rows = all_rows + " WHERE ended_at IS NULL"
    volunteer = await demo_volunteer(relay)
    await wait_for_rows(relay, open_rows, 1)

    await volunteer.send({"type": "availability", "available": False})
    await wait_for_rows(relay, open_rows, 0)
    await volunteer.send({"type": "availability", "available": True})
    await wait_for_rows(relay, open_rows, 1)
    await volunteer.close()
    await wait_for_rows(relay, open_rows, 0)

    rows = database_rows(
        relay, "SELECT started_at, ended_at FROM availability_intervals"
    )
    assert len(rows) == 2
    for started, ended in rows:
        assert isinstance(started, str) and isinstance(ended, str)
        assert started < ended


async def test_cli_purge_keeps_statistics(relay: RelayServer) -> None:
    volunteer = await demo_volunteer(relay)
    chat = await ended_chat(relay, volunteer)
    tables = ("summary", "daily", "weekly", "categories", "referrals", "feedback")
    async with await demo_client(relay) as client:
        ids = label_ids(await client.get(f"/dashboard/notes/{chat.conversation}"))
        await post_note(client, chat.conversation, SECRET_NOTE, [ids["Trafficking"]])
    async with httpx.AsyncClient(base_url=relay.base_url) as visitor:
        await visitor.post(
            "/chat/feedback?site=demo", data={"chat_token": chat.token, "rating": "3"}
        )
    async with await staff_client(relay, "sofia", "supervisor") as supervisor:
        before = {
            name: (await supervisor.get(f"/dashboard/statistics/{name}.csv")).text
            for name in tables
        }
        purged = relay.cli("purge", "--days", "0")
        after = {
            name: (await supervisor.get(f"/dashboard/statistics/{name}.csv")).text
            for name in tables
        }
        note_page = await supervisor.get(f"/dashboard/notes/{chat.conversation}")

    assert purged.returncode == 0, purged.stderr
    assert after == before
    assert "Trafficking,1" in after["categories"]
    assert "rating 3 of 5,1" in after["feedback"]
    assert database_rows(relay, "SELECT * FROM messages") == []
    assert database_rows(relay, "SELECT * FROM case_notes") == []
    assert database_rows(relay, "SELECT * FROM conversations") == []
    assert note_page.status_code == 403


async def test_rotate_key_reseals_notes(tmp_path: Path) -> None:
    old_key, new_key = new_key_text(), new_key_text()
    async with running_relay(tmp_path, data_key=old_key) as relay:
        volunteer = await demo_volunteer(relay)
        chat = await ended_chat(relay, volunteer)
        async with await demo_client(relay) as client:
            await post_note(client, chat.conversation, SECRET_NOTE, [])
        await volunteer.close()
        await chat.visitor.close()
    relay.env["VSO_DATA_KEY"] = f"{new_key} {old_key}"
    result = relay.cli("rotate-key")
    relay.env["VSO_DATA_KEY"] = new_key
    await asyncio.to_thread(relay.start)
    try:
        async with await demo_client(relay) as client:
            page = await client.get(f"/dashboard/notes/{chat.conversation}")
    finally:
        await asyncio.to_thread(relay.stop)

    assert result.returncode == 0, result.stderr
    assert "1 case notes" in result.stdout
    assert page.status_code == 200
    assert html.escape(SECRET_NOTE) in page.text


async def test_label_changes_enter_the_audit_log(relay: RelayServer) -> None:
    async with await staff_client(relay, "ada", "admin") as admin:
        page = await admin.get("/dashboard/labels")
        added = await admin.post(
            "/dashboard/labels",
            data={
                "csrf_token": csrf(page),
                "action": "add",
                "kind": "category",
                "name": "Arson",
            },
        )
        assert added.status_code == 200
        audit = await admin.get("/dashboard/admin/audit")
    assert "label.add" in audit.text
    assert "Arson" not in audit.text
