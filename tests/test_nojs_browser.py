"""The chat with JavaScript switched off, in real Chromium: the visitor's browser
context runs no scripts (as Tor Browser at "Safest"), the volunteer's dashboard
does. Covers the whole conversation, replies that arrive with no visitor action,
double submits, switching transports and the inline iframe snippet."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    FrameLocator,
    Locator,
    Page,
    expect,
)

from relay.crypto import load_cipher
from relay.store import _message_context
from tests.relayserver import RelayServer, free_port
from tests.test_end_to_end import sign_in

REPLY_SECONDS = 5.0  # a reply must show in the visitor's page within this time


def no_script_context(browser: Browser, **options: object) -> BrowserContext:
    return browser.new_context(java_script_enabled=False, **options)  # type: ignore[arg-type]


def available_volunteer_page(browser: Browser, relay: RelayServer) -> Page:
    page = browser.new_context().new_page()
    sign_in(page, relay)
    page.get_by_role("switch", name="Available").check()
    return page


def transcript(page: Page) -> FrameLocator:
    return page.frame_locator("iframe[title='Conversation']")


def volunteer_panel(volunteer: Page) -> Locator:
    return volunteer.get_by_role("region", name="Chat with Visitor", exact=False)


def queue_entries(relay: RelayServer) -> int:
    """Count the conversations in the database."""
    import sqlite3

    with sqlite3.connect(relay.database) as db:
        return int(db.execute("SELECT COUNT(*) FROM conversations").fetchone()[0])


def stored_bodies(relay: RelayServer) -> list[str]:
    """Return the stored message bodies, decrypted, in order."""
    import sqlite3

    cipher = load_cipher("", None, relay.database)
    with sqlite3.connect(relay.database) as db:
        rows = db.execute(
            "SELECT conversation_id, seq, body FROM messages"
            " ORDER BY conversation_id, seq"
        ).fetchall()
    return [
        cipher.decrypt(body, _message_context(conversation, seq))
        for conversation, seq, body in rows
    ]


def start_no_script_chat(page: Page, relay: RelayServer, volunteer: Page) -> None:
    page.goto(f"{relay.base_url}/chat?site=demo")
    page.get_by_role("button", name="Start chat").click()
    expect(
        transcript(page).get_by_text("You are number 1 in the queue.")
    ).to_be_visible()
    volunteer.get_by_role("button", name="Accept").click()
    expect(
        transcript(page).get_by_role("heading", name="You are chatting with Sam")
    ).to_be_visible(timeout=REPLY_SECONDS * 1000)


def test_whole_conversation_without_scripts(
    relay: RelayServer, browser: Browser
) -> None:
    volunteer = available_volunteer_page(browser, relay)
    visitor = no_script_context(browser).new_page()

    visitor.goto(f"{relay.base_url}/chat?site=demo")
    # The plain HTML works: the start button is there without chat.js.
    visitor.get_by_role("button", name="Start chat").click()
    expect(
        transcript(visitor).get_by_text("You are number 1 in the queue.")
    ).to_be_visible()
    assert "token" not in visitor.url

    volunteer.get_by_role("button", name="Accept").click()
    expect(
        transcript(visitor).get_by_role("heading", name="You are chatting with Sam")
    ).to_be_visible(timeout=REPLY_SECONDS * 1000)
    panel = volunteer_panel(volunteer)
    expect(panel.get_by_text("no script", exact=True)).to_be_visible()

    visitor.get_by_role("textbox", name="Message").fill(
        "I need to talk to someone <b>now</b>"
    )
    visitor.get_by_role("button", name="Send").click()
    expect(panel.get_by_text("I need to talk to someone <b>now</b>")).to_be_visible()
    expect(
        transcript(visitor).get_by_text("I need to talk to someone <b>now</b>")
    ).to_be_visible()

    # A half-written message survives the transcript reloading beside it.
    visitor.get_by_role("textbox", name="Message").fill("I was walking home when")
    panel.get_by_label("Reply").fill("I am here. Take your time.")
    panel.get_by_role("button", name="Send").click()
    sent = time.monotonic()
    expect(transcript(visitor).get_by_text("I am here. Take your time.")).to_be_visible(
        timeout=REPLY_SECONDS * 1000
    )
    assert time.monotonic() - sent < REPLY_SECONDS
    # Two more reloads of the transcript frame, with the draft still in place.
    for _ in range(2):
        with visitor.expect_response(lambda r: "/chat/nojs/transcript" in r.url):
            pass
    expect(visitor.get_by_role("textbox", name="Message")).to_have_value(
        "I was walking home when"
    )

    old_transcript = transcript_url(visitor)
    visitor.get_by_role("button", name="End chat").click()
    expect(visitor.get_by_text("This chat has ended.")).to_be_visible()
    expect(visitor.get_by_text("You ended the chat.")).to_be_visible()
    expect(panel.get_by_text("The visitor ended the chat.")).to_be_visible()

    # Ending revoked the transcript's token: the old URL shows no message.
    check = no_script_context(browser).new_page()
    check.goto(old_transcript)
    expect(check.get_by_text("This chat has ended.")).to_be_visible()
    expect(check.get_by_text("I am here. Take your time.")).to_have_count(0)
    # And the chat page starts afresh.
    visitor.goto(f"{relay.base_url}/chat?site=demo")
    expect(visitor.get_by_role("button", name="Start chat")).to_be_visible()


def transcript_url(page: Page) -> str:
    src = page.locator("iframe[title='Conversation']").get_attribute("src")
    assert src is not None
    return page.url.split("/chat")[0] + src


def test_no_volunteer_state_without_scripts(
    relay: RelayServer, browser: Browser
) -> None:
    visitor = no_script_context(browser).new_page()
    visitor.goto(f"{relay.base_url}/chat?site=demo")
    expect(
        visitor.get_by_text("Nobody is available to chat right now. You can")
    ).to_be_visible()

    # The message form takes the place of the chat.
    expect(visitor.get_by_role("button", name="Start chat")).to_be_hidden()
    expect(visitor.get_by_role("button", name="Leave this message")).to_be_visible()
    expect(visitor.locator(".emergency-number").first).to_have_text("112")
    assert queue_entries(relay) == 0


def test_double_submits_create_one_conversation_and_one_message(
    relay: RelayServer, browser: Browser
) -> None:
    volunteer = available_volunteer_page(browser, relay)
    visitor = no_script_context(browser).new_page()
    visitor.goto(f"{relay.base_url}/chat?site=demo")
    start_form = visitor.locator("#start-form")
    start_fields = {
        name: start_form.locator(f"input[name='{name}']").get_attribute("value") or ""
        for name in ("site", "key", "csrf_token")
    }

    visitor.get_by_role("button", name="Start chat").dblclick()
    expect(
        transcript(visitor).get_by_text("You are number 1 in the queue.")
    ).to_be_visible()
    # Back shows the running conversation, not a second start form.
    visitor.go_back()
    expect(visitor.get_by_role("button", name="End chat")).to_be_visible()
    expect(visitor.get_by_role("button", name="Start chat")).to_be_hidden()
    # The old start form sent again, as Back and resubmit from a cached page
    # would: the same key finds the same conversation.
    again = visitor.request.post(
        f"{relay.base_url}/chat/nojs/start?site=demo",
        form=start_fields,
        max_redirects=0,
        headers={"sec-fetch-dest": "document"},  # as the tab's own resubmit
    )
    assert again.status == 303
    visitor.reload()
    expect(
        transcript(visitor).get_by_text("You are number 1 in the queue.")
    ).to_be_visible()
    assert queue_entries(relay) == 1

    volunteer.get_by_role("button", name="Accept").click()
    visitor.get_by_role("textbox", name="Message").fill("Only once, please.")
    visitor.get_by_role("button", name="Send").dblclick()
    panel = volunteer_panel(volunteer)
    expect(panel.get_by_text("Only once, please.")).to_be_visible()
    expect(transcript(visitor).get_by_text("Only once, please.")).to_be_visible()
    visitor.wait_for_load_state()
    # Reload the page after the post: PRG made it a plain GET.
    visitor.reload()
    expect(transcript(visitor).get_by_text("Only once, please.")).to_have_count(1)
    assert stored_bodies(relay) == ["Only once, please."]
    expect(panel.get_by_text("Only once, please.")).to_have_count(1)


def test_resubmitted_send_form_stores_once(
    relay: RelayServer, browser: Browser
) -> None:
    """Submitting one rendered send form twice (what Back and resubmit or a reload
    of the POST does) stores the message once."""
    volunteer = available_volunteer_page(browser, relay)
    visitor = no_script_context(browser).new_page()
    start_no_script_chat(visitor, relay, volunteer)

    visitor.get_by_role("textbox", name="Message").fill("Hello once")
    form = visitor.locator("form[action^='/chat/nojs/send']")
    fields = {
        name: form.locator(f"input[name='{name}']").get_attribute("value") or ""
        for name in ("site", "token", "csrf_token", "key")
    }
    visitor.get_by_role("button", name="Send").click()
    expect(transcript(visitor).get_by_text("Hello once")).to_be_visible()
    # The same form again, as the browser would resend it.
    response = visitor.request.post(
        f"{relay.base_url}/chat/nojs/send?site=demo",
        form={**fields, "body": "Hello once"},
    )
    assert response.ok
    visitor.reload()
    expect(transcript(visitor).get_by_text("Hello once")).to_have_count(1)
    assert stored_bodies(relay) == ["Hello once"]


def test_bad_input_shows_a_message_and_keeps_the_conversation(
    relay: RelayServer, browser: Browser
) -> None:
    volunteer = available_volunteer_page(browser, relay)
    visitor = no_script_context(browser).new_page()
    start_no_script_chat(visitor, relay, volunteer)

    for body in ["", "   \n  ", "\u200b\u200b\u2060", "\u200b \ufeff"]:
        visitor.get_by_role("textbox", name="Message").fill(body)
        visitor.get_by_role("button", name="Send").click()
        expect(
            visitor.get_by_text("Please write a message before sending.")
        ).to_be_visible()

    long_text = "x" * 4001
    visitor.get_by_role("textbox", name="Message").fill(long_text)
    visitor.get_by_role("button", name="Send").click()
    expect(visitor.get_by_text("That message is too long.")).to_be_visible()
    # The text is kept, so the visitor can shorten it.
    expect(visitor.get_by_role("textbox", name="Message")).to_have_value(long_text)

    assert stored_bodies(relay) == []
    visitor.get_by_role("textbox", name="Message").fill("Still here")
    visitor.get_by_role("button", name="Send").click()
    expect(volunteer_panel(volunteer).get_by_text("Still here")).to_be_visible()
    assert stored_bodies(relay) == ["Still here"]


def test_switch_from_no_script_to_script_and_back(
    relay: RelayServer, browser: Browser
) -> None:
    volunteer = available_volunteer_page(browser, relay)
    panel = volunteer_panel(volunteer)
    first = no_script_context(browser)
    visitor = first.new_page()
    start_no_script_chat(visitor, relay, volunteer)
    visitor.get_by_role("textbox", name="Message").fill("Sent without scripts")
    visitor.get_by_role("button", name="Send").click()
    expect(panel.get_by_text("Sent without scripts")).to_be_visible()
    expect(panel.get_by_text("no script", exact=True)).to_be_visible()

    # The visitor switches scripts on and reloads: same cookies, scripts on.
    second = browser.new_context(storage_state=first.storage_state())
    first.close()
    scripted = second.new_page()
    scripted.goto(f"{relay.base_url}/chat?site=demo")
    expect(
        scripted.get_by_role("heading", name="You are chatting with Sam")
    ).to_be_visible()
    expect(scripted.get_by_text("Sent without scripts")).to_have_count(1)
    expect(panel.get_by_text("no script", exact=True)).to_be_hidden()
    scripted.get_by_role("textbox", name="Message").fill("Sent with scripts")
    scripted.get_by_role("button", name="Send").click()
    expect(panel.get_by_text("Sent with scripts")).to_be_visible()
    panel.get_by_label("Reply").fill("Reply while scripts are on")
    panel.get_by_role("button", name="Send").click()
    expect(scripted.get_by_text("Reply while scripts are on")).to_be_visible()

    # And off again.
    third = no_script_context(browser, storage_state=second.storage_state())
    second.close()
    plain = third.new_page()
    plain.goto(f"{relay.base_url}/chat?site=demo")
    frame = transcript(plain)
    for text in [
        "Sent without scripts",
        "Sent with scripts",
        "Reply while scripts are on",
    ]:
        expect(frame.get_by_text(text)).to_have_count(1)
    expect(panel.get_by_text("no script", exact=True)).to_be_visible(
        timeout=REPLY_SECONDS * 1000
    )
    plain.get_by_role("textbox", name="Message").fill("Off again")
    plain.get_by_role("button", name="Send").click()
    expect(panel.get_by_text("Off again")).to_have_count(1)
    assert stored_bodies(relay) == [
        "Sent without scripts",
        "Sent with scripts",
        "Reply while scripts are on",
        "Off again",
    ]


class PartnerSite:
    """A static partner page on another origin (localhost, not 127.0.0.1)."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.origin = f"http://localhost:{self.port}"
        handler = partial(QuietHandler, directory=str(directory))
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> PartnerSite:
        self.thread.start()
        return self

    def __exit__(self, *args: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def partner(tmp_path: Path) -> Iterator[PartnerSite]:
    directory = tmp_path / "partner"
    directory.mkdir()
    with PartnerSite(directory) as site:
        site.directory = directory  # type: ignore[attr-defined]
        yield site


def test_inline_snippet_on_another_origin_without_scripts(
    relay: RelayServer, browser: Browser, partner: PartnerSite
) -> None:
    added = relay.cli("site", "add", "Partner", "--origin", partner.origin)
    assert added.returncode == 0, added.stderr
    snippet = re.search(r"<iframe [^>]*></iframe>", added.stdout)
    assert snippet is not None, added.stdout
    directory: Path = partner.directory  # type: ignore[attr-defined]
    (directory / "index.html").write_text(
        "<!doctype html><title>Partner</title><h1>Partner</h1>" + snippet.group(0)
    )
    volunteer = available_volunteer_page(browser, relay)
    visitor = no_script_context(browser).new_page()

    visitor.goto(f"{partner.origin}/index.html")
    chat = visitor.frame_locator("iframe[title='Chat with a volunteer']")
    chat.get_by_role("button", name="Start chat").click()
    frame = chat.frame_locator("iframe[title='Conversation']")
    expect(frame.get_by_text("You are number 1 in the queue.")).to_be_visible()
    assert visitor.url == f"{partner.origin}/index.html"

    volunteer.get_by_role("button", name="Accept").click()
    expect(
        frame.get_by_role("heading", name="You are chatting with Sam")
    ).to_be_visible(timeout=REPLY_SECONDS * 1000)
    chat.get_by_role("textbox", name="Message").fill("From the partner page")
    chat.get_by_role("button", name="Send").click()
    panel = volunteer_panel(volunteer)
    expect(panel.get_by_text("From the partner page")).to_be_visible()
    expect(panel.get_by_text("no script", exact=True)).to_be_visible()
    panel.get_by_label("Reply").fill("Hello inside the frame")
    panel.get_by_role("button", name="Send").click()
    expect(frame.get_by_text("Hello inside the frame")).to_be_visible(
        timeout=REPLY_SECONDS * 1000
    )
    # No URL the chat used carries the conversation token.
    chat_frame = next(f for f in visitor.frames if "/chat" in f.url)
    token = chat_frame.locator("input[name='token']").first.get_attribute("value")
    assert token
    assert all(token not in f.url for f in visitor.frames)

    chat.get_by_role("button", name="End chat").click()
    expect(chat.get_by_text("This chat has ended.")).to_be_visible()
    expect(panel.get_by_text("The visitor ended the chat.")).to_be_visible()

    chat.get_by_role("checkbox", name="Yes, delete this whole conversation").check()
    chat.get_by_role("button", name="Delete this conversation").click()
    expect(chat.get_by_text("deleted", exact=False).first).to_be_visible()
    assert queue_entries(relay) == 0


def test_delete_after_end_in_tab_without_scripts(
    relay: RelayServer, browser: Browser
) -> None:
    volunteer = available_volunteer_page(browser, relay)
    visitor = no_script_context(browser).new_page()
    start_no_script_chat(visitor, relay, volunteer)
    visitor.get_by_role("button", name="End chat").click()
    expect(visitor.get_by_text("This chat has ended.")).to_be_visible()

    delete = visitor.get_by_role("button", name="Delete this conversation")
    delete.click()
    # The confirmation box is required, so nothing is deleted without it.
    assert queue_entries(relay) == 1
    visitor.get_by_role("checkbox", name="Yes, delete this whole conversation").check()
    delete.click()
    expect(visitor.get_by_text("deleted", exact=False).first).to_be_visible()
    visitor.goto(f"{relay.base_url}/chat?site=demo")

    assert queue_entries(relay) == 0
    expect(visitor.get_by_role("button", name="Start chat")).to_be_visible()


def test_embed_link_without_scripts_opens_chat_in_new_tab(
    relay: RelayServer, browser: Browser
) -> None:
    context = no_script_context(browser)
    page = context.new_page()
    page.goto(f"{relay.base_url}/demo")
    link = page.get_by_role("link", name="Chat with us")
    expect(link).to_have_attribute("target", "_blank")
    with context.expect_page() as new_tab:
        link.click()
    chat = new_tab.value
    chat.wait_for_load_state()
    assert chat.url == f"{relay.base_url}/chat?site=demo"
    # Nobody is available, so the chat page offers the message form.
    expect(chat.get_by_role("button", name="Leave this message")).to_be_visible()


def test_chat_page_has_no_inline_script(relay: RelayServer) -> None:
    html = httpx.get(f"{relay.base_url}/chat?site=demo", timeout=10).text
    # A JSON data block is never run, so the CSP allows it: leave it out.
    html = re.sub(r'<script type="application/json"[^>]*>[^<]*</script>', "", html)
    for tag in re.findall(r"<script\b[^>]*>", html, flags=re.IGNORECASE):
        assert "src=" in tag
    assert not re.search(r"<script\b[^>]*>\s*[^<\s]", html, flags=re.IGNORECASE)
    assert not re.search(r"\son[a-z]+\s*=", html, flags=re.IGNORECASE)
    assert "javascript:" not in html.lower()


def test_volunteer_ending_shows_without_visitor_action(
    relay: RelayServer, browser: Browser
) -> None:
    volunteer = available_volunteer_page(browser, relay)
    visitor = no_script_context(browser).new_page()
    start_no_script_chat(visitor, relay, volunteer)
    visitor.get_by_role("textbox", name="Message").fill("Thank you")
    visitor.get_by_role("button", name="Send").click()
    form = visitor.locator("form[action^='/chat/nojs/send']")
    old_fields = {
        name: form.locator(f"input[name='{name}']").get_attribute("value") or ""
        for name in ("site", "token", "csrf_token", "key")
    }

    panel = volunteer_panel(volunteer)
    panel.get_by_role("button", name="End chat").click()
    panel.get_by_role("button", name="Yes, end chat").click()

    frame = transcript(visitor)
    expect(frame.get_by_text("The volunteer ended the chat.")).to_be_visible(
        timeout=REPLY_SECONDS * 1000
    )
    expect(frame.get_by_text("Thank you")).to_have_count(0)
    # The form of the ended chat, sent again, stores nothing.
    replay = visitor.request.post(
        f"{relay.base_url}/chat/nojs/send?site=demo",
        form={**old_fields, "body": "After the end"},
    )
    assert replay.status == 409
    assert "This chat has ended" in replay.text()
    assert stored_bodies(relay) == ["Thank you"]
    frame.get_by_role("link", name="Start a new chat").click()
    expect(visitor.get_by_text("The volunteer ended the chat.")).to_be_visible()
    expect(visitor.get_by_role("button", name="Start a new chat")).to_be_visible()
    visitor.get_by_role("button", name="Start a new chat").click()
    expect(
        transcript(visitor).get_by_text("You are number 1 in the queue.")
    ).to_be_visible()
    assert queue_entries(relay) == 2
