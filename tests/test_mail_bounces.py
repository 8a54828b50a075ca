"""Bounces of replies, end to end: a volunteer replies from the dashboard, the
bounce arrives in Dovecot, the relay fetches it, and the dashboard shows the
volunteer which reply was not delivered and why."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.bounces import (
    exchange_notice,
    gmail_notice,
    message_id_of,
    postfix_report,
)
from tests.mailrelay import (
    CORPUS,
    email_conversations,
    imports,
    mail_relay,
    query,
    wait_until,
)
from tests.mailservers import Dovecot, SmtpServer
from tests.relayserver import RelayServer
from tests.test_end_to_end import sign_in

MARIA = "maria.borg@mail.example.net"
ADDRESS_GONE = "The e-mail address does not exist."
HOSTILE_DIAGNOSTIC = (
    "smtp; 550 5.1.1 <{recipient}> <script>window.__xss = 1</script>"
    "<img src=x onerror=alert(1)> forwarded to other.box@elsewhere.example"
)


@dataclass
class Replied:
    """A relay whose volunteer replied to plain.eml from the dashboard."""

    server: RelayServer
    conversation_id: str
    page: Page
    sent: bytes

    def receive(self, bounce: bytes, dovecot: Dovecot) -> str:
        """Put ``bounce`` in the mailbox and return its import's outcome."""
        count = len(imports(self.server))
        dovecot.append(bounce)
        wait_until(lambda: len(imports(self.server)) > count, what="the bounce import")
        return str(imports(self.server)[-1]["outcome"])

    def open_conversation(self) -> None:
        self.page.goto(f"{self.server.base_url}/dashboard/inbox/{self.conversation_id}")


@pytest.fixture
def replied(
    tmp_path: Path, dovecot: Dovecot, smtp_server: SmtpServer, browser: Browser
) -> Iterator[Replied]:
    server = mail_relay(tmp_path, dovecot, smtp_server)
    server.start()
    try:
        dovecot.append((CORPUS / "plain.eml").read_bytes())
        wait_until(lambda: len(imports(server)) == 1, what="the visitor's mail")
        [conversation_id] = email_conversations(server)
        page = browser.new_context().new_page()
        sign_in(page, server)
        page.goto(f"{server.base_url}/dashboard/inbox/{conversation_id}")
        page.get_by_label("Reply").fill("Dear Maria, we are here for you.")
        page.get_by_role("button", name="Send reply").click()
        expect(page.get_by_text("Reply sent.")).to_be_visible()
        [sent] = smtp_server.wait_for(1)
        assert sent.recipients == [MARIA]
        yield Replied(server, conversation_id, page, sent.raw)
        page.context.close()
    finally:
        server.stop()


def bounce_columns(server: RelayServer) -> list[tuple[object, ...]]:
    rows = query(
        server,
        "SELECT bounced_at IS NOT NULL, bounce_status, bounce_action"
        " FROM mail_outbox ORDER BY id",
    )
    return [tuple(row) for row in rows]


def stored_bytes(server: RelayServer) -> bytes:
    """Return the database file and its WAL, lower-cased."""
    return b"".join(
        path.read_bytes()
        for path in server.directory.iterdir()
        if path.name.startswith("vso.sqlite3")
    ).lower()


BOUNCES: dict[str, tuple[Callable[[bytes, str], bytes], str | None]] = {
    "returned mail": (postfix_report, "failed"),
    "returned headers": (
        lambda sent, to: postfix_report(sent, to, headers_only=True),
        "failed",
    ),
    "quoted headers": (gmail_notice, None),
    "exchange quoted headers": (exchange_notice, None),
}


@pytest.mark.parametrize("name", list(BOUNCES))
def test_bounce_marks_reply(replied: Replied, dovecot: Dovecot, name: str) -> None:
    build, action = BOUNCES[name]
    assert replied.receive(build(replied.sent, MARIA), dovecot) == "matched bounce"
    status = "5.1.10" if name.startswith("exchange") else "5.1.1"
    assert bounce_columns(replied.server) == [(1, status, action)]

    replied.open_conversation()
    mark = replied.page.locator(".message-volunteer .bounce-mark")
    expect(mark).to_have_count(1)
    expect(mark.locator(".bounce-title")).to_have_text("Not delivered")
    expect(mark.locator(".bounce-reason")).to_have_text(ADDRESS_GONE)
    expect(replied.page.locator(".message-visitor .bounce-mark")).to_have_count(0)

    # The reply moved the conversation to "answered"; its row carries the flag.
    replied.page.goto(f"{replied.server.base_url}/dashboard/inbox?state=answered")
    row = replied.page.locator(
        f'.inbox-row[data-conversation="{replied.conversation_id}"]'
    )
    expect(row.locator(".bounce-flag")).to_have_text("Reply not delivered")


def test_bounce_shown_on_mail_page(replied: Replied, dovecot: Dovecot) -> None:
    bounce = postfix_report(replied.sent, MARIA, status="5.2.2", headers_only=True)
    replied.receive(bounce, dovecot)
    replied.page.goto(
        f"{replied.server.base_url}/dashboard/mail/{replied.conversation_id}"
    )
    mark = replied.page.locator(".bounce-mark")
    expect(mark.locator(".bounce-title")).to_have_text("Not delivered")
    expect(mark.locator(".bounce-reason")).to_have_text(
        "The recipient's mailbox is full."
    )
    expect(replied.page.locator(".message-status")).to_have_count(0)


