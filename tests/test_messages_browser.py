"""The message channel in real Chromium, with scripts and with JavaScript off:
the offline chat page, leaving a message, the reply code, reading and
answering replies, deletion, and the carry-over of a waiting visitor's text."""

from __future__ import annotations

import sqlite3

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.relayserver import RelayServer
from tests.test_end_to_end import sign_in
from tests.test_messages import HOSTILE, close_site

SCRIPTS = pytest.mark.parametrize("scripts", [True, False], ids=["js", "nojs"])


def visitor_context(browser: Browser, scripts: bool) -> BrowserContext:
    return browser.new_context(java_script_enabled=scripts)


def record_dialogs(page: Page) -> list[str]:
    """Collect every alert the page opens; hostile text must open none."""
    dialogs: list[str] = []

    def dismiss(dialog: object) -> None:
        dialogs.append(getattr(dialog, "message", ""))
        dialog.dismiss()  # type: ignore[attr-defined]

    page.on("dialog", dismiss)
    return dialogs


def leave_message(page: Page, text: str) -> str:
    """Fill in and send the visible message form; return the reply code."""
    page.get_by_label("What would you like to tell us?").fill(text)
    page.get_by_role("button", name="Leave this message").click()
    expect(page.get_by_role("heading", name="Your message was sent")).to_be_visible()
    code = page.locator("#reply-code").inner_text()
    assert len(code.split()) == 8
    return code


def volunteer_replies(browser: Browser, relay: RelayServer, text: str) -> None:
    staff = browser.new_context().new_page()
    sign_in(staff, relay)
    staff.goto(f"{relay.base_url}/dashboard/inbox")
    staff.get_by_role("link", name="Open").first.click()
    staff.get_by_label("Reply", exact=True).fill(text)
    staff.get_by_role("button", name="Send reply").click()
    expect(staff.get_by_text("Reply sent.")).to_be_visible()
    expect(staff.get_by_text("Claimed by you")).to_be_visible()
    staff.context.close()


def open_replies(page: Page, relay: RelayServer, code: str) -> None:
    page.goto(f"{relay.base_url}/replies?site=demo")
    page.get_by_label("Your reply code").fill(code)
    page.get_by_role("button", name="Read replies").click()
    expect(page.get_by_role("heading", name="Your messages")).to_be_visible()


def inbox_count(relay: RelayServer) -> int:
    with sqlite3.connect(relay.database) as db:
        return int(db.execute("SELECT COUNT(*) FROM inbox").fetchone()[0])


@SCRIPTS
def test_reply_code_flow_end_to_end(
    relay: RelayServer, browser: Browser, scripts: bool
) -> None:
    visitor = visitor_context(browser, scripts).new_page()
    dialogs = record_dialogs(visitor)
    visitor.goto(f"{relay.base_url}/chat?site=demo")
    expect(visitor.get_by_role("button", name="Start chat")).to_be_hidden()
    expect(visitor.get_by_role("heading", name="Leave a message")).to_be_visible()

    code = leave_message(visitor, "Someone keeps calling me. " + HOSTILE)
    volunteer_replies(browser, relay, "We can help you. " + HOSTILE)
    open_replies(visitor, relay, code.upper())

    expect(
        visitor.get_by_text("Someone keeps calling me.", exact=False)
    ).to_be_visible()
    expect(visitor.get_by_text("We can help you.", exact=False)).to_be_visible()
    expect(visitor.locator(".message-author", has_text="Sam")).to_be_visible()
    assert code.split()[0] not in visitor.url
    visitor.get_by_label("Write back").fill("Thank you, I will call.")
    visitor.get_by_role("button", name="Send answer").click()
    expect(visitor.get_by_text("Your message was sent.")).to_be_visible()
    expect(visitor.get_by_text("Thank you, I will call.")).to_be_visible()
    visitor.get_by_role("checkbox", name="Yes, delete all of these messages").check()
    visitor.get_by_role("button", name="Delete my messages").click()
    expect(
        visitor.get_by_role("heading", name="Your messages are deleted")
    ).to_be_visible()
    open_again = visitor.context.new_page()
    open_again.goto(f"{relay.base_url}/replies?site=demo")
    open_again.get_by_label("Your reply code").fill(code)
    open_again.get_by_role("button", name="Read replies").click()

    expect(open_again.get_by_text("No conversation has this code.")).to_be_visible()
    assert dialogs == []
    assert inbox_count(relay) == 0


def test_message_with_notice_address_explains_mailbox(
    relay: RelayServer, browser: Browser
) -> None:
    visitor = visitor_context(browser, False).new_page()
    visitor.goto(f"{relay.base_url}/message?site=demo")
    expect(
        visitor.get_by_text("anyone who can read that mailbox", exact=False)
    ).to_be_visible()
    visitor.get_by_label("E-mail address for a notice").fill("notme@example.org")

    leave_message(visitor, "Please tell me when you reply.")

    expect(
        visitor.get_by_text("We will send a short e-mail", exact=False)
    ).to_be_visible()


