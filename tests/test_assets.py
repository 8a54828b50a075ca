"""Static files: minified, named by the digest of what is served, and
revalidated when requested without that digest."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from relay.assets import CACHE_UNVERSIONED, CACHE_VERSIONED, StaticAssets, load_asset
from tests.relayserver import RelayServer

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayServer]:
    relay = RelayServer(tmp_path_factory.mktemp("assets"))
    relay.start()
    try:
        yield relay
    finally:
        relay.stop()


def get(server: RelayServer, path: str, **headers: str) -> httpx.Response:
    return httpx.get(f"{server.base_url}{path}", headers=headers, timeout=10)


def linked_assets(page: str) -> list[str]:
    return re.findall(r'<(?:script[^>]*src|link[^>]*href)="(/[^"]+\?v=[^"]+)"', page)


@pytest.mark.parametrize("page", ["/chat?site=demo", "/dashboard", "/info"])
def test_page_links_assets_by_digest_of_served_bytes(
    server: RelayServer, page: str
) -> None:
    urls = linked_assets(get(server, page).text)
    assert urls, f"{page} links no versioned asset"

    for url in urls:
        response = get(server, url.replace("&amp;", "&"))
        assert response.status_code == 200, url
        digest = url.rsplit("?v=", 1)[1]
        assert hashlib.sha256(response.content).hexdigest()[:12] == digest, url
        assert response.headers["cache-control"] == CACHE_VERSIONED, url
        assert response.headers["etag"] == f'"{digest}"', url


def test_chat_script_served_minified(server: RelayServer) -> None:
    source = (ROOT / "widget" / "static" / "chat.js").read_text()
    served = get(server, "/widget/static/chat.js").text

    assert len(served) < len(source) * 0.8
    assert "is sent on every new socket until started" in source
    assert "is sent on every new socket until started" not in served
    # A template literal and a string keep their text.
    assert 'The chat page has no element with id "${id}".' in served


def test_style_sheet_served_minified(server: RelayServer) -> None:
    source = (ROOT / "widget" / "static" / "chat.css").read_text()
    response = get(server, "/widget/static/chat.css")

    assert response.headers["content-type"] == "text/css; charset=utf-8"
    assert len(response.text) < len(source)
    assert "/*" not in response.text
    assert '@import url("/static/card.css")' in response.text


@pytest.mark.parametrize(
    "path", ["/static/text.js", "/widget/static/quick_exit.js?v=000000000000"]
)
def test_asset_without_current_digest_revalidates(
    server: RelayServer, path: str
) -> None:
    first = get(server, path)
    assert first.status_code == 200
    assert first.headers["cache-control"] == CACHE_UNVERSIONED

    again = get(server, path, **{"if-none-match": first.headers["etag"]})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == first.headers["etag"]


def test_loader_revalidates_by_etag(server: RelayServer) -> None:
    first = get(server, "/widget/loader.js")
    again = get(server, "/widget/loader.js", **{"if-none-match": first.headers["etag"]})

    assert first.headers["cache-control"] == "public, max-age=3600"
    assert again.status_code == 304
    assert again.headers["cross-origin-resource-policy"] == "cross-origin"


@pytest.mark.parametrize(
    "path",
    [
        "/widget/static/no-such-file.js",
        "/widget/static/%2e%2e/routes.py",
        "/static/..%2fapp.py",
        "/dashboard/static/",
    ],
)
def test_unknown_asset_404(server: RelayServer, path: str) -> None:
    response = get(server, path)

    assert response.status_code == 404
    assert "import" not in response.text


def test_asset_rejects_post(server: RelayServer) -> None:
    response = httpx.post(f"{server.base_url}/widget/static/chat.js", timeout=10)

    assert response.status_code == 405


def test_head_of_asset_has_no_body(server: RelayServer) -> None:
    response = httpx.head(f"{server.base_url}/static/card.js", timeout=10)

    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-type"] == "text/javascript; charset=utf-8"


def test_load_asset_minifies_scripts_and_sheets(tmp_path: Path) -> None:
    script = tmp_path / "a.js"
    script.write_text(
        "// a comment\n"
        "const name = `x ${1 + 2} // not a comment`;\n"
        "/* block */ export { name };\n"
    )
    sheet = tmp_path / "a.css"
    sheet.write_text("/* sheet */\nbody {\n  color: #000;\n}\n")

    assert (
        load_asset(script).body
        == b"const name=`x ${1 + 2} // not a comment`;export{name};"
    )
    assert load_asset(sheet).body == b"body{color:#000}"


def test_other_files_served_as_they_are(tmp_path: Path) -> None:
    icon = tmp_path / "icons" / "exit.svg"
    icon.parent.mkdir()
    icon.write_bytes(b"<svg xmlns='http://www.w3.org/2000/svg'/>  ")
    assets = StaticAssets(tmp_path, "/x")

    asset = assets["icons/exit.svg"]
    assert asset.body == icon.read_bytes()
    assert asset.media_type == "image/svg+xml"
    assert assets.url("icons/exit.svg") == f"/x/icons/exit.svg?v={asset.digest}"
