"""Visitor safety in real Chromium. Quick exit is pressed with and without
scripts, in a tab and in the embed iframe on a partner page of another origin.
A conversation is deleted, and hostile text must show as text on both sides."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from playwright.sync_api import Browser, FrameLocator, Page, expect

from tests.relayserver import RelayServer, free_port
from tests.test_end_to_end import sign_in

XSS_CORPUS = [
    "<script>window.__xss = 1; alert(1)</script>",
    '<img src=x onerror="window.__xss = 1; alert(1)">',
    '"><svg onload="window.__xss = 1; alert(1)">',
    "javascript:alert(1)",
    '<a href="javascript:alert(1)">click</a> &amp; &lt;b&gt;',
    "\u202egnp.exe \u200bhidden\u200d text\u2066",
    "مرحبا hello שלום",
    "x" * 300,
    "See https://example.org/help, or write to mailto:help@example.org.",
    "data:text/html,<script>alert(1)</script> and vbscript:msgbox(1)",
]
LINKS = ["https://example.org/help", "mailto:help@example.org"]


@dataclass
class NeutralSite:
    """A second origin on loopback that serves files from ``directory`` and
    records the Referer header of every request by path."""

    base_url: str
    directory: Path
    referers: dict[str, str | None] = field(default_factory=dict)


class _RecordingHandler(SimpleHTTPRequestHandler):
    site: NeutralSite

    def do_GET(self) -> None:
        self.site.referers[self.path] = self.headers.get("Referer")
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def neutral(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NeutralSite]:
    directory = tmp_path_factory.mktemp("neutral")
    (directory / "weather.html").write_text(
        "<!doctype html><title>Weather</title><h1>Weather today</h1>"
    )
    (directory / "start.html").write_text(
        "<!doctype html><title>Start</title><p>Start page</p>"
    )
    port = free_port()
    site = NeutralSite(f"http://127.0.0.1:{port}", directory)
    handler = type("Handler", (_RecordingHandler,), {"site": site})
    httpd = ThreadingHTTPServer(
        ("127.0.0.1", port), partial(handler, directory=str(directory))
    )
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield site
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayServer]:
    relay = RelayServer(tmp_path_factory.mktemp("safety-browser"))
    relay.start()
    try:
        yield relay
    finally:
        relay.stop()


@pytest.fixture(scope="module")
def site_key(server: RelayServer, neutral: NeutralSite) -> str:
    """Add a partner site on the neutral origin, exiting to its weather page, and
    write that partner's page with the embed snippet."""
    result = server.cli(
        "site",
        "add",
        "Partner",
        "--origin",
        neutral.base_url,
        "--exit-url",
        f"{neutral.base_url}/weather.html",
    )
    match = re.search(r"with key ([A-Za-z0-9_-]+)\.", result.stdout)
    assert match is not None, result.stdout + result.stderr
    key = match.group(1)
    (neutral.directory / "partner.html").write_text(
        "<!doctype html><title>Partner</title><h1>Partner page</h1>"
        f'<a href="{server.base_url}/chat?site={key}" data-vso-site="{key}">'
        "Chat with us</a>"
        f'<script async src="{server.base_url}/widget/loader.js"></script>'
    )
    return key


def open_chat_tab(
    page: Page, server: RelayServer, neutral: NeutralSite, key: str
) -> None:
    """Open a start page, then the chat page in the same tab."""
    page.goto(f"{neutral.base_url}/start.html")
    page.goto(f"{server.base_url}/chat?site={key}")
    expect(page.get_by_role("link", name="Quick exit")).to_be_visible()


def open_partner_chat(page: Page, neutral: NeutralSite) -> FrameLocator:
    """Open a start page, then the partner page, and open the chat panel."""
    page.goto(f"{neutral.base_url}/start.html")
    page.goto(f"{neutral.base_url}/partner.html")
    page.get_by_role("button", name="Chat with us").click()
    frame = page.frame_locator("iframe[title='Chat with us']")
    expect(frame.get_by_role("link", name="Quick exit")).to_be_visible()
    return frame