def test_waiting_visitor_text_carried_over_with_scripts(
    relay: RelayServer, browser: Browser
) -> None:
    volunteer = browser.new_context().new_page()
    sign_in(volunteer, relay)
    volunteer.get_by_role("switch", name="Available").check()
    visitor = browser.new_context().new_page()
    visitor.goto(f"{relay.base_url}/chat?site=demo")
    visitor.get_by_role("button", name="Start chat").click()
    expect(visitor.get_by_text("You are number 1 in the queue.")).to_be_visible()
    visitor.get_by_label("Message", exact=True).fill("My ex is outside.")
    visitor.get_by_role("button", name="Send", exact=True).click()
    expect(visitor.locator(".message-visitor")).to_have_count(1)
    visitor.get_by_label("Message", exact=True).fill("What should I do?")

    volunteer.get_by_role("switch", name="Available").uncheck()

    message = visitor.get_by_label("What would you like to tell us?")
    expect(message).to_be_visible()
    expect(message).to_have_value("My ex is outside.\n\nWhat should I do?")
    code = leave_message(visitor, "My ex is outside.\n\nWhat should I do?")
    with sqlite3.connect(relay.database) as db:
        chat_status = db.execute(
            "SELECT status FROM conversations WHERE channel = 'chat'"
        ).fetchone()[0]
    assert chat_status == "ended"
    assert len(code.split()) == 8


def test_waiting_visitor_text_carried_over_without_scripts(
    relay: RelayServer, browser: Browser
) -> None:
    volunteer = browser.new_context().new_page()
    sign_in(volunteer, relay)
    volunteer.get_by_role("switch", name="Available").check()
    visitor = visitor_context(browser, False).new_page()
    visitor.goto(f"{relay.base_url}/chat?site=demo")
    visitor.get_by_role("button", name="Start chat").click()
    visitor.locator("#nojs-message").fill("My ex is outside.")
    visitor.get_by_role("button", name="Send", exact=True).click()
    volunteer.get_by_role("switch", name="Available").uncheck()
    expect(volunteer.get_by_role("switch", name="Available")).not_to_be_checked()
    visitor.locator("#nojs-message").fill("What should I do?")

    visitor.get_by_role("button", name="Leave a message instead").click()

    message = visitor.get_by_label("What would you like to tell us?")
    expect(message).to_have_value("My ex is outside.\n\nWhat should I do?")
    leave_message(visitor, message.input_value())
    visitor.goto(f"{relay.base_url}/chat?site=demo")
    expect(visitor.get_by_role("heading", name="Leave a message")).to_be_visible()
    with sqlite3.connect(relay.database) as db:
        statuses = db.execute(
            "SELECT channel, status FROM conversations ORDER BY channel"
        ).fetchall()
    assert statuses == [("chat", "ended"), ("message", "active")]


def test_offline_page_reloaded_without_scripts_prefills(
    relay: RelayServer, browser: Browser
) -> None:
    volunteer = browser.new_context().new_page()
    sign_in(volunteer, relay)
    volunteer.get_by_role("switch", name="Available").check()
    visitor = visitor_context(browser, False).new_page()
    visitor.goto(f"{relay.base_url}/chat?site=demo")
    visitor.get_by_role("button", name="Start chat").click()
    visitor.locator("#nojs-message").fill("Are you there?")
    visitor.get_by_role("button", name="Send", exact=True).click()
    volunteer.get_by_role("switch", name="Available").uncheck()
    expect(volunteer.get_by_role("switch", name="Available")).not_to_be_checked()

    visitor.reload()

    expect(visitor.get_by_label("What would you like to tell us?")).to_have_value(
        "Are you there?"
    )


@SCRIPTS
def test_closed_hours_offer_message_with_volunteer(
    relay: RelayServer, browser: Browser, scripts: bool
) -> None:
    volunteer = browser.new_context().new_page()
    sign_in(volunteer, relay)
    volunteer.get_by_role("switch", name="Available").check()
    close_site(relay)
    visitor = visitor_context(browser, scripts).new_page()

    visitor.goto(f"{relay.base_url}/chat?site=demo")

    expect(visitor.get_by_text("The chat is closed now.")).to_be_visible()
    expect(visitor.get_by_role("button", name="Start chat")).to_be_hidden()
    expect(visitor.get_by_role("button", name="Leave this message")).to_be_visible()
    leave_message(visitor, "Written after hours.")
    assert inbox_count(relay) == 1
