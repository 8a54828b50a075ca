"""Saved replies and the directory's status for admins, and the chat panel's
search, over real HTTP: roles, forms, validation and search."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator

import httpx
import pyotp
import pytest

from tests.relayserver import RelayServer

pytestmark = pytest.mark.anyio

PASSWORD = "admin-password-123"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def csrf(page: httpx.Response) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match is not None, page.text
    return html.unescape(match.group(1))


@pytest.fixture
async def admin(relay: RelayServer) -> AsyncIterator[httpx.AsyncClient]:
    """A client signed in as admin "ada", enrolled in two-factor sign-in."""
    result = relay.cli(
        "volunteer",
        "add",
        "ada",
        "--display-name",
        "Ada",
        "--role",
        "admin",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert result.returncode == 0, result.stderr
    async with httpx.AsyncClient(base_url=relay.base_url) as client:
        page = await client.get("/dashboard")
        page = await client.post(
            "/dashboard/login",
            data={"username": "ada", "password": PASSWORD, "csrf_token": csrf(page)},
        )
        secret = re.search(r'<code class="totp-secret">([A-Z2-7]+)</code>', page.text)
        assert secret is not None, page.text
        await client.post(
            "/dashboard/login/code",
            data={
                "code": pyotp.TOTP(secret.group(1)).now(),
                "csrf_token": csrf(page),
            },
        )
        assert client.cookies.get("vso_session") is not None
        yield client


@pytest.fixture
async def staff(relay: RelayServer) -> AsyncIterator[httpx.AsyncClient]:
    """A client signed in as the demo volunteer."""
    cookie = await relay.sign_in("demo", relay.demo_password or "")
    async with httpx.AsyncClient(
        base_url=relay.base_url, cookies={"vso_session": cookie}
    ) as client:
        yield client


async def add(
    client: httpx.AsyncClient, title: str, body: str, language: str = "en"
) -> httpx.Response:
    page = await client.get("/dashboard/replies")
    return await client.post(
        "/dashboard/replies",
        data={
            "csrf_token": csrf(page),
            "language": language,
            "title": title,
            "body": body,
        },
    )


def reply_ids(page: httpx.Response) -> list[int]:
    return [int(n) for n in re.findall(r'href="/dashboard/replies/(\d+)"', page.text)]


async def test_admin_adds_and_lists_reply(admin: httpx.AsyncClient) -> None:
    response = await add(admin, "Greeting", "Hello, I am here to listen.")
    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard/replies"
    page = await admin.get("/dashboard/replies")
    assert page.headers["cache-control"] == "no-store"
    assert "Greeting" in page.text
    assert "Hello, I am here to listen." in page.text
    assert len(reply_ids(page)) == 1


async def test_admin_edits_reply(admin: httpx.AsyncClient) -> None:
    await add(admin, "Greeting", "Hello.")
    reply_id = reply_ids(await admin.get("/dashboard/replies"))[0]
    form = await admin.get(f"/dashboard/replies/{reply_id}")
    assert 'value="Greeting"' in form.text
    response = await admin.post(
        f"/dashboard/replies/{reply_id}",
        data={
            "csrf_token": csrf(form),
            "language": "mt",
            "title": "Merħba",
            "body": "Bonġu, jien hawn biex nisma'.",
        },
    )
    assert response.status_code == 303
    page = await admin.get("/dashboard/replies")
    assert "Merħba" in page.text
    assert "Greeting" not in page.text


async def test_admin_deletes_reply(admin: httpx.AsyncClient) -> None:
    await add(admin, "Greeting", "Hello.")
    page = await admin.get("/dashboard/replies")
    reply_id = reply_ids(page)[0]
    response = await admin.post(
        f"/dashboard/replies/{reply_id}/delete", data={"csrf_token": csrf(page)}
    )
    assert response.status_code == 303
    assert reply_ids(await admin.get("/dashboard/replies")) == []
    again = await admin.post(
        f"/dashboard/replies/{reply_id}/delete", data={"csrf_token": csrf(page)}
    )
    assert again.status_code == 404
    missing = await admin.get(f"/dashboard/replies/{reply_id}")
    assert missing.status_code == 404
    assert "does not exist" in missing.text


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"title": ""}, "Give the reply a title"),
        ({"title": "x" * 101}, "Give the reply a title"),
        ({"title": "a\u202eb"}, "control or format characters"),
        ({"body": "   "}, "Write the reply"),
        ({"body": "x" * 4001}, "Write the reply"),
        ({"language": "fr"}, "Choose the language"),
    ],
)
async def test_invalid_reply_keeps_input(
    admin: httpx.AsyncClient, fields: dict[str, str], message: str
) -> None:
    page = await admin.get("/dashboard/replies")
    data = {
        "csrf_token": csrf(page),
        "language": "en",
        "title": "Kept <title>",
        "body": "Kept <b>body</b>",
        **fields,
    }
    response = await admin.post("/dashboard/replies", data=data)
    assert response.status_code == 400
    assert message in html.unescape(response.text)
    if "body" not in fields:
        assert "Kept &lt;b&gt;body&lt;/b&gt;" in response.text
    assert reply_ids(await admin.get("/dashboard/replies")) == []


async def test_reply_form_needs_csrf_and_same_origin(
    admin: httpx.AsyncClient,
) -> None:
    page = await admin.get("/dashboard/replies")
    fields = {"language": "en", "title": "T", "body": "B"}
    no_token = await admin.post("/dashboard/replies", data=fields)
    assert no_token.status_code == 400
    cross_site = await admin.post(
        "/dashboard/replies",
        data={**fields, "csrf_token": csrf(page)},
        headers={"origin": "https://evil.example", "sec-fetch-site": "cross-site"},
    )
    assert cross_site.status_code == 403
    assert reply_ids(await admin.get("/dashboard/replies")) == []


async def test_volunteer_cannot_manage_replies(
    admin: httpx.AsyncClient, staff: httpx.AsyncClient
) -> None:
    await add(admin, "Greeting", "Hello.")
    reply_id = reply_ids(await admin.get("/dashboard/replies"))[0]
    dashboard = await staff.get("/dashboard")
    token = csrf(dashboard)
    answers = [
        await staff.get("/dashboard/replies"),
        await staff.get(f"/dashboard/replies/{reply_id}"),
        await staff.get("/dashboard/content"),
        await staff.post(
            "/dashboard/replies",
            data={"csrf_token": token, "language": "en", "title": "T", "body": "B"},
        ),
        await staff.post(
            f"/dashboard/replies/{reply_id}",
            data={"csrf_token": token, "language": "en", "title": "T", "body": "B"},
        ),
        await staff.post(
            f"/dashboard/replies/{reply_id}/delete", data={"csrf_token": token}
        ),
    ]
    for answer in answers:
        assert answer.status_code == 403, answer.request.url
        assert answer.text == "You do not have access to this page."
    assert "Saved replies" not in dashboard.text
    assert len(reply_ids(await admin.get("/dashboard/replies"))) == 1


async def test_signed_out_cannot_search_or_manage(relay: RelayServer) -> None:
    async with httpx.AsyncClient(base_url=relay.base_url) as client:
        search = await client.get("/dashboard/resources/search?q=police")
        replies = await client.get("/dashboard/replies")
        post = await client.post("/dashboard/replies", data={"title": "T"})
    assert search.status_code == 303
    assert replies.status_code == 303
    assert post.status_code == 403


async def test_search_returns_resources_and_replies(
    admin: httpx.AsyncClient, staff: httpx.AsyncClient
) -> None:
    await add(admin, "Reporting to the police", "You can report whenever ready.")
    await add(admin, "Police (mt)", "Tista' tirrapporta.", language="mt")
    response = await staff.get("/dashboard/resources/search?q=police&lang=en")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    data = response.json()
    assert [r["id"] for r in data["resources"]] == ["emergency", "police"]
    assert [r["title"] for r in data["replies"]] == ["Reporting to the police"]
    maltese = (await staff.get("/dashboard/resources/search?q=korp&lang=mt")).json()
    assert [r["id"] for r in maltese["resources"]] == ["police"]
    everything = (await staff.get("/dashboard/resources/search?lang=mt")).json()
    assert everything["resources"] == []
    assert [r["title"] for r in everything["replies"]] == ["Police (mt)"]


async def test_search_rejects_bad_parameters(staff: httpx.AsyncClient) -> None:
    for query in ("lang=fr&q=x", "lang=en&q=" + "x" * 101):
        response = await staff.get(f"/dashboard/resources/search?{query}")
        assert response.status_code == 400
        assert "lang" in response.json()["error"]


async def test_admin_sees_stale_directory_entries(admin: httpx.AsyncClient) -> None:
    dashboard = await admin.get("/dashboard")
    assert "6 entries of the directory of services need checking." in dashboard.text
    page = await admin.get("/dashboard/content")
    assert page.status_code == 200
    assert "Verify every phone number" in page.text
    assert "6 entries need checking" in page.text
    assert "<code>legal-aid</code>" in page.text
    assert "2023-05-01" in page.text


async def test_volunteer_dashboard_has_no_stale_notice(
    staff: httpx.AsyncClient,
) -> None:
    dashboard = await staff.get("/dashboard")
    assert "need checking" not in dashboard.text
