"""The real chat page in Chromium right after a restart: a visitor who presses
Start before the volunteer's dashboard is back waits in the queue and is
paired when the dashboard returns."""

from __future__ import annotations

import sqlite3
import time

from playwright.sync_api import Browser, expect

from tests.relayserver import RelayServer
from tests.test_end_to_end import open_chat, sign_in

STORE_TIMEOUT = 10.0


def wait_until_stored_available(relay: RelayServer) -> None:
    """Poll the database until the demo volunteer's "Available" is stored."""
    deadline = time.monotonic() + STORE_TIMEOUT
    while time.monotonic() < deadline:
        with sqlite3.connect(relay.database) as db:
            row = db.execute(
                "SELECT available FROM volunteers WHERE username = 'demo'"
            ).fetchone()
        if row is not None and row[0] == 1:
            return
        time.sleep(0.05)
    raise AssertionError("the relay did not store the volunteer as available")


def test_browser_visitor_waits_for_dashboard_after_restart(
    long_grace_relay: RelayServer, browser: Browser
) -> None:
    relay = long_grace_relay
    volunteer_context = browser.new_context()
    volunteer = volunteer_context.new_page()
    sign_in(volunteer, relay)
    volunteer.get_by_role("switch", name="Available").check()
    wait_until_stored_available(relay)
    # The dashboard stays away until the visitor has started, so the start
    # falls inside the window whatever the dashboard's reconnection delay.
    volunteer.close()
    relay.stop()
    relay.start()

    chat = open_chat(browser.new_context().new_page(), relay)
    chat.get_by_role("button", name="Start chat").click()
    expect(chat.get_by_text("You are number 1 in the queue.")).to_be_visible()
    nobody = chat.get_by_text("No volunteer is available at the moment.", exact=False)
    expect(nobody).to_be_hidden()

    dashboard = volunteer_context.new_page()
    dashboard.goto(f"{relay.base_url}/dashboard")
    expect(dashboard.get_by_role("switch", name="Available")).to_be_checked()
    dashboard.get_by_role("button", name="Accept").click()

    expect(
        chat.get_by_role("heading", name="You are chatting with Sam")
    ).to_be_visible()
    expect(nobody).to_be_hidden()
