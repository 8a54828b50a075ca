"""Resources in the chat, in real Chromium: hub links while waiting, resource
cards sent from the dashboard's search, and saved replies that only fill the
reply box. The visitor runs with scripts on and, in one test, off."""

from __future__ import annotations

import html
import re

import httpx
import pyotp
from playwright.sync_api import Browser, Locator, Page, expect

from tests.relayserver import RelayServer
from tests.test_end_to_end import open_chat
from tests.test_nojs_browser import (
    REPLY_SECONDS,
    available_volunteer_page,
    no_script_context,
    transcript,
    volunteer_panel,
)

ADMIN_PASSWORD = "admin-password-123"


def _csrf(page: httpx.Response) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match is not None, page.text
    return html.unescape(match.group(1))


def add_saved_reply(relay: RelayServer, title: str, body: str) -> None:
    """Add a saved reply through the admin pages, as admin "ada"."""
    result = relay.cli(
        "volunteer",
        "add",
        "ada",
        "--display-name",
        "Ada",
        "--role",
        "admin",
        "--password-stdin",
        stdin=ADMIN_PASSWORD + "\n",
    )
    assert result.returncode == 0, result.stderr
    with httpx.Client(base_url=relay.base_url) as client:
        page = client.get("/dashboard")
        page = client.post(
            "/dashboard/login",
            data={
                "username": "ada",
                "password": ADMIN_PASSWORD,
                "csrf_token": _csrf(page),
            },
        )
        secret = re.search(r'<code class="totp-secret">([A-Z2-7]+)</code>', page.text)
        assert secret is not None
        client.post(
            "/dashboard/login/code",
            data={"code": pyotp.TOTP(secret.group(1)).now(), "csrf_token": _csrf(page)},
        )
        form = client.get("/dashboard/replies")
        added = client.post(
            "/dashboard/replies",
            data={
                "csrf_token": _csrf(form),
                "language": "en",
                "title": title,
                "body": body,
            },
        )
        assert added.status_code == 303


def search_panel(panel: Locator) -> Locator:
    panel.get_by_text("Resources and saved replies").click()
    return panel.locator(".resource-search")


def test_waiting_visitor_sees_hub_links(relay: RelayServer, browser: Browser) -> None:
    available_volunteer_page(browser, relay)
    visitor = browser.new_context().new_page()
    chat = open_chat(visitor, relay)
    chat.get_by_role("button", name="Start chat").click()
    expect(chat.get_by_text("While you wait, you can read:")).to_be_visible()
    link = chat.get_by_role("link", name="Your rights as a victim")
    expect(link).to_have_attribute("target", "_blank")
    expect(link).to_have_attribute("rel", "noopener noreferrer")
    expect(link).to_have_attribute("href", "/info/rights?lang=en&site=demo")
    with visitor.context.expect_page() as opened:
        link.click()
    page = opened.value
    expect(page.get_by_role("heading", level=1)).to_have_text("Your rights as a victim")
    # The chat keeps its place in the queue.
    expect(chat.get_by_text("You are number 1 in the queue.")).to_be_visible()


def test_card_from_search_reaches_visitor(relay: RelayServer, browser: Browser) -> None:
    volunteer = available_volunteer_page(browser, relay)
    visitor = browser.new_context().new_page()
    chat = open_chat(visitor, relay)
    chat.get_by_role("button", name="Start chat").click()
    volunteer.get_by_role("button", name="Accept").click()
    expect(
        chat.get_by_role("heading", name="You are chatting with Sam")
    ).to_be_visible()

    panel = volunteer_panel(volunteer)
    search = search_panel(panel)
    search.get_by_label("Search services, pages and saved replies").fill("helpline")
    search.get_by_role(
        "button", name="Send card: Supportline 179 (Agenzija Appoġġ)"
    ).click()

    card = chat.locator(".resource-card")
    expect(card).to_be_visible()
    expect(card.locator(".resource-name")).to_have_text(
        "Supportline 179 (Agenzija Appoġġ)"
    )
    expect(card.get_by_role("link", name="179")).to_have_attribute("href", "tel:179")
    expect(card.get_by_text("24 hours a day")).to_be_visible()
    expect(panel.locator(".resource-card .resource-name")).to_have_text(
        "Supportline 179 (Agenzija Appoġġ)"
    )

    # A reload resumes the conversation, and the card comes back as a card.
    visitor.reload()
    chat = visitor.frame_locator("iframe")
    visitor.get_by_role("button", name="Chat with us").click()
    expect(chat.locator(".resource-card .resource-name")).to_have_text(
        "Supportline 179 (Agenzija Appoġġ)"
    )


