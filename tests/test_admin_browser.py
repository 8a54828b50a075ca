"""Admin work in real Chromium: invitations from link to first sign-in, the
embed page's copy buttons and preview, and the snippets pasted into a partner
page served from another local port."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyotp
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.relayserver import RelayServer, free_port
from tests.staff import STAFF_PASSWORD, add_staff

NEW_PASSWORD = "lantern-orchard-velvet-7"


def sign_in_admin(page: Page, relay: RelayServer, username: str = "ada") -> None:
    """Sign in through the forms, enrolling the second factor on the way."""
    page.goto(f"{relay.base_url}/dashboard")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(STAFF_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    secret = page.locator("code.totp-secret").text_content() or ""
    page.get_by_label("Code").fill(pyotp.TOTP(secret).now())
    page.get_by_role("button", name="Continue").click()
    page.get_by_role("link", name="Continue to the dashboard").click()
    expect(page.get_by_role("link", name="Administration")).to_be_visible()


def create_invitation(page: Page, relay: RelayServer) -> str:
    page.goto(f"{relay.base_url}/dashboard/admin/accounts")
    page.get_by_label("Role", exact=True).select_option("volunteer")
    page.get_by_role("button", name="Create invitation link").click()
    link = page.locator("#invite-link").text_content() or ""
    assert link.startswith(f"{relay.base_url}/dashboard/invite/")
    return link.strip()


def fill_invitation(page: Page, link: str, username: str) -> None:
    page.goto(link)
    page.get_by_label("Username").fill(username)
    page.get_by_label("Display name").fill(username.capitalize())
    page.get_by_label("Password", exact=True).fill(NEW_PASSWORD)
    page.get_by_label("Repeat the password").fill(NEW_PASSWORD)


@pytest.fixture
def admin_page(relay: RelayServer, browser: Browser) -> Iterator[Page]:
    add_staff(relay, "ada", "admin")
    context = browser.new_context()
    page = context.new_page()
    sign_in_admin(page, relay)
    yield page
    context.close()


def test_invitation_link_to_first_sign_in(
    relay: RelayServer, browser: Browser, admin_page: Page
) -> None:
    link = create_invitation(admin_page, relay)
    guest = browser.new_context().new_page()
    fill_invitation(guest, link, "nina")
    guest.get_by_role("button", name="Create my account").click()
    expect(guest.get_by_text("Your account is ready, Nina.")).to_be_visible()

    guest.get_by_role("link", name="Sign in").click()
    guest.get_by_label("Username").fill("nina")
    guest.get_by_label("Password").fill(NEW_PASSWORD)
    guest.get_by_role("button", name="Sign in").click()
    expect(guest.get_by_role("switch", name="Available")).to_be_visible()

    again = browser.new_context().new_page()
    again.goto(link)
    expect(again.get_by_text("This invitation link does not work")).to_be_visible()
    expect(again.get_by_label("Password", exact=True)).to_have_count(0)


def test_expired_invitation_link_refused(
    relay: RelayServer, browser: Browser, admin_page: Page
) -> None:
    link = create_invitation(admin_page, relay)
    with sqlite3.connect(relay.database) as db:
        db.execute("UPDATE invitations SET expires_at = '2000-01-01T00:00:00.000Z'")
    guest = browser.new_context().new_page()
    guest.goto(link)
    expect(guest.get_by_text("This invitation link does not work")).to_be_visible()


def test_invitation_used_twice_at_once(
    relay: RelayServer, browser: Browser, admin_page: Page
) -> None:
    link = create_invitation(admin_page, relay)
    first = browser.new_context().new_page()
    second = browser.new_context().new_page()
    fill_invitation(first, link, "nina")
    fill_invitation(second, link, "omar")

    # Both forms are submitted before either response arrives.
    first.evaluate("document.querySelector('form').requestSubmit()")
    second.evaluate("document.querySelector('form').requestSubmit()")
    first.wait_for_load_state()
    second.wait_for_load_state()
    outcomes = []
    for page in (first, second):
        page.wait_for_selector(".login-intro, .login-error")
        outcomes.append("ready" if "is ready" in page.content() else "refused")
    assert sorted(outcomes) == ["ready", "refused"]


def test_embed_page_copy_button(
    relay: RelayServer, browser: Browser, admin_page: Page
) -> None:
    admin_page.context.grant_permissions(
        ["clipboard-read", "clipboard-write"], origin=relay.base_url
    )
    admin_page.goto(f"{relay.base_url}/dashboard/admin/sites/1/embed")
    snippet = admin_page.locator("#snippet-launcher").text_content() or ""
    assert "/widget/loader.js" in snippet
    admin_page.locator("button[data-copy='snippet-launcher']").click()
    expect(admin_page.get_by_text("Copied.")).to_be_visible()
    copied = admin_page.evaluate("navigator.clipboard.readText()")
    assert copied == snippet

    preview = admin_page.frame_locator("iframe.preview-frame")
    expect(preview.get_by_role("button", name="Chat with us")).to_be_visible()


def test_embed_page_without_scripts(relay: RelayServer, browser: Browser) -> None:
    add_staff(relay, "ada", "admin")
    context = browser.new_context()
    page = context.new_page()
    sign_in_admin(page, relay)
    cookies = context.cookies()
    plain = browser.new_context(java_script_enabled=False)
    plain.add_cookies(cookies)
    page = plain.new_page()
    page.goto(f"{relay.base_url}/dashboard/admin/sites/1/embed")
    expect(page.locator("#snippet-inline")).to_contain_text("<iframe src=")
    expect(page.locator("button[data-copy]").first).to_be_hidden()


class _PartnerPages(BaseHTTPRequestHandler):
    """Serve the pasted snippets as a partner's pages: / and /inline."""

    pages: dict[str, str] = {}

    def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
        body = self.pages.get(self.path)
        if body is None:
            self.send_error(404)
            return
        data = body.encode()
        self.send_response(200)
        self.send_header("content-type", "text/html; charset=utf-8")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def partner_server() -> Iterator[tuple[str, dict[str, str]]]:
    """A partner site on another loopback port; tests fill in its pages."""
    pages: dict[str, str] = {}
    handler = type("Handler", (_PartnerPages,), {"pages": pages})
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", pages
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _partner_page(snippet: str) -> str:
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<title>Partner</title></head><body><h1>Partner NGO</h1>"
        f"{snippet}</body></html>"
    )


