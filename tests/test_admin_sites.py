"""Partner sites in the dashboard over real HTTP: the form with hostile input,
the embed page, and the greeting and colour on the chat page."""

from __future__ import annotations

import html
import re
import sqlite3

import httpx
import pytest

from tests.relayserver import RelayServer
from tests.staff import csrf_of, staff_client

pytestmark = pytest.mark.anyio

FORM = {
    "name": "Harbour Aid",
    "origins": "https://www.harbour.example",
    "greeting": "Welcome to Harbour Aid.",
    "brand_colour": "#7a1f5c",
    "exit_url": "https://www.example.org/",
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def site_rows(relay: RelayServer) -> list[tuple[str, ...]]:
    with sqlite3.connect(relay.database) as db:
        return list(db.execute("SELECT * FROM sites ORDER BY id"))


async def add_site(admin: httpx.AsyncClient, **fields: str) -> httpx.Response:
    page = await admin.get("/dashboard/admin/sites/new")
    return await admin.post(
        "/dashboard/admin/sites",
        data={**FORM, **fields, "csrf_token": csrf_of(page)},
    )


async def test_add_site_opens_embed_page(relay: RelayServer) -> None:
    admin = await staff_client(relay, "ada", "admin")
    added = await add_site(admin)
    assert added.status_code == 303
    assert added.headers["location"] == "/dashboard/admin/sites/2/embed"
    embed = await admin.get("/dashboard/admin/sites/2/embed")
    key = site_rows(relay)[1][1]
    text = html.unescape(embed.text)
    assert f'{relay.base_url}/chat?site={key}" target="_blank"' in text
    assert f'<script async src="{relay.base_url}/widget/loader.js"></script>' in text
    assert f'<iframe src="{relay.base_url}/chat?site={key}"' in text
    assert f"script-src {relay.base_url}" in text
    assert f"frame-src {relay.base_url}" in text
    assert "WordPress" in text
    assert "Custom HTML" in text
    assert 'href="/dashboard/sites/2/hours"' in embed.text
    assert "frame-src 'self'" in embed.headers["content-security-policy"]
    listed = await admin.get("/dashboard/admin/sites")
    assert "Harbour Aid" in listed.text
    await admin.aclose()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("name", "<script>alert(1)</script>" * 5, "1 to 100 characters"),
        ("origins", "https://ok.example\njavascript:alert(1)", "is not an origin"),
        ("origins", "https://x.example/<b>", "has a path or query"),
        ("brand_colour", "#ffffff", "choose a darker colour"),
        ("brand_colour", "</style><script>", "is not a colour"),
        ("exit_url", "http://plain.example/", "must start with https://"),
        ("exit_url", "data:text/html,<script>alert(1)</script>", "not an http"),
        ("greeting", "a" * 5000, "at most 300"),
    ],
)
async def test_site_form_rejects_hostile_input(
    relay: RelayServer, field: str, value: str, message: str
) -> None:
    admin = await staff_client(relay, "ada", "admin")
    before = site_rows(relay)
    answer = await add_site(admin, **{field: value})
    assert answer.status_code == 400
    assert html.escape(message, quote=False) in answer.text.replace("&#39;", "'")
    assert "<script>" not in answer.text
    assert "nothing was saved" in answer.text
    assert site_rows(relay) == before
    await admin.aclose()


async def test_site_form_keeps_typed_values(relay: RelayServer) -> None:
    admin = await staff_client(relay, "ada", "admin")
    answer = await add_site(admin, brand_colour="#eeeeee", greeting='Hi "there" <b>')
    assert answer.status_code == 400
    assert 'value="#eeeeee"' in answer.text
    assert "Hi &#34;there&#34; &lt;b&gt;" in answer.text
    await admin.aclose()


async def test_site_form_oversize_post_rejected(relay: RelayServer) -> None:
    admin = await staff_client(relay, "ada", "admin")
    before = site_rows(relay)
    page = await admin.get("/dashboard/admin/sites/new")
    answer = await admin.post(
        "/dashboard/admin/sites",
        data={**FORM, "greeting": "x" * 20000, "csrf_token": csrf_of(page)},
    )
    assert answer.status_code == 400
    assert site_rows(relay) == before
    await admin.aclose()


async def test_edit_site_changes_chat_page(relay: RelayServer) -> None:
    admin = await staff_client(relay, "ada", "admin")
    page = await admin.get("/dashboard/admin/sites/1")
    assert "demo" in page.text.lower()
    hostile = "<img src=x onerror=alert(1)> Welcome"
    answer = await admin.post(
        "/dashboard/admin/sites/1",
        data={
            **FORM,
            "origins": "https://www.harbour.example",
            "greeting": hostile,
            "csrf_token": csrf_of(page),
        },
    )
    assert answer.status_code == 303
    key = site_rows(relay)[0][1]
    async with httpx.AsyncClient(base_url=relay.base_url) as visitor:
        chat = await visitor.get(f"/chat?site={key}")
        css_url = re.search(r'href="(/widget/site\.css\?[^"]+)"', chat.text)
        assert css_url is not None
        stylesheet = await visitor.get(html.unescape(css_url.group(1)))
    assert "&lt;img src=x onerror=alert(1)&gt; Welcome" in chat.text
    assert hostile not in chat.text
    assert "style=" not in chat.text
    assert "unsafe-inline" not in chat.headers["content-security-policy"]
    assert "https://www.harbour.example" in chat.headers["content-security-policy"]
    assert stylesheet.headers["content-type"].startswith("text/css")
    assert "--accent: #7a1f5c;" in stylesheet.text
    await admin.aclose()


async def test_site_stylesheet_unknown_site_empty(relay: RelayServer) -> None:
    async with httpx.AsyncClient(base_url=relay.base_url) as visitor:
        for query in ("site=nope", "site=" + "x" * 500, "", "site=demo"):
            answer = await visitor.get(f"/widget/site.css?{query}")
            assert answer.status_code == 200
            assert answer.text == ""


async def test_unknown_site_404(relay: RelayServer) -> None:
    admin = await staff_client(relay, "ada", "admin")
    for path in ("999", "abc", "999/embed", "999/preview", "0"):
        answer = await admin.get(f"/dashboard/admin/sites/{path}")
        assert answer.status_code == 404
        assert "does not exist" in answer.text
    page = await admin.get("/dashboard/admin/sites/new")
    answer = await admin.post(
        "/dashboard/admin/sites/999", data={**FORM, "csrf_token": csrf_of(page)}
    )
    assert answer.status_code == 404
    await admin.aclose()


async def test_site_form_without_csrf_400(relay: RelayServer) -> None:
    admin = await staff_client(relay, "ada", "admin")
    before = site_rows(relay)
    answer = await admin.post("/dashboard/admin/sites", data=FORM)
    assert answer.status_code == 400
    cross = await admin.post(
        "/dashboard/admin/sites",
        data=FORM,
        headers={"sec-fetch-site": "cross-site"},
    )
    assert cross.status_code == 403
    assert site_rows(relay) == before
    await admin.aclose()