def expect_weather_then_start(page: Page, neutral: NeutralSite) -> None:
    """Check the tab shows the neutral page, and Back skips the chat."""
    expect(page).to_have_url(f"{neutral.base_url}/weather.html")
    page.go_back()
    expect(page).to_have_url(f"{neutral.base_url}/start.html")


# Quick exit


def test_quick_exit_tab_back_skips_chat(
    browser: Browser, server: RelayServer, neutral: NeutralSite, site_key: str
) -> None:
    page = browser.new_context().new_page()
    open_chat_tab(page, server, neutral, site_key)

    page.get_by_role("link", name="Quick exit").click()

    expect_weather_then_start(page, neutral)


def test_quick_exit_tab_shift_three_times(
    browser: Browser, server: RelayServer, neutral: NeutralSite, site_key: str
) -> None:
    page = browser.new_context().new_page()
    open_chat_tab(page, server, neutral, site_key)

    for _ in range(3):
        page.keyboard.press("Shift")

    expect_weather_then_start(page, neutral)


def test_quick_exit_iframe_replaces_partner_page(
    browser: Browser, neutral: NeutralSite, site_key: str
) -> None:
    page = browser.new_context().new_page()
    frame = open_partner_chat(page, neutral)

    frame.get_by_role("link", name="Quick exit").click()

    expect_weather_then_start(page, neutral)


def test_quick_exit_iframe_shift_three_times(
    browser: Browser, neutral: NeutralSite, site_key: str
) -> None:
    page = browser.new_context().new_page()
    frame = open_partner_chat(page, neutral)
    frame.get_by_role("link", name="Browsing safely").focus()

    for _ in range(3):
        page.keyboard.press("Shift")

    expect_weather_then_start(page, neutral)


def test_quick_exit_without_scripts_sends_no_referrer(
    browser: Browser, server: RelayServer, neutral: NeutralSite, site_key: str
) -> None:
    page = browser.new_context(java_script_enabled=False).new_page()
    open_chat_tab(page, server, neutral, site_key)
    neutral.referers.pop("/weather.html", None)

    page.get_by_role("link", name="Quick exit").click()

    expect(page).to_have_url(f"{neutral.base_url}/weather.html")
    assert neutral.referers["/weather.html"] is None


def test_quick_exit_link_targets_top_window(
    browser: Browser, server: RelayServer, neutral: NeutralSite, site_key: str
) -> None:
    page = browser.new_context(java_script_enabled=False).new_page()
    open_chat_tab(page, server, neutral, site_key)
    link = page.get_by_role("link", name="Quick exit")

    assert link.get_attribute("target") == "_top"
    assert "noreferrer" in (link.get_attribute("rel") or "")


def test_safety_page_has_quick_exit(
    browser: Browser, server: RelayServer, neutral: NeutralSite, site_key: str
) -> None:
    page = browser.new_context().new_page()
    open_chat_tab(page, server, neutral, site_key)

    page.get_by_role("link", name="Browsing safely").click()

    expect(
        page.get_by_role("heading", name="What Quick exit cannot do")
    ).to_be_visible()
    expect(page.get_by_role("link", name="Quick exit")).to_have_attribute(
        "href", f"{neutral.base_url}/weather.html"
    )


# Deletion and hostile text, visitor and volunteer in Chromium


def start_chat(visitor: Page, volunteer: Page, server: RelayServer) -> None:
    sign_in(volunteer, server)
    switch = volunteer.get_by_role("switch", name="Available")
    # Enabled once the relay sent the state, which may already be "Available"
    # from an earlier test on this relay.
    expect(switch).to_be_enabled()
    switch.check()
    visitor.goto(f"{server.base_url}/chat?site=demo")
    visitor.get_by_role("button", name="Start chat").click()
    volunteer.get_by_role("button", name="Accept").click()
    expect(
        visitor.get_by_role("heading", name="You are chatting with Sam")
    ).to_be_visible()


