"""Statistics charts and the post-chat question in real Chromium, with scripts
switched on and off, against a real relay."""

from __future__ import annotations

import re
import sqlite3

import httpx
import pyotp
from playwright.sync_api import Browser, Page, expect

from tests.relayserver import RelayServer
from tests.test_end_to_end import open_chat, sign_in

PASSWORD = "supervisor-password-9"


def staff_cookie(relay: RelayServer, username: str, role: str) -> str:
    """Add a supervisor or admin, enrol their second factor; return their cookie."""
    result = relay.cli(
        "volunteer",
        "add",
        username,
        "--display-name",
        username.title(),
        "--role",
        role,
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert result.returncode == 0, result.stderr
    token = re.compile(r'name="csrf_token" value="([^"]+)"')
    with httpx.Client(base_url=relay.base_url) as client:
        page = client.get("/dashboard")
        page = client.post(
            "/dashboard/login",
            data={
                "username": username,
                "password": PASSWORD,
                "csrf_token": token.findall(page.text)[0],
            },
        )
        secret = re.findall(r'<code class="totp-secret">([A-Z2-7]+)</code>', page.text)
        client.post(
            "/dashboard/login/code",
            data={
                "code": pyotp.TOTP(secret[0]).now(),
                "csrf_token": token.findall(page.text)[0],
            },
        )
        cookie = client.cookies.get("vso_session")
    assert cookie is not None
    return cookie


def feedback_rows(relay: RelayServer) -> list[tuple[int, int | None, int | None]]:
    with sqlite3.connect(relay.database) as db:
        return list(
            db.execute(
                "SELECT feedback_given, helped, rating FROM conversation_statistics"
            )
        )


def available_volunteer(browser: Browser, relay: RelayServer) -> Page:
    page = browser.new_context().new_page()
    sign_in(page, relay)
    page.get_by_role("switch", name="Available").check()
    return page


def test_statistics_charts_without_scripts(
    relay: RelayServer, browser: Browser
) -> None:
    volunteer = available_volunteer(browser, relay)
    visitor = browser.new_context().new_page()
    chat = open_chat(visitor, relay)
    chat.get_by_role("button", name="Start chat").click()
    volunteer.get_by_role("button", name="Accept").click()
    chat.get_by_role("button", name="End chat").click()
    expect(chat.get_by_text("This chat has ended.")).to_be_visible()

    context = browser.new_context(java_script_enabled=False)
    context.add_cookies(
        [
            {
                "name": "vso_session",
                "value": staff_cookie(relay, "sofia", "supervisor"),
                "url": relay.base_url,
            }
        ]
    )
    page = context.new_page()
    page.goto(f"{relay.base_url}/dashboard/statistics")

    charts = page.locator("svg.chart")
    expect(charts).to_have_count(5)
    for index in range(5):
        chart = charts.nth(index)
        box = chart.bounding_box()
        assert box is not None
        assert box["width"] > 200
        assert box["height"] > 50
        assert (chart.locator("> title").text_content() or "").strip()
        assert (chart.locator("> desc").text_content() or "").strip()
        assert chart.get_attribute("role") == "img"
    daily = page.locator("svg#chart-daily, svg[aria-labelledby^='chart-daily']")
    bar_titles = daily.locator("rect.chart-bar > title").all_text_contents()
    assert len(bar_titles) == 30
    assert any(title.endswith(": 1 conversations") for title in bar_titles)
    bar = daily.locator("rect.chart-bar").last
    assert float(bar.get_attribute("height") or 0) > 0
    expect(page.get_by_role("table", name="Conversations per day")).to_be_visible()
    expect(page.get_by_role("link", name="Download “Summary” as CSV")).to_be_visible()


def test_feedback_with_scripts(relay: RelayServer, browser: Browser) -> None:
    volunteer = available_volunteer(browser, relay)
    visitor = browser.new_context().new_page()
    chat = open_chat(visitor, relay)
    chat.get_by_role("button", name="Start chat").click()
    volunteer.get_by_role("button", name="Accept").click()
    expect(
        chat.get_by_role("heading", name="You are chatting with Sam")
    ).to_be_visible()
    question = chat.get_by_role("group", name="Did you get the help you needed?")
    expect(question).to_be_hidden()

    chat.get_by_role("button", name="End chat").click()
    expect(question).to_be_visible()
    question.get_by_label("Yes").check()
    chat.get_by_role("radio", name="5").check()
    chat.get_by_role("button", name="Send answers").click()

    expect(chat.get_by_text("Thank you for your answers.")).to_be_visible()
    expect(question).to_be_hidden()
    assert feedback_rows(relay) == [(1, 1, 5)]
    panel = volunteer.get_by_role("region", name="Chat with Visitor", exact=False)
    link = panel.get_by_role("link", name="Write the case note")
    expect(link).to_be_visible()
    assert re.fullmatch(
        r"/dashboard/notes/[A-Za-z0-9_-]+", link.get_attribute("href") or ""
    )
    assert link.get_attribute("target") == "_blank"


def test_feedback_without_scripts(relay: RelayServer, browser: Browser) -> None:
    volunteer = available_volunteer(browser, relay)
    visitor = browser.new_context(java_script_enabled=False).new_page()
    visitor.goto(f"{relay.base_url}/chat?site=demo")
    visitor.get_by_role("button", name="Start chat").click()
    volunteer.get_by_role("button", name="Accept").click()
    panel = volunteer.get_by_role("region", name="Chat with Visitor", exact=False)
    expect(panel).to_be_visible()

    visitor.get_by_role("button", name="End chat").click()
    expect(visitor.get_by_text("This chat has ended.")).to_be_visible()
    question = visitor.get_by_role("group", name="Did you get the help you needed?")
    question.get_by_label("No").check()
    visitor.get_by_role("radio", name="2").check()
    visitor.get_by_role("button", name="Send answers").click()

    expect(visitor.get_by_text("Thank you for your answers.")).to_be_visible()
    expect(visitor.get_by_role("button", name="Send answers")).to_be_hidden()
    assert "token" not in visitor.url
    assert feedback_rows(relay) == [(1, 0, 2)]
