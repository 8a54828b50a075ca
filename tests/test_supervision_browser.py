"""Supervision in real Chromium on every side: a supervisor on the supervision
page, volunteers on their dashboards, and visitors with and without scripts.

The whisper tests look for the whisper everywhere a visitor could meet it: the
page text, every WebSocket frame the visitor's page received, the page after a
reload (which resumes the conversation), and the no-script transcript."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from playwright.sync_api import Browser, Locator, Page, WebSocket, expect

from tests.relayserver import RelayServer
from tests.staff import supervisor_cookie
from tests.test_end_to_end import sign_in
from tests.test_nojs_browser import (
    REPLY_SECONDS,
    available_volunteer_page,
    no_script_context,
    start_no_script_chat,
    transcript,
    volunteer_panel,
)

WHISPER = "Gently ask whether they are safe tonight"


def supervisor_page(browser: Browser, relay: RelayServer) -> Page:
    """Sign in supervisor "Sofia" over HTTP and open the supervision page."""
    # The session comes from the enrolment helper, which runs its own event loop
    # in a thread of its own, apart from Playwright's.
    with ThreadPoolExecutor(1) as pool:
        cookie = pool.submit(asyncio.run, supervisor_cookie(relay)).result()
    context = browser.new_context()
    context.add_cookies(
        [{"name": "vso_session", "value": cookie, "url": relay.base_url}]
    )
    page = context.new_page()
    page.goto(f"{relay.base_url}/dashboard/supervision")
    expect(page.get_by_text("Connected; the overview updates live.")).to_be_visible()
    return page


def recording_visitor(browser: Browser, relay: RelayServer) -> tuple[Page, list[str]]:
    """Open the chat page with scripts and record every frame its sockets receive."""
    page = browser.new_context().new_page()
    frames: list[str] = []

    def record(socket: WebSocket) -> None:
        socket.on("framereceived", lambda payload: frames.append(str(payload)))

    page.on("websocket", record)
    page.goto(f"{relay.base_url}/chat?site=demo")
    return page, frames


def start_chat(visitor: Page, volunteer: Page) -> None:
    visitor.get_by_role("button", name="Start chat").click()
    expect(visitor.get_by_text("You are number 1 in the queue.")).to_be_visible()
    volunteer.get_by_role("button", name="Accept").click()
    expect(
        visitor.get_by_role("heading", name="You are chatting with Sam")
    ).to_be_visible()


def open_first_conversation(supervisor: Page) -> Locator:
    rows = supervisor.locator("#conversation-rows tr")
    expect(rows).to_have_count(1)
    rows.first.get_by_role("button", name="Open").click()
    panel = supervisor.locator("#conversation-panel")
    expect(panel).to_be_visible()
    return panel


def whisper(supervisor: Page, text: str) -> None:
    panel = open_first_conversation(supervisor)
    panel.get_by_label("Whisper to the volunteer", exact=False).fill(text)
    panel.get_by_role("button", name="Send whisper").click()
    expect(panel.get_by_text(text)).to_be_visible()


def test_whisper_seen_by_volunteer_never_by_visitor(
    relay: RelayServer, browser: Browser
) -> None:
    volunteer = available_volunteer_page(browser, relay)
    visitor, frames = recording_visitor(browser, relay)
    start_chat(visitor, volunteer)
    visitor.get_by_label("Message").fill("Something happened last night")
    visitor.get_by_role("button", name="Send").click()
    panel = volunteer_panel(volunteer)
    expect(panel.get_by_text("Something happened last night")).to_be_visible()
    supervisor = supervisor_page(browser, relay)

    whisper(supervisor, WHISPER)

    expect(panel.get_by_text(WHISPER)).to_be_visible()
    expect(panel.get_by_text("Whisper from Sofia", exact=False)).to_be_visible()
    # Set apart from the messages, and saying the visitor does not see it.
    expect(panel.locator(".message.whisper")).to_contain_text(WHISPER)
    expect(panel.locator(".message.whisper")).to_contain_text(
        "the visitor does not see this"
    )
    panel.get_by_label("Reply").fill("Thank you for telling me.")
    panel.get_by_role("button", name="Send").click()
    expect(visitor.get_by_text("Thank you for telling me.")).to_be_visible()
    assert WHISPER not in visitor.inner_text("body")
    assert WHISPER not in visitor.content()
    assert frames, "the visitor's page received no frames at all"
    assert not any(WHISPER in frame for frame in frames)
    assert not any('"whisper"' in frame for frame in frames)

    # A reload resumes the conversation from the relay's stored history.
    frames.clear()
    visitor.reload()
    expect(visitor.get_by_text("Thank you for telling me.")).to_be_visible()
    expect(visitor.get_by_text("Something happened last night")).to_be_visible()
    assert WHISPER not in visitor.inner_text("body")
    assert frames, "the reloaded page received no frames"
    assert not any(WHISPER in frame for frame in frames)


def test_whisper_absent_from_no_script_transcript(
    relay: RelayServer, browser: Browser
) -> None:
    volunteer = available_volunteer_page(browser, relay)
    visitor = no_script_context(browser).new_page()
    start_no_script_chat(visitor, relay, volunteer)
    supervisor = supervisor_page(browser, relay)

    whisper(supervisor, WHISPER)
    panel = volunteer_panel(volunteer)
    expect(panel.get_by_text(WHISPER)).to_be_visible()
    panel.get_by_label("Reply").fill("I am listening.")
    panel.get_by_role("button", name="Send").click()

    expect(transcript(visitor).get_by_text("I am listening.")).to_be_visible(
        timeout=REPLY_SECONDS * 1000
    )
    frame = visitor.frame(url=lambda url: "/chat/nojs/transcript" in url)
    assert frame is not None
    assert WHISPER not in frame.content()
    assert WHISPER not in visitor.content()


def test_read_only_view_has_no_way_to_write(
    relay: RelayServer, browser: Browser
) -> None:
    volunteer = available_volunteer_page(browser, relay)
    visitor, _ = recording_visitor(browser, relay)
    start_chat(visitor, volunteer)
    visitor.get_by_label("Message").fill("Is anyone there?")
    visitor.get_by_role("button", name="Send").click()
    supervisor = supervisor_page(browser, relay)

    panel = open_first_conversation(supervisor)

    expect(panel.get_by_text("Is anyone there?")).to_be_visible()
    expect(panel.get_by_role("heading", name="(read-only)")).to_be_visible()
    expect(panel.get_by_role("button", name="Send to visitor")).to_be_hidden()
    expect(panel.get_by_label("Write to the visitor", exact=False)).to_be_hidden()

    # Joining shows the form; the visitor then sees the supervisor's name.
    panel.get_by_role("button", name="Join the conversation").click()
    expect(panel.get_by_role("heading", name="(joined)")).to_be_visible()
    panel.get_by_label("Write to the visitor", exact=False).fill("I am Sofia.")
    panel.get_by_role("button", name="Send to visitor").click()
    expect(visitor.get_by_text("I am Sofia.")).to_be_visible()
    expect(visitor.get_by_text("Sofia", exact=True)).to_be_visible()
    expect(
        volunteer_panel(volunteer).get_by_text("Sofia (supervisor)", exact=True)
    ).to_be_visible()


def test_need_support_reaches_supervisor(relay: RelayServer, browser: Browser) -> None:
    volunteer = available_volunteer_page(browser, relay)
    visitor, _ = recording_visitor(browser, relay)
    start_chat(visitor, volunteer)
    supervisor = supervisor_page(browser, relay)
    panel = volunteer_panel(volunteer)

    panel.get_by_role("button", name="Need support").click()

    expect(
        panel.get_by_text("Supervisors have been alerted.", exact=False)
    ).to_be_visible()
    alert = supervisor.locator("#alert-list li")
    expect(alert).to_contain_text("Sam asked for support")
    expect(supervisor).to_have_title("(1) Need support — Supervision")
    expect(supervisor.locator("#alert-badge")).to_have_text("1")
    alert.get_by_role("button", name="Acknowledge").click()
    expect(panel.get_by_text("Sofia saw your request", exact=False)).to_be_visible()
    expect(supervisor.locator("#alert-list li")).to_have_count(0)
    expect(supervisor).to_have_title("Supervision")


def test_need_support_with_no_supervisor_online(
    relay: RelayServer, browser: Browser
) -> None:
    volunteer = available_volunteer_page(browser, relay)
    visitor, _ = recording_visitor(browser, relay)
    start_chat(visitor, volunteer)
    panel = volunteer_panel(volunteer)

    panel.get_by_role("button", name="Need support").click()

    expect(panel.get_by_text("No supervisor is online", exact=False)).to_be_visible()


def test_transfer_moves_chat_between_dashboards(
    relay: RelayServer, browser: Browser
) -> None:
    sam = available_volunteer_page(browser, relay)
    visitor, _ = recording_visitor(browser, relay)
    start_chat(visitor, sam)
    visitor.get_by_label("Message").fill("Before the transfer")
    visitor.get_by_role("button", name="Send").click()
    expect(volunteer_panel(sam).get_by_text("Before the transfer")).to_be_visible()
    relay.add_volunteer("alex", "Alex", "second-volunteer-password")
    alex = browser.new_context().new_page()
    alex.goto(f"{relay.base_url}/dashboard")
    alex.get_by_label("Username").fill("alex")
    alex.get_by_label("Password").fill("second-volunteer-password")
    alex.get_by_role("button", name="Sign in").click()
    alex.get_by_role("switch", name="Available").check()
    supervisor = supervisor_page(browser, relay)
    panel = open_first_conversation(supervisor)

    panel.get_by_label("Transfer to").select_option(label="Alex (0 of 2)")
    panel.get_by_role("button", name="Transfer").click()

    alex_panel = volunteer_panel(alex)
    expect(alex_panel.get_by_text("Before the transfer")).to_be_visible()
    expect(sam.get_by_text("transferred the chat", exact=False)).to_be_visible()
    expect(volunteer_panel(sam)).to_have_count(0)
    expect(
        visitor.get_by_role("heading", name="You are chatting with Alex")
    ).to_be_visible()
    expect(
        visitor.get_by_text("Another volunteer continues this chat with you.")
    ).to_be_visible()
    visitor.get_by_label("Message").fill("After the transfer")
    visitor.get_by_role("button", name="Send").click()
    expect(alex_panel.get_by_text("After the transfer")).to_be_visible()
    assert "After the transfer" not in sam.inner_text("body")


def test_hard_chat_break_in_dashboard(relay: RelayServer, browser: Browser) -> None:
    volunteer = browser.new_context().new_page()
    sign_in(volunteer, relay)
    switch = volunteer.get_by_role("switch", name="Available")
    switch.check()
    visitor, _ = recording_visitor(browser, relay)
    start_chat(visitor, volunteer)
    supervisor = supervisor_page(browser, relay)
    panel = volunteer_panel(volunteer)
    visitor.get_by_role("button", name="End chat").click()
    expect(panel.get_by_text("The visitor ended the chat.")).to_be_visible()

    panel.get_by_role("button", name="This chat was hard", exact=False).click()

    expect(
        volunteer.get_by_text("You are on a break until", exact=False)
    ).to_be_visible()
    expect(switch).not_to_be_checked()
    expect(supervisor.locator("#volunteer-rows")).to_contain_text("On a break")
    volunteer.get_by_role("button", name="End the break now").click()
    expect(switch).to_be_checked()
    expect(volunteer.locator("#break-banner")).to_be_hidden()
