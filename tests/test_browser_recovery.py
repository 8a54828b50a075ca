"""The real chat page and dashboard in Chromium through a relay crash: both
reconnect by themselves, and a message sent while the relay was down arrives
once."""

from __future__ import annotations

import signal

from playwright.sync_api import Browser, expect

from tests.relayserver import RelayServer
from tests.test_end_to_end import open_chat, sign_in

# chat.js waits at most 15 s between reconnection attempts.
RECONNECT_TIMEOUT_MS = 40_000


def test_browser_chat_survives_kill9(
    long_grace_relay: RelayServer, browser: Browser
) -> None:
    relay = long_grace_relay
    volunteer = browser.new_context().new_page()
    visitor = browser.new_context().new_page()
    sign_in(volunteer, relay)
    volunteer.get_by_role("switch", name="Available").check()
    chat = open_chat(visitor, relay)
    chat.get_by_role("button", name="Start chat").click()
    volunteer.get_by_role("button", name="Accept").click()
    expect(
        chat.get_by_role("heading", name="You are chatting with Sam")
    ).to_be_visible()
    chat.get_by_label("Message").fill("Sent before the crash")
    chat.get_by_role("button", name="Send").click()
    panel = volunteer.get_by_role("region", name="Chat with Visitor", exact=False)
    expect(panel.get_by_text("Sent before the crash")).to_be_visible()

    relay.stop(signal.SIGKILL)
    chat.get_by_label("Message").fill("Sent while the relay was down")
    chat.get_by_role("button", name="Send").click()
    relay.start()

    expect(panel.get_by_text("Sent while the relay was down")).to_have_count(
        1, timeout=RECONNECT_TIMEOUT_MS
    )
    expect(panel.get_by_text("Sent before the crash")).to_have_count(1)
    expect(chat.get_by_text("Sent while the relay was down")).to_have_count(1)
