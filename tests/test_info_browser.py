"""The information hub in Chromium: without scripts, printed, and checked with
axe-core for WCAG 2.2 AA.

axe-core comes from the npm registry (``make axe`` installs it under
``.venv/npm``). The pages' CSP allows only the relay's own scripts, so the axe
tests use a Playwright context with ``bypass_csp=True`` to inject it; the pages
themselves are served unchanged by a real ``vso serve``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page

from tests.relayserver import RelayServer
from tests.test_info import PAGES

AXE_PATH = Path(__file__).parent.parent / ".venv/npm/node_modules/axe-core/axe.min.js"
WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]


@pytest.fixture(scope="module")
def hub_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayServer]:
    server = RelayServer(tmp_path_factory.mktemp("hub"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _open(browser: Browser, **options: Any) -> Page:
    context = browser.new_context(**options)
    return context.new_page()


def _violations(page: Page) -> list[dict[str, Any]]:
    page.add_script_tag(path=str(AXE_PATH))
    result = page.evaluate(
        "tags => axe.run(document, {runOnly: {type: 'tag', values: tags}})",
        WCAG_TAGS,
    )
    return [
        {
            "id": violation["id"],
            "nodes": [node["target"] for node in violation["nodes"]],
        }
        for violation in result["violations"]
    ]


@pytest.mark.parametrize("language", ["en", "mt"])
def test_pages_work_without_scripts(
    browser: Browser, hub_relay: RelayServer, language: str
) -> None:
    page = _open(browser, java_script_enabled=False)
    try:
        for path in PAGES:
            page.goto(f"{hub_relay.base_url}{path}?lang={language}")
            assert page.locator("html").get_attribute("lang") == language
            assert page.locator("h1").count() == 1, path
            assert page.locator("h1").is_visible(), path
            assert page.locator("main#main").count() == 1, path
            assert page.locator("#quick-exit").is_visible(), path
        page.goto(f"{hub_relay.base_url}/info?lang={language}")
        page.locator(".info-list a").nth(2).click()
        assert page.url.endswith(f"/info/staying-safe?lang={language}")
    finally:
        page.context.close()


def test_skip_link_moves_focus_to_main(
    browser: Browser, hub_relay: RelayServer
) -> None:
    page = _open(browser, java_script_enabled=False)
    try:
        page.goto(f"{hub_relay.base_url}/info/rights")
        # Quick exit, the explanation's "Browsing safely" link, then the skip link.
        page.keyboard.press("Tab")
        page.keyboard.press("Tab")
        page.keyboard.press("Tab")
        focused = page.evaluate("document.activeElement.className")
        assert focused == "skip-link"
        assert page.locator(".skip-link").is_visible()
        page.keyboard.press("Enter")
        assert page.evaluate("document.activeElement.id") == "main"
    finally:
        page.context.close()


def test_print_shows_text_without_controls(
    browser: Browser, hub_relay: RelayServer
) -> None:
    page = _open(browser, java_script_enabled=False)
    try:
        page.goto(f"{hub_relay.base_url}/info/services")
        page.emulate_media(media="print")
        assert not page.locator("#quick-exit").is_visible()
        assert not page.locator(".info-nav").is_visible()
        assert page.locator("h1").is_visible()
        after = page.evaluate(
            "getComputedStyle(document.querySelector("
            "'a[href^=\"https://legalaid\"]'), '::after').content"
        )
        assert after == '" (https://legalaidmalta.gov.mt)"'
        pdf = page.pdf()
        assert pdf.startswith(b"%PDF")
    finally:
        page.context.close()


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("language", ["en", "mt"])
def test_pages_pass_axe(
    browser: Browser, hub_relay: RelayServer, scheme: str, language: str
) -> None:
    assert AXE_PATH.exists(), "axe-core is missing; run `make axe`."
    page = _open(browser, bypass_csp=True, color_scheme=scheme)
    try:
        for path in PAGES:
            page.goto(f"{hub_relay.base_url}{path}?lang={language}")
            violations = _violations(page)
            assert violations == [], f"{path}: {json.dumps(violations)}"
    finally:
        page.context.close()


def test_axe_finds_a_planted_violation(
    browser: Browser, hub_relay: RelayServer
) -> None:
    """The check can fail: an image without alternative text is reported."""
    page = _open(browser, bypass_csp=True)
    try:
        page.goto(f"{hub_relay.base_url}/info/report")
        page.evaluate(
            "document.querySelector('main').append(document.createElement('img'))"
        )
        assert [v["id"] for v in _violations(page)] == ["image-alt"]
    finally:
        page.context.close()
