"""Hostile e-mail in real Chromium and in outgoing headers: HTML, scripts, bidi
controls and CR LF in names and subjects stay text and break no header."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, expect

from tests.mailrelay import (
    CORPUS,
    email_conversations,
    imports,
    mail_relay,
    run_async,
    volunteer_reply,
    wait_until,
)
from tests.mailservers import Dovecot, SmtpServer
from tests.relayserver import RelayServer
from tests.test_end_to_end import sign_in
from tests.test_messages_browser import leave_message

HOSTILE_REPLY = "<script>window.__xss = 1</script><img src=x onerror=alert(3)>"


@pytest.fixture
def hostile_thread(
    tmp_path: Path, dovecot: Dovecot, smtp_server: SmtpServer
) -> Iterator[tuple[RelayServer, str]]:
    """A relay that imported hostile.eml, and that conversation's id."""
    server = mail_relay(tmp_path, dovecot, smtp_server)
    server.start()
    try:
        dovecot.append((CORPUS / "hostile.eml").read_bytes())
        wait_until(lambda: len(imports(server)) == 1, what="the import")
        [conversation_id] = email_conversations(server)
        yield server, conversation_id
    finally:
        server.stop()


def test_mail_page_shows_hostile_text(
    browser: Browser, hostile_thread: tuple[RelayServer, str]
) -> None:
    server, conversation_id = hostile_thread
    volunteer_reply(server, conversation_id, HOSTILE_REPLY, "h1")
    page = browser.new_context().new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    sign_in(page, server)
    page.goto(f"{server.base_url}/dashboard/mail/{conversation_id}")

    heading = page.get_by_role("heading", level=1)
    expect(heading).to_have_text(
        "<img src=x onerror=alert(1)> gnp.exe Bcc: victim@mail.example.net"
    )
    main = page.locator("main")
    expect(main).to_contain_text("Eve <script>alert(1)</script> Bcc: x@evil.example")
    expect(main).to_contain_text("<b>escaped</b> and Reversed text")
    expect(main.locator(".message-body").last).to_have_text(HOSTILE_REPLY)
    assert dialogs == []
    assert page.evaluate("window.__xss") is None
    assert main.locator("img, iframe, script, b").count() == 0
    text = main.inner_text()
    assert "\u202e" not in text
    assert "alert('body')" not in text


def test_mail_reply_headers_stay_intact(
    hostile_thread: tuple[RelayServer, str], smtp_server: SmtpServer
) -> None:
    server, conversation_id = hostile_thread
    volunteer_reply(server, conversation_id, HOSTILE_REPLY, "h1")
    [sent] = smtp_server.wait_for(1)
    assert sent.recipients == ["eve@mail.example.net"]
    message = sent.message
    assert message["Bcc"] is None
    assert message["Cc"] is None
    assert message["Subject"] == (
        "Re: <img src=x onerror=alert(1)> gnp.exe Bcc: victim@mail.example.net"
    )
    assert [str(value) for value in message.get_all("To")] == ["eve@mail.example.net"]
    header_block = sent.raw.split(b"\r\n\r\n", 1)[0]
    lines = header_block.split(b"\r\n")
    names = [line.split(b":", 1)[0].lower() for line in lines if line[:1] not in b" \t"]
    assert b"bcc" not in names
    assert b"\xe2\x80\xae" not in header_block
    assert message.get_content().strip() == HOSTILE_REPLY