def test_pasted_snippets_reach_a_volunteer(
    relay: RelayServer,
    browser: Browser,
    admin_page: Page,
    partner_server: tuple[str, dict[str, str]],
) -> None:
    partner_origin, pages = partner_server
    admin_page.goto(f"{relay.base_url}/dashboard/admin/sites/new")
    admin_page.get_by_label("Name").fill("Harbour Aid")
    admin_page.get_by_label("Allowed origins").fill(partner_origin)
    admin_page.get_by_label("Greeting").fill("Welcome to Harbour Aid.")
    admin_page.get_by_label("Brand colour").fill("#7a1f5c")
    admin_page.get_by_role("button", name="Save").click()
    launcher = admin_page.locator("#snippet-launcher").text_content() or ""
    inline = admin_page.locator("#snippet-inline").text_content() or ""
    pages["/"] = _partner_page(launcher)
    pages["/inline"] = _partner_page(inline)

    volunteer = browser.new_context().new_page()
    volunteer.goto(f"{relay.base_url}/dashboard")
    volunteer.get_by_label("Username").fill("demo")
    volunteer.get_by_label("Password").fill(relay.demo_password or "")
    volunteer.get_by_role("button", name="Sign in").click()
    volunteer.get_by_role("switch", name="Available").check()

    visitor = browser.new_context().new_page()
    visitor.goto(f"{partner_origin}/")
    visitor.get_by_role("button", name="Chat with us").click()
    chat = visitor.frame_locator("iframe")
    expect(chat.get_by_text("Welcome to Harbour Aid.")).to_be_visible()
    chat.get_by_role("button", name="Start chat").click()
    volunteer.get_by_role("button", name="Accept").click()
    chat.get_by_label("Message").fill("Hello from the partner page")
    chat.get_by_role("button", name="Send").click()
    panel = volunteer.get_by_role("region", name="Chat with Visitor", exact=False)
    expect(panel.get_by_text("Hello from the partner page")).to_be_visible()

    inline_visitor = browser.new_context().new_page()
    inline_visitor.goto(f"{partner_origin}/inline")
    framed = inline_visitor.frame_locator("iframe[title='Chat with a volunteer']")
    start = framed.get_by_role("button", name="Start chat")
    expect(start).to_be_visible()
    background = start.evaluate("element => getComputedStyle(element).backgroundColor")
    assert background == "rgb(122, 31, 92)"