def test_maltese_page_card_links_to_hub(relay: RelayServer, browser: Browser) -> None:
    volunteer = available_volunteer_page(browser, relay)
    visitor = browser.new_context().new_page()
    chat = open_chat(visitor, relay)
    chat.get_by_role("button", name="Start chat").click()
    volunteer.get_by_role("button", name="Accept").click()
    expect(
        chat.get_by_role("heading", name="You are chatting with Sam")
    ).to_be_visible()

    search = search_panel(volunteer_panel(volunteer))
    search.get_by_label("Language").select_option("mt")
    search.get_by_label("Search services, pages and saved replies").fill("rapporta")
    search.get_by_role("button", name="Send card: Kif tirrapporta reat f'Malta").click()

    link = chat.locator(".resource-card").get_by_role(
        "link", name="Kif tirrapporta reat f'Malta"
    )
    expect(link).to_have_attribute("href", "/info/report?lang=mt&site=demo")
    expect(link).to_have_attribute("target", "_blank")


def test_saved_reply_fills_box_without_sending(
    relay: RelayServer, browser: Browser
) -> None:
    add_saved_reply(
        relay, "Take your time", "Take all the time you need. <b>I am here.</b>"
    )
    volunteer = available_volunteer_page(browser, relay)
    visitor = browser.new_context().new_page()
    chat = open_chat(visitor, relay)
    chat.get_by_role("button", name="Start chat").click()
    volunteer.get_by_role("button", name="Accept").click()
    expect(
        chat.get_by_role("heading", name="You are chatting with Sam")
    ).to_be_visible()

    panel = volunteer_panel(volunteer)
    reply = panel.get_by_role("textbox", name="Reply")
    reply.fill("Hello.")
    search = search_panel(panel)
    search.get_by_label("Search services, pages and saved replies").fill("time")
    search.get_by_role("button", name="Insert: Take your time").click()

    expect(reply).to_have_value(
        "Hello.\n\nTake all the time you need. <b>I am here.</b>"
    )
    expect(reply).to_be_focused()
    expect(panel.locator(".message")).to_have_count(0)
    expect(chat.locator(".message")).to_have_count(0)

    panel.get_by_role("button", name="Send").click()
    expect(
        chat.get_by_text("Take all the time you need. <b>I am here.</b>")
    ).to_be_visible()


def test_card_as_text_without_scripts(relay: RelayServer, browser: Browser) -> None:
    volunteer = available_volunteer_page(browser, relay)
    visitor: Page = no_script_context(browser).new_page()
    visitor.goto(f"{relay.base_url}/chat?site=demo")
    visitor.get_by_role("button", name="Start chat").click()
    frame = transcript(visitor)
    expect(frame.get_by_text("While you wait, you can read:")).to_be_visible()
    expect(
        frame.get_by_role("link", name="How to report a crime in Malta")
    ).to_have_attribute("target", "_blank")
    volunteer.get_by_role("button", name="Accept").click()
    expect(
        frame.get_by_role("heading", name="You are chatting with Sam")
    ).to_be_visible(timeout=REPLY_SECONDS * 1000)
    expect(frame.get_by_text("While you wait, you can read:")).to_have_count(0)

    search = search_panel(volunteer_panel(volunteer))
    search.get_by_label("Search services, pages and saved replies").fill("legal")
    search.get_by_role("button", name="Send card: Legal Aid Malta").click()

    body = frame.locator(".message-body").last
    expect(body).to_have_text(
        "Legal Aid Malta\nFree legal help, including a service for victims of crime.\n"
        "Website: https://legalaidmalta.gov.mt",
        timeout=REPLY_SECONDS * 1000,
    )