def test_bounce_unknown_message_id_changes_nothing(
    replied: Replied, dovecot: Dovecot
) -> None:
    own_id = message_id_of(replied.sent).encode()
    other = replied.sent.replace(own_id, b"<unknown.0123456789abcdef@vso.example.org>")
    assert other != replied.sent
    assert replied.receive(postfix_report(other, MARIA), dovecot) == "ignored bounce"
    assert replied.receive(gmail_notice(other, MARIA), dovecot) == "ignored bounce"
    assert bounce_columns(replied.server) == [(0, None, None)]

    replied.open_conversation()
    expect(replied.page.locator(".message-volunteer")).to_have_count(1)
    expect(replied.page.locator(".bounce-mark")).to_have_count(0)
    replied.page.goto(f"{replied.server.base_url}/dashboard/inbox?state=answered")
    expect(replied.page.locator(".inbox-row")).to_have_count(1)
    expect(replied.page.locator(".bounce-flag")).to_have_count(0)


def test_bounce_hostile_diagnostic_shown_nowhere(
    replied: Replied, dovecot: Dovecot
) -> None:
    dialogs: list[str] = []
    replied.page.on(
        "dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss())
    )
    bounce = postfix_report(
        replied.sent, MARIA, status="5.7.1", diagnostic=HOSTILE_DIAGNOSTIC
    )
    assert replied.receive(bounce, dovecot) == "matched bounce"

    replied.open_conversation()
    mark = replied.page.locator(".bounce-mark")
    expect(mark.locator(".bounce-reason")).to_have_text(
        "The receiving mail server refused it with status 5.7.1."
    )
    main = replied.page.locator("main")
    assert main.locator("img, script").count() == 0
    assert replied.page.evaluate("window.__xss") is None
    assert dialogs == []
    text = main.inner_text()
    for fragment in ("onerror", "window.__xss", "other.box", "550 5.1.1"):
        assert fragment not in text, fragment

    replied.server.stop()
    stored = stored_bytes(replied.server)
    for fragment in (
        "onerror",
        "window.__xss",
        "recipient address rejected",
        "other.box@elsewhere",
        "maria.borg",
        "mailer-daemon@",
        "help@vso.example.org",
        "help+",
        "mail.example.net[192.0.2.25]",
    ):
        assert fragment.encode() not in stored, fragment


def test_bounce_counted_and_logged(replied: Replied, dovecot: Dovecot) -> None:
    replied.receive(postfix_report(replied.sent, MARIA), dovecot)
    scraped = httpx.get(f"{replied.server.base_url}/metrics").text
    assert 'vso_mail_bounces_total{action="failed"} 1.0' in scraped
    assert 'vso_mail_imported_total{outcome="matched_bounce"} 1.0' in scraped
    log = replied.server.log()
    assert (
        f"outbox mail 1 of {replied.conversation_id} bounced: status 5.1.1,"
        " action failed"
    ) in log
    for fragment in ("maria.borg", "mailer-daemon@", "User unknown"):
        assert fragment not in log, fragment


def delay_report(sent: bytes, local_id: str) -> bytes:
    """Return Postfix's report that delivery of ``sent`` is delayed."""
    return postfix_report(
        sent,
        MARIA,
        status="4.4.1",
        action="delayed",
        bounce_id=f"{local_id}@mx.vso.example.org",
    )


def test_bounce_delay_then_failure(replied: Replied, dovecot: Dovecot) -> None:
    replied.receive(delay_report(replied.sent, "delay.1"), dovecot)
    replied.open_conversation()
    mark = replied.page.locator(".bounce-mark")
    expect(mark.locator(".bounce-title")).to_have_text("Not delivered yet")
    expect(mark.locator(".bounce-reason")).to_contain_text("may still arrive")

    failed = postfix_report(
        replied.sent, MARIA, status="4.4.7", bounce_id="final.1@mx.vso.example.org"
    )
    replied.receive(failed, dovecot)
    # A delay report that arrives after the final one changes nothing.
    replied.receive(delay_report(replied.sent, "delay.2"), dovecot)
    assert bounce_columns(replied.server) == [(1, "4.4.7", "failed")]
    replied.open_conversation()
    expect(mark.locator(".bounce-title")).to_have_text("Not delivered")
    expect(mark.locator(".bounce-reason")).to_have_text(
        "The mail servers gave up after a temporary problem lasted too long."
    )


def test_bounce_flag_cleared_by_new_reply(
    replied: Replied, dovecot: Dovecot, smtp_server: SmtpServer
) -> None:
    replied.receive(postfix_report(replied.sent, MARIA, status="5.2.2"), dovecot)
    replied.open_conversation()
    replied.page.get_by_label("Reply").fill("Your mailbox was full; here it is again.")
    replied.page.get_by_role("button", name="Send reply").click()
    expect(replied.page.get_by_text("Reply sent.")).to_be_visible()
    smtp_server.wait_for(2)

    # The first reply keeps its mark; the row no longer has the flag.
    expect(replied.page.locator(".message-volunteer")).to_have_count(2)
    expect(replied.page.locator(".message-volunteer .bounce-mark")).to_have_count(1)
    expect(
        replied.page.locator(".message-volunteer").first.locator(".bounce-mark")
    ).to_have_count(1)
    replied.page.goto(f"{replied.server.base_url}/dashboard/inbox?state=answered")
    expect(replied.page.locator(".inbox-row")).to_have_count(1)
    expect(replied.page.locator(".bounce-flag")).to_have_count(0)