def test_delete_conversation_clears_both_sides(
    browser: Browser, server: RelayServer
) -> None:
    volunteer = browser.new_context().new_page()
    visitor = browser.new_context().new_page()
    start_chat(visitor, volunteer, server)
    visitor.get_by_label("Message").fill("please forget me")
    visitor.get_by_role("button", name="Send").click()
    panel = volunteer.get_by_role("region", name="Chat with Visitor", exact=False)
    expect(panel.get_by_text("please forget me")).to_be_visible()

    visitor.get_by_role("button", name="End chat").click()
    visitor.get_by_role("button", name="Delete this conversation").click()
    visitor.get_by_role("button", name="Yes, delete it").click()

    expect(visitor.get_by_text("This conversation is deleted.")).to_be_visible()
    expect(visitor.get_by_text("please forget me")).to_have_count(0)
    expect(panel.get_by_text("The visitor deleted this conversation.")).to_be_visible()
    expect(panel.get_by_text("please forget me")).to_have_count(0)


def test_block_visitor_from_dashboard(browser: Browser, relay: RelayServer) -> None:
    # Its own relay: the block refuses new chats from loopback for an hour.
    volunteer = browser.new_context().new_page()
    visitor = browser.new_context().new_page()
    start_chat(visitor, volunteer, relay)
    panel = volunteer.get_by_role("region", name="Chat with Visitor", exact=False)

    panel.get_by_role("button", name="Block visitor").click()
    panel.get_by_role("button", name="Yes, block").click()

    expect(panel.get_by_text("You blocked the visitor.")).to_be_visible()
    expect(visitor.get_by_text("This chat has ended.")).to_be_visible()


def test_hostile_text_shown_as_text(browser: Browser, server: RelayServer) -> None:
    volunteer = browser.new_context().new_page()
    visitor = browser.new_context().new_page()
    dialogs: list[str] = []
    for page in (volunteer, visitor):
        page.on(
            "dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss())
        )
    start_chat(visitor, volunteer, server)
    panel = volunteer.get_by_role("region", name="Chat with Visitor", exact=False)

    for body in XSS_CORPUS:
        visitor.get_by_label("Message").fill(body)
        visitor.get_by_role("button", name="Send").click()
        expect(panel.locator(".message-body").last).to_have_text(body)
    visitor_bodies = visitor.locator(".message-body").all_text_contents()
    volunteer_bodies = panel.locator(".message-body").all_text_contents()
    directions = {
        element.get_attribute("dir")
        for element in panel.locator(".message-body").all()
        + visitor.locator(".message-body").all()
    }

    assert visitor_bodies == XSS_CORPUS
    assert volunteer_bodies == XSS_CORPUS
    assert dialogs == []
    assert volunteer.evaluate("window.__xss") is None
    assert visitor.evaluate("window.__xss") is None
    # The page's JSON block of translated texts is data that never runs.
    hostile = "img, svg, script:not([src]):not([type='application/json'])"
    assert visitor.locator(hostile).count() == 0
    assert panel.locator("img, svg").count() == 0
    assert directions == {"auto"}
    for page in (visitor, volunteer):
        # Over-long words wrap inside the bubble, and bidi controls stay inside it.
        overflowing = page.evaluate(
            "[...document.querySelectorAll('.message-body')]"
            ".filter((el) => el.scrollWidth > el.clientWidth + 1).length"
        )
        isolations = page.evaluate(
            "[...new Set([...document.querySelectorAll('.message-body')]"
            ".map((el) => getComputedStyle(el).unicodeBidi))]"
        )
        assert overflowing == 0
        assert isolations == ["isolate"]
    for side in (visitor.locator(".message-body a"), panel.locator(".message-body a")):
        assert [link.get_attribute("href") for link in side.all()] == LINKS
        rels = {link.get_attribute("rel") for link in side.all()}
        assert rels == {"noopener noreferrer"}