def test_mail_page_needs_staff_and_known_id(
    hostile_thread: tuple[RelayServer, str],
) -> None:
    server, conversation_id = hostile_thread
    anonymous = httpx.get(f"{server.base_url}/dashboard/mail/{conversation_id}")
    assert anonymous.status_code == 303
    assert anonymous.headers["location"] == "/dashboard"

    async def signed_in_get(path: str) -> httpx.Response:
        cookie = await server.sign_in("demo", server.demo_password or "")
        async with httpx.AsyncClient(
            base_url=server.base_url, cookies={"vso_session": cookie}
        ) as client:
            return await client.get(path)

    unknown = run_async(lambda: signed_in_get("/dashboard/mail/no-such-conversation"))
    assert unknown.status_code == 404
    assert unknown.headers["cache-control"] == "no-store"
    known = run_async(lambda: signed_in_get(f"/dashboard/mail/{conversation_id}"))
    assert known.status_code == 200
    assert known.headers["cache-control"] == "no-store"
    assert "script-src 'self'" in known.headers["content-security-policy"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in known.text


def test_mail_reply_from_inbox_page(
    browser: Browser,
    hostile_thread: tuple[RelayServer, str],
    smtp_server: SmtpServer,
) -> None:
    server, conversation_id = hostile_thread
    page = browser.new_context().new_page()
    sign_in(page, server)
    page.goto(f"{server.base_url}/dashboard/inbox/{conversation_id}")
    expect(page.get_by_text("It goes to the sender by e-mail")).to_be_visible()
    page.get_by_label("Reply").fill("We read your e-mail.\nHow can we help?")
    page.get_by_role("button", name="Send reply").click()

    [sent] = smtp_server.wait_for(1)
    assert sent.recipients == ["eve@mail.example.net"]
    body = sent.message.get_content().replace("\r\n", "\n")
    assert body == "We read your e-mail.\nHow can we help?\n"
    page.get_by_role("link", name="Sender, subject and delivery of each reply").click()
    expect(page.locator(".message-status").last).to_have_text("Sent.")


def test_mail_page_hidden_from_other_volunteers(
    hostile_thread: tuple[RelayServer, str],
) -> None:
    server, conversation_id = hostile_thread
    volunteer_reply(server, conversation_id, "Claimed by the demo volunteer.", "c1")
    server.add_volunteer("alex", "Alex", "alex-password-123")

    async def get_as_alex() -> httpx.Response:
        cookie = await server.sign_in("alex", "alex-password-123")
        async with httpx.AsyncClient(
            base_url=server.base_url, cookies={"vso_session": cookie}
        ) as client:
            return await client.get(f"/dashboard/mail/{conversation_id}")

    response = run_async(get_as_alex)
    assert response.status_code == 403
    assert "Claimed by the demo" not in response.text
    assert "eve@" not in response.text


def test_reply_notice_from_message_form(
    browser: Browser, tmp_path: Path, dovecot: Dovecot, smtp_server: SmtpServer
) -> None:
    server = mail_relay(tmp_path, dovecot, smtp_server)
    server.start()
    try:
        visitor = browser.new_context(java_script_enabled=False).new_page()
        visitor.goto(f"{server.base_url}/message?site=demo")
        visitor.get_by_label("E-mail address for a notice").fill(
            "notify-me@mail.example.net"
        )
        code = leave_message(visitor, "Someone follows me home.")

        staff = browser.new_context().new_page()
        sign_in(staff, server)
        staff.goto(f"{server.base_url}/dashboard/inbox")
        staff.get_by_role("link", name="Open").first.click()
        staff.get_by_label("Reply", exact=True).fill("Please call 112 if in danger.")
        staff.get_by_role("button", name="Send reply").click()
        expect(staff.get_by_text("Reply sent.")).to_be_visible()

        [notice] = smtp_server.wait_for(1)
        assert notice.recipients == ["notify-me@mail.example.net"]
        text = notice.message.get_content().replace("\r\n", "\n")
        # The whole text is fixed: nothing of the conversation or the code.
        assert text == (
            "Hello,\n\nA volunteer has replied to the message you left. To read"
            f" the reply, open {server.base_url}/replies and enter your reply"
            " code.\n\nThis e-mail does not contain the reply. Please do not"
            " answer it.\n"
        )
        raw = notice.raw.decode("utf-8", "replace")
        for secret in ("Someone follows me", "Please call 112", code):
            assert secret not in raw, secret
    finally:
        server.stop()
