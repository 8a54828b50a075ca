"""The information hub's pages and ``vso content check`` against a real relay."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import httpx
import pytest

from relay.resources import CONTENT_DIR
from tests.relayserver import RelayServer

PAGES = [
    "/info",
    "/info/rights",
    "/info/report",
    "/info/staying-safe",
    "/info/services",
]


@pytest.mark.parametrize("language", ["en", "mt"])
def test_every_page_renders_in_language(relay: RelayServer, language: str) -> None:
    for path in PAGES:
        response = httpx.get(f"{relay.base_url}{path}?lang={language}")
        assert response.status_code == 200, path
        assert f'<html lang="{language}" dir="ltr">' in response.text, path
        assert response.text.count("<h1") == 1, path
        assert 'id="quick-exit"' in response.text, path
        assert 'href="#main"' in response.text, path
        assert '<main id="main"' in response.text, path


def test_pages_leave_no_trace(relay: RelayServer) -> None:
    response = httpx.get(f"{relay.base_url}/info/rights")
    assert response.headers["cache-control"] == "no-store"
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy
    assert "frame-ancestors 'none'" in policy
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "set-cookie" not in response.headers
    assert "<script>" not in response.text
    assert " style=" not in response.text


def test_maltese_page_is_in_maltese(relay: RelayServer) -> None:
    text = httpx.get(f"{relay.base_url}/info/rights?lang=mt").text
    assert "<h1>Id-drittijiet tiegħek bħala vittma</h1>" in text
    assert "Kapitolu 539" in text
    assert 'hreflang="en"' in text


def test_rights_page_lists_its_sections(relay: RelayServer) -> None:
    text = httpx.get(f"{relay.base_url}/info/rights").text
    assert 'aria-label="On this page"' in text
    for anchor in ("compensation", "restorative-justice", "refund-of-expenses"):
        assert f'href="#{anchor}"' in text
        assert f'<h2 id="{anchor}">' in text


def test_directory_shows_contacts_and_dates(relay: RelayServer) -> None:
    text = httpx.get(f"{relay.base_url}/info/services").text
    assert '<a href="tel:116006">116 006</a>' in text
    assert '<a href="tel:+35621228333">+356 2122 8333</a>' in text
    assert '<time datetime="2023-05-01">2023-05-01</time>' in text
    assert "Not checked yet" in text
    assert 'href="https://legalaidmalta.gov.mt" rel="noopener noreferrer"' in text


def test_unknown_page_or_language_is_404(relay: RelayServer) -> None:
    for path in ("/info/nothing", "/info/rights?lang=fr", "/info?lang=<b>"):
        response = httpx.get(f"{relay.base_url}{path}")
        assert response.status_code == 404, path
        assert response.headers["cache-control"] == "no-store"
        assert "<b>" not in response.text


def test_site_keeps_its_quick_exit_and_links(relay: RelayServer) -> None:
    result = relay.cli(
        "site",
        "add",
        "Partner",
        "--origin",
        "https://partner.example",
        "--exit-url",
        "https://weather.example/",
    )
    assert result.returncode == 0, result.stderr
    key = re.search(r"site=([A-Za-z0-9_-]+)", result.stdout)
    assert key is not None
    site = key.group(1)
    text = httpx.get(f"{relay.base_url}/info/rights?site={site}").text
    response = httpx.get(f"{relay.base_url}/info/rights?site={site}")
    assert 'href="https://weather.example/"' in text
    assert f'href="/info/services?site={site}"' in text
    assert f'href="/info/report?lang=en&amp;site={site}"' in text
    assert f'href="/chat?site={site}"' in text
    assert "https://partner.example" in response.headers["content-security-policy"]


def test_unknown_site_falls_back_to_default_exit(relay: RelayServer) -> None:
    response = httpx.get(f"{relay.base_url}/info/report?site=unknown")
    assert response.status_code == 200
    assert 'href="https://www.google.com/"' in response.text
    assert "site=unknown" not in response.text


def _content_copy(tmp_path: Path) -> Path:
    target = tmp_path / "content"
    shutil.copytree(CONTENT_DIR, target)
    return target


def test_relay_refuses_to_start_with_malformed_content(tmp_path: Path) -> None:
    content = _content_copy(tmp_path)
    services = content / "services.toml"
    services.write_text(
        services.read_text(encoding="utf-8").replace('phone = "179"', "phone = 179"),
        encoding="utf-8",
    )
    server = RelayServer(tmp_path, content_dir=str(content))
    with pytest.raises(RuntimeError, match="exited early") as error:
        server.start()
    assert f"{services}: service 'supportline-179': field 'phone'" in str(error.value)


def test_content_check_fails_for_old_details(tmp_path: Path) -> None:
    server = RelayServer(tmp_path)
    result = server.cli("content", "check", "--today", "2026-12-04")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 6
    assert lines[1] == (
        f"{CONTENT_DIR / 'services.toml'}: service 'victim-support-line':"
        " last checked 2023-05-01, 1313 days ago"
    )
    assert lines[5].endswith("service 'legal-aid': never checked")
    assert "6 directory entries need checking" in result.stderr


def test_content_check_passes_when_fresh(tmp_path: Path) -> None:
    content = _content_copy(tmp_path)
    services = content / "services.toml"
    text = services.read_text(encoding="utf-8")
    text = re.sub(r"checked = \d{4}-\d{2}-\d{2}", "checked = 2026-11-30", text)
    text += "checked = 2026-11-30\n"
    services.write_text(text, encoding="utf-8")
    server = RelayServer(tmp_path, content_dir=str(content))
    result = server.cli("content", "check", "--today", "2026-12-04")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All 6 directory entries were checked recently." in result.stdout
    # The age limit is a setting.
    server.env["VSO_CONTENT_MAX_AGE_DAYS"] = "3"
    assert server.cli("content", "check", "--today", "2026-12-04").returncode == 1


def test_content_check_reports_malformed_file(tmp_path: Path) -> None:
    content = _content_copy(tmp_path)
    (content / "en" / "rights.md").write_text("No title here.\n", encoding="utf-8")
    server = RelayServer(tmp_path, content_dir=str(content))
    result = server.cli("content", "check")
    assert result.returncode == 1
    assert f"{content / 'en' / 'rights.md'}: the page must start" in result.stderr
