"""A whole conversation in real Chromium: a visitor on the demo partner page and a
volunteer on the dashboard, each in their own browser context."""

from __future__ import annotations

from playwright.sync_api import Browser, FrameLocator, Page, expect

from tests.relayserver import RelayServer


def sign_in(page: Page, relay: RelayServer) -> None:
    page.goto(f"{relay.base_url}/dashboard")
    page.get_by_label("Username").fill("demo")
    page.get_by_label("Password").fill(relay.demo_password or "")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("switch", name="Available")).to_be_visible()


def open_chat(page: Page, relay: RelayServer) -> FrameLocator:
    page.goto(f"{relay.base_url}/demo")
    page.get_by_role("button", name="Chat with us").click()
    return page.frame_locator("iframe[title='Chat with us']")


def test_conversation_from_demo_page_to_dashboard(
    relay: RelayServer, browser: Browser
) -> None:
    volunteer = browser.new_context().new_page()
    visitor = browser.new_context().new_page()
    sign_in(volunteer, relay)
    volunteer.get_by_role("switch", name="Available").check()

    chat = open_chat(visitor, relay)
    chat.get_by_role("button", name="Start chat").click()
    expect(chat.get_by_text("You are number 1 in the queue.")).to_be_visible()

    volunteer.get_by_role("button", name="Accept").click()
    expect(
        chat.get_by_role("heading", name="You are chatting with Sam")
    ).to_be_visible()

    chat.get_by_label("Message").fill("I need to talk to someone <b>now</b>")
    chat.get_by_role("button", name="Send").click()
    panel = volunteer.get_by_role("region", name="Chat with Visitor", exact=False)
    expect(panel.get_by_text("I need to talk to someone <b>now</b>")).to_be_visible()

    panel.get_by_label("Reply").fill("I am here. Take your time.")
    panel.get_by_role("button", name="Send").click()
    expect(chat.get_by_text("I am here. Take your time.")).to_be_visible()
    expect(chat.get_by_text("I need to talk to someone <b>now</b>")).to_be_visible()
    expect(panel.get_by_text("I am here. Take your time.")).to_be_visible()

    chat.get_by_role("button", name="End chat").click()
    expect(chat.get_by_text("This chat has ended.")).to_be_visible()
    expect(panel.get_by_text("This chat has ended", exact=True)).to_be_visible()
    expect(panel.get_by_text("The visitor ended the chat.")).to_be_visible()


def test_waiting_visitor_sees_nobody_available(
    relay: RelayServer, browser: Browser
) -> None:
    volunteer = browser.new_context().new_page()
    visitor = browser.new_context().new_page()
    sign_in(volunteer, relay)
    switch = volunteer.get_by_role("switch", name="Available")
    switch.check()
    chat = open_chat(visitor, relay)
    chat.get_by_role("button", name="Start chat").click()
    expect(chat.get_by_text("You are number 1 in the queue.")).to_be_visible()

    switch.uncheck()

    notice = chat.get_by_text("No volunteer is available at the moment.", exact=False)
    expect(notice).to_be_visible()
    expect(chat.get_by_text("You are number 1 in the queue.")).to_be_visible()


def test_signed_out_dashboard_says_so(relay: RelayServer, browser: Browser) -> None:
    context = browser.new_context()
    first = context.new_page()
    second = context.new_page()
    sign_in(first, relay)
    second.goto(f"{relay.base_url}/dashboard")

    first.get_by_role("button", name="Sign out").click()

    expect(second.get_by_text("You have been signed out.")).to_be_visible()
