"""Reading bounces: which sent mail they name, and only their status and action."""

from __future__ import annotations

from email.message import EmailMessage

import pytest

from relay.mailbounce import BounceReport, read_bounce
from relay.mailparse import BOUNCE, parse_mail
from relay.mailthread import compose
from tests.bounces import exchange_notice, gmail_notice, postfix_report

RECIPIENT = "maria.borg@mail.example.net"
REPLY_ID = "k7q2m4v9x3c8n5b6z1w0p4r7t2.0123456789abcdef@vso.example.org"
VISITOR_ID = "20261204201403.4711@mail.example.net"
EARLIER_REPLY_ID = "k7q2m4v9x3c8n5b6z1w0p4r7t2.fedcba9876543210@vso.example.org"


def sent_reply() -> bytes:
    """Return a reply of the service as it goes out over SMTP."""
    return compose(
        service_address="help@vso.example.org",
        service_name="Victim Support",
        token="k7q2m4v9x3c8n5b6z1w0p4r7t2",
        recipient=RECIPIENT,
        subject="Need to talk to someone",
        body="Dear Maria, we are here for you.\nCall 116 006 any day.",
        message_id=f"<{REPLY_ID}>",
        references=[VISITOR_ID, EARLIER_REPLY_ID],
        automatic=False,
    )


def read(raw: bytes) -> BounceReport | None:
    """Read ``raw`` as the relay does: classified first, then read as a bounce."""
    parsed = parse_mail(raw, 10 * 1024 * 1024)
    assert parsed.kind == BOUNCE
    return read_bounce(raw, parsed.sender)


def test_bounce_with_returned_mail() -> None:
    report = read(postfix_report(sent_reply(), RECIPIENT))
    assert report == BounceReport((REPLY_ID,), "5.1.1", "failed")


def test_bounce_with_returned_headers() -> None:
    raw = postfix_report(
        sent_reply(), RECIPIENT, headers_only=True, status="5.2.2", action="failed"
    )
    assert read(raw) == BounceReport((REPLY_ID,), "5.2.2", "failed")


def test_bounce_delayed_report() -> None:
    raw = postfix_report(sent_reply(), RECIPIENT, status="4.4.1", action="delayed")
    assert read(raw) == BounceReport((REPLY_ID,), "4.4.1", "delayed")


def test_bounce_gmail_quoted_headers() -> None:
    report = read(gmail_notice(sent_reply(), RECIPIENT))
    assert report == BounceReport((REPLY_ID,), "5.1.1", None)


def test_bounce_exchange_quoted_headers() -> None:
    report = read(exchange_notice(sent_reply(), RECIPIENT))
    assert report == BounceReport((REPLY_ID,), "5.1.10", None)


def test_bounce_quoted_in_html_only() -> None:
    raw = gmail_notice(sent_reply(), RECIPIENT)
    # Drop the text alternative: the ID is then read from the HTML's <pre>.
    head, _, rest = raw.partition(b'Content-Type: text/plain; charset="UTF-8"')
    html = rest.partition(b"--000000000000b1a0e5062c3f9d41\n")[2]
    report = read(head + html)
    assert report is not None
    assert report.message_ids == (REPLY_ID,)


def test_bounce_status_comment_dropped() -> None:
    raw = postfix_report(sent_reply(), RECIPIENT, status="5.1.1 (bad mailbox)")
    report = read(raw)
    assert report is not None
    assert report.status == "5.1.1"


@pytest.mark.parametrize(
    "status",
    ["5.1.1<script>", "5.1", "9.1.1", "5.1.1.1", "550", "", "x@example.net"],
)
def test_bounce_invalid_status_dropped(status: str) -> None:
    report = read(postfix_report(sent_reply(), RECIPIENT, status=status))
    assert report is not None
    assert report.status is None
    assert report.action == "failed"


def test_bounce_unknown_action_kept_without_action() -> None:
    raw = postfix_report(sent_reply(), RECIPIENT, action="<b>gone</b>")
    assert read(raw) == BounceReport((REPLY_ID,), "5.1.1", None)


def test_bounce_keeps_no_diagnostic_or_address() -> None:
    hostile = "smtp; 550 5.1.1 <{recipient}> <script>alert(1)</script> no such user"
    report = read(postfix_report(sent_reply(), RECIPIENT, diagnostic=hostile))
    assert report is not None
    text = repr(report)
    for fragment in ("maria", "script", "no such user", "550", "mail.example.net"):
        assert fragment not in text, fragment


def test_bounce_success_report_is_none() -> None:
    raw = postfix_report(sent_reply(), RECIPIENT, status="2.0.0", action="delivered")
    assert read(raw) is None


def test_bounce_read_receipt_is_none() -> None:
    raw = postfix_report(sent_reply(), RECIPIENT).replace(
        b"report-type=delivery-status", b"report-type=disposition-notification"
    )
    assert read(raw) is None


def test_bounce_report_without_type_needs_daemon() -> None:
    raw = postfix_report(sent_reply(), RECIPIENT).replace(
        b" report-type=delivery-status;", b""
    )
    assert read_bounce(raw, "mailer-daemon@mx.vso.example.org") is not None
    assert read_bounce(raw, RECIPIENT) is None


def test_bounce_in_reply_to_fallback() -> None:
    sent = sent_reply().replace(f"Message-ID: <{REPLY_ID}>\r\n".encode(), b"")
    raw = postfix_report(sent, RECIPIENT).replace(
        b"Auto-Submitted: auto-replied\n",
        f"Auto-Submitted: auto-replied\nIn-Reply-To: <{REPLY_ID}>\n"
        f"References: <{EARLIER_REPLY_ID}> <{REPLY_ID}>\n".encode(),
    )
    assert read(raw) == BounceReport((REPLY_ID,), "5.1.1", "failed")


def test_bounce_never_uses_returned_references() -> None:
    # The returned mail has no Message-ID; its References name the visitor's
    # mail and an earlier reply, which did not bounce.
    sent = sent_reply().replace(f"Message-ID: <{REPLY_ID}>\r\n".encode(), b"")
    report = read(postfix_report(sent, RECIPIENT))
    assert report is None


def test_bounce_vacation_reply_is_none() -> None:
    vacation = EmailMessage()
    vacation["Return-Path"] = "<>"
    vacation["From"] = RECIPIENT
    vacation["To"] = "help@vso.example.org"
    vacation["Subject"] = "Out of office"
    vacation["Auto-Submitted"] = "auto-replied"
    vacation["In-Reply-To"] = f"<{REPLY_ID}>"
    vacation["References"] = f"<{REPLY_ID}>"
    vacation.set_content("I am away until Monday. Status: 5.1.1 is not a bounce.")
    assert read(bytes(vacation)) is None


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"From: MAILER-DAEMON@mx.example.net\n\n\xff\xfe garbage",
        b"Content-Type: multipart/report; report-type=delivery-status;"
        b' boundary="x"\nFrom: MAILER-DAEMON@mx.example.net\n\n--x\n'
        b"Content-Type: message/delivery-status\n\nAction\n--x",
        b"From: postmaster@mx.example.net\nContent-Type: multipart/mixed;"
        b' boundary="a"\n\n'
        + b'--a\nContent-Type: multipart/mixed; boundary="a"\n\n'
        * 50,
    ],
)
def test_bounce_damaged_mail_is_none(raw: bytes) -> None:
    assert read_bounce(raw, "mailer-daemon@mx.example.net") is None
