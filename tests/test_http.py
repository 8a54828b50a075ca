"""Plain HTTP routes: health check, chat and demo pages, the embed loader and
the security headers on every response."""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.relayserver import RelayServer

LOADER_MAX_GZIP_BYTES = 2048


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayServer]:
    """One relay for this module; no test here changes what another one checks."""
    relay = RelayServer(tmp_path_factory.mktemp("http"))
    relay.start()
    try:
        yield relay
    finally:
        relay.stop()


def get(server: RelayServer, path: str) -> httpx.Response:
    return httpx.get(f"{server.base_url}{path}", timeout=10)


def csp_directives(response: httpx.Response) -> dict[str, list[str]]:
    """Split the Content-Security-Policy header into directive -> sources."""
    directives: dict[str, list[str]] = {}
    for part in response.headers["content-security-policy"].split(";"):
        words = part.split()
        if words:
            directives[words[0]] = words[1:]
    return directives


def script_tags(html: str) -> list[str]:
    return re.findall(r"<script\b[^>]*>", html, flags=re.IGNORECASE)


def test_healthz_ok(server: RelayServer) -> None:
    response = get(server, "/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


# Chat page


def test_chat_page_csp(server: RelayServer) -> None:
    response = get(server, "/chat?site=demo")
    directives = csp_directives(response)

    assert response.status_code == 200
    assert directives["script-src"] == ["'self'"]
    # The demo site allows the relay's own origins to embed the chat.
    assert "'self'" in directives["frame-ancestors"]
    assert f"http://127.0.0.1:{server.port}" in directives["frame-ancestors"]
    assert f"http://localhost:{server.port}" in directives["frame-ancestors"]


def test_chat_page_frame_ancestors_of_partner_site(server: RelayServer) -> None:
    result = server.cli("site", "add", "Partner", "--origin", "https://partner.example")
    match = re.search(r"with key ([A-Za-z0-9_-]+)\.", result.stdout)
    assert match is not None, result.stdout + result.stderr

    response = get(server, f"/chat?site={match.group(1)}")
    ancestors = csp_directives(response)["frame-ancestors"]

    assert response.status_code == 200
    assert ancestors == ["'self'", "https://partner.example"]


def test_chat_page_cache_and_referrer(server: RelayServer) -> None:
    response = get(server, "/chat?site=demo")

    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "no-referrer"


def test_chat_page_no_inline_script(server: RelayServer) -> None:
    response = get(server, "/chat?site=demo")
    tags = script_tags(response.text)
    # A JSON data block is never run, so the CSP allows it.
    data = [tag for tag in tags if 'type="application/json"' in tag]
    inline = [tag for tag in tags if not re.search(r"\ssrc=", tag) and tag not in data]

    assert tags != []
    assert inline == []


def test_chat_page_no_style_attribute(server: RelayServer) -> None:
    response = get(server, "/chat?site=demo")

    assert re.search(r"<[^>]*\sstyle\s*=", response.text) is None


def test_chat_without_site_404(server: RelayServer) -> None:
    response = get(server, "/chat")

    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")


def test_chat_unknown_site_404(server: RelayServer) -> None:
    response = get(server, "/chat?site=no-such-site")

    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")


# Demo page and loader


def test_demo_page_has_snippet(server: RelayServer) -> None:
    response = get(server, "/demo")
    loader_tags = [
        tag for tag in script_tags(response.text) if "/widget/loader.js" in tag
    ]

    assert response.status_code == 200
    assert 'data-vso-site="demo"' in response.text
    assert len(loader_tags) == 1
    assert re.search(r'\ssrc="[^"]*/widget/loader\.js"', loader_tags[0])
    # The inline alternative is shown as text, not embedded.
    assert "&lt;iframe src=" in response.text
    assert "/chat?site=demo" in response.text


def test_loader_script_headers(server: RelayServer) -> None:
    response = get(server, "/widget/loader.js")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert response.headers["cross-origin-resource-policy"] == "cross-origin"


def test_loader_script_small_gzipped(server: RelayServer) -> None:
    response = get(server, "/widget/loader.js")
    size = len(gzip.compress(response.content, compresslevel=9))

    assert size <= LOADER_MAX_GZIP_BYTES, f"{size} bytes gzipped"


# Dashboard and headers on every route


def test_dashboard_csp_forbids_framing(server: RelayServer) -> None:
    response = get(server, "/dashboard")

    assert csp_directives(response)["frame-ancestors"] == ["'none'"]


def test_every_route_nosniff(server: RelayServer) -> None:
    requests = [
        ("GET", "/"),
        ("GET", "/healthz"),
        ("GET", "/chat?site=demo"),
        ("GET", "/chat"),
        ("GET", "/demo"),
        ("GET", "/widget/loader.js"),
        ("GET", "/widget/static/loader.js"),
        ("GET", "/dashboard"),
        ("GET", "/dashboard/static/dashboard.css"),
        ("GET", "/dashboard/static/no-such-file.js"),
        ("POST", "/dashboard/login"),
        ("POST", "/dashboard/logout"),
        ("GET", "/no-such-page"),
    ]

    for method, path in requests:
        response = httpx.request(method, f"{server.base_url}{path}", timeout=10)
        nosniff = response.headers.get("x-content-type-options")
        assert nosniff == "nosniff", f"{method} {path}"


def test_demo_switched_off_404(tmp_path: Path) -> None:
    relay = RelayServer(tmp_path)
    relay.start()
    relay.stop()
    # The demo site now exists in the database; only the setting hides the page.
    relay.env["VSO_DEMO"] = "false"
    relay.start()
    try:
        demo = get(relay, "/demo")
        chat = get(relay, "/chat?site=demo")
    finally:
        relay.stop()

    assert demo.status_code == 404
    assert chat.status_code == 200


def test_localhost_pages_use_localhost(server: RelayServer) -> None:
    host = f"localhost:{server.port}"

    dashboard = httpx.get(f"{server.base_url}/dashboard", headers={"host": host})
    demo = httpx.get(f"{server.base_url}/demo", headers={"host": host})

    assert f"ws://{host}" in dashboard.headers["content-security-policy"]
    assert f'src="http://{host}/widget/loader.js"' in demo.text


def test_foreign_host_uses_public_url(server: RelayServer) -> None:
    response = httpx.get(
        f"{server.base_url}/dashboard", headers={"host": "evil.example"}
    )

    assert "evil.example" not in response.headers["content-security-policy"]
    assert server.ws_url in response.headers["content-security-policy"]


# Security headers and visitor pages

EVERY_ROUTE = [
    ("GET", "/"),
    ("GET", "/healthz"),
    ("GET", "/chat?site=demo"),
    ("GET", "/chat"),
    ("GET", "/safety"),
    ("GET", "/safety?site=demo"),
    ("GET", "/demo"),
    ("GET", "/widget/loader.js"),
    ("GET", "/widget/static/quick_exit.js"),
    ("GET", "/dashboard"),
    ("POST", "/dashboard/login"),
    ("POST", "/dashboard/logout"),
    ("GET", "/no-such-page"),
]
VISITOR_PAGES = ["/chat?site=demo", "/chat", "/safety", "/safety?site=demo"]


@pytest.mark.parametrize(("method", "path"), EVERY_ROUTE)
def test_every_route_security_headers(
    server: RelayServer, method: str, path: str
) -> None:
    response = httpx.request(method, f"{server.base_url}{path}", timeout=10)
    csp = response.headers.get("content-security-policy", "")

    assert response.headers.get("referrer-policy") == "no-referrer"
    assert "camera=()" in response.headers.get("permissions-policy", "")
    assert "frame-ancestors" in csp
    assert "unsafe-inline" not in csp
    assert "strict-transport-security" not in response.headers


@pytest.mark.parametrize("path", VISITOR_PAGES)
def test_visitor_page_not_stored(server: RelayServer, path: str) -> None:
    response = get(server, path)

    assert response.headers["cache-control"] == "no-store"
    assert "set-cookie" not in response.headers


@pytest.mark.parametrize("path", VISITOR_PAGES)
def test_visitor_page_quick_exit_first_link(server: RelayServer, path: str) -> None:
    links = re.findall(r"<a\b[^>]*>", get(server, path).text)

    assert 'id="quick-exit"' in links[0]
    assert 'target="_top"' in links[0]
    assert "noreferrer" in links[0]


@pytest.mark.parametrize("path", VISITOR_PAGES)
def test_visitor_page_no_third_party_request(server: RelayServer, path: str) -> None:
    html = get(server, path).text
    fetched = re.findall(
        r'<(?:script|link|img|iframe)\b[^>]*?\b(?:src|href)="([^"]+)"', html
    )

    assert fetched
    assert [source for source in fetched if not source.startswith("/")] == []


def test_safety_page_frame_ancestors_of_site(server: RelayServer) -> None:
    plain = csp_directives(get(server, "/safety"))["frame-ancestors"]
    framed = csp_directives(get(server, "/safety?site=demo"))["frame-ancestors"]

    assert plain == ["'none'"]
    assert f"http://127.0.0.1:{server.port}" in framed


def test_hsts_over_https(tmp_path: Path) -> None:
    relay = RelayServer(tmp_path, public_url="https://chat.example.org")
    relay.start()
    try:
        response = get(relay, "/chat?site=demo")
    finally:
        relay.stop()

    assert response.headers["strict-transport-security"] == "max-age=31536000"
