"""The e-mail channel end to end: a real ``vso serve`` fetching from Dovecot over
IMAP and sending through aiosmtpd over SMTP."""

from __future__ import annotations

import re
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest

from tests.mailrelay import (
    CORPUS,
    email_conversations,
    imports,
    mail_relay,
    query,
    reply_to,
    snapshot,
    volunteer_reply,
    wait_until,
)
from tests.mailservers import SERVICE_ADDRESS, Dovecot, SmtpServer
from tests.relayserver import RelayServer, kill

MAIL_LIMIT = 64 * 1024
MARIA = "maria.borg@mail.example.net"
TOKEN_ADDRESS = re.compile(r"help\+([a-z2-7]{26})@vso\.example\.org")


@pytest.fixture
def mail_server(
    tmp_path: Path, dovecot: Dovecot, smtp_server: SmtpServer
) -> Iterator[RelayServer]:
    server = mail_relay(tmp_path, dovecot, smtp_server, mail_max_bytes=str(MAIL_LIMIT))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def append(dovecot: Dovecot, *names: str) -> None:
    for name in names:
        dovecot.append((CORPUS / name).read_bytes())


def all_seen(dovecot: Dovecot, count: int) -> bool:
    flags = dovecot.flags()
    return len(flags) == count and all("\\Seen" in value for value in flags.values())


def wait_imported(server: RelayServer, count: int) -> None:
    wait_until(lambda: len(imports(server)) >= count, what=f"{count} imports")


def only_conversation_from(server: RelayServer, sender: str) -> str:
    found = [
        cid
        for cid in email_conversations(server)
        if snapshot(server, cid).thread.sender == sender
    ]
    assert len(found) == 1, f"{len(found)} conversations from {sender}"
    return found[0]


PEOPLE = {
    "plain.eml": (MARIA, "Can I talk to someone?"),
    "alternative.eml": ("jcam@mail.example.net", "Am I entitled to compensation"),
    "html_only.eml": ("news-reader@mail.example.net", "- He shouts\n- He follows"),
    "quoted_printable.eml": ("zaneta@mail.example.net", "robbed in Ħamrun"),
    "base64.eml": ("anon1987@mail.example.net", "I cannot sleep. — What"),
    "latin1.eml": ("rene@mail.example.net", "at the café and"),
    "cp1252.eml": ("pvella@mail.example.net", "€200 in it. The police said “we’ll"),
    "reply_outlook.eml": ("jgrech@mail.example.net", "Tuesday afternoon"),
    "signature.eml": ("anna.cassar@mail.example.net", "Can someone come with me?"),
    "attachment.eml": (MARIA, "I attach photos of the car."),
    "oversize.eml": ("long@mail.example.net", "over the limit of 64 KB"),
}
AUTOMATIC = [
    "auto_submitted.eml",
    "x_autoreply.eml",
    "precedence.eml",
    "list_bulk.eml",
    "bounce_report.eml",
    "bounce_daemon.eml",
    "no_sender.eml",
]


def test_mail_imports_corpus(
    mail_server: RelayServer, dovecot: Dovecot, smtp_server: SmtpServer
) -> None:
    append(dovecot, *PEOPLE, *AUTOMATIC)
    total = len(PEOPLE) + len(AUTOMATIC)
    wait_until(lambda: all_seen(dovecot, total), what="every mail flagged seen")
    outcomes = [row["outcome"] for row in imports(mail_server)]
    assert outcomes.count("imported") == len(PEOPLE)
    assert len(outcomes) == total
    conversations = email_conversations(mail_server)
    # plain.eml and attachment.eml come from the same sender but start two
    # threads: a new mail without a reply token is a new conversation.
    assert len(conversations) == len(PEOPLE)
    texts = {}
    for cid in conversations:
        snap = snapshot(mail_server, cid)
        assert snap.state == "waiting"
        assert len(snap.messages) == 1
        assert snap.messages[0].sender == "visitor"
        texts.setdefault(snap.thread.sender, []).append(snap.messages[0].body)
    for name, (sender, fragment) in PEOPLE.items():
        assert any(fragment in body for body in texts[sender]), name
    attachment_body = next(b for b in texts[MARIA] if "photos" in b)
    assert "2 attachments were not kept" in attachment_body


def test_mail_answers_attachments_and_oversize_once(
    mail_server: RelayServer, dovecot: Dovecot, smtp_server: SmtpServer
) -> None:
    append(dovecot, "attachment.eml", "oversize.eml", *AUTOMATIC)
    sent = smtp_server.wait_for(2)
    wait_until(lambda: all_seen(dovecot, 2 + len(AUTOMATIC)), what="all seen")
    recipients = sorted(item.recipients[0] for item in sent)
    assert recipients == ["long@mail.example.net", MARIA]
    for item in sent:
        message = item.message
        assert item.sender == SERVICE_ADDRESS
        assert message["Auto-Submitted"] == "auto-replied"
        assert message["From"].addresses[0].addr_spec == SERVICE_ADDRESS
    by_recipient = {item.recipients[0]: item.message for item in sent}
    attachment_notice = by_recipient[MARIA]
    assert "does not keep attachments" in attachment_notice.get_content()
    assert attachment_notice["In-Reply-To"] == "<att.1@mail.example.net>"
    oversize_notice = by_recipient["long@mail.example.net"]
    assert "too large" in oversize_notice.get_content()
    assert "the limit is 64 KB" in oversize_notice.get_content()

    def metrics_after_sending() -> str | None:
        text = httpx.get(f"{mail_server.base_url}/metrics").text
        return text if 'vso_mail_sent_total{kind="notice"} 2.0' in text else None

    scraped = wait_until(metrics_after_sending, what="the sends in the metrics")
    for line in (
        'vso_mail_imported_total{outcome="imported"} 2.0',
        'vso_mail_imported_total{outcome="ignored_bounce"} 2.0',
        'vso_mail_imported_total{outcome="ignored_auto_reply"} 3.0',
        'vso_mail_imported_total{outcome="ignored_bulk"} 1.0',
        'vso_mail_imported_total{outcome="ignored_without_sender"} 1.0',
    ):
        assert line in scraped, line
    # Nothing goes to the senders of bounces and auto-replies, later either.
    mail_server.stop()
    assert len(smtp_server.messages) == 2


def start_thread(
    server: RelayServer, dovecot: Dovecot, smtp_server: SmtpServer
) -> tuple[str, EmailMessage]:
    """Import plain.eml, reply to it, and return the conversation and the reply."""
    append(dovecot, "plain.eml")
    wait_imported(server, 1)
    cid = only_conversation_from(server, MARIA)
    volunteer_reply(server, cid, "Dear Maria, we are here for you.", "r1")
    return cid, smtp_server.wait_for(1)[0].message


def test_mail_threads_replies_both_ways(
    mail_server: RelayServer, dovecot: Dovecot, smtp_server: SmtpServer
) -> None:
    cid, first = start_thread(mail_server, dovecot, smtp_server)
    assert first["To"].addresses[0].addr_spec == MARIA
    assert first["From"].addresses[0].addr_spec == SERVICE_ADDRESS
    token_match = TOKEN_ADDRESS.fullmatch(first["Reply-To"].addresses[0].addr_spec)
    assert token_match is not None
    token = token_match.group(1)
    assert first["Message-ID"].startswith(f"<{token}.")
    assert first["In-Reply-To"] == "<20261204201403.4711@mail.example.net>"
    assert first["References"] == "<20261204201403.4711@mail.example.net>"
    assert first["Subject"] == "Re: Need to talk to someone"
    assert first["Auto-Submitted"] == "no"
    assert first.get_content().strip() == "Dear Maria, we are here for you."

    # Her reply, threaded by In-Reply-To, sent to the plain address.
    dovecot.append(
        reply_to(
            first,
            sender=MARIA,
            body="Thank you. Yes please.",
            message_id="<m2@mail.example.net>",
        )
    )
    wait_imported(mail_server, 2)
    assert email_conversations(mail_server) == [cid]

    volunteer_reply(mail_server, cid, "Could we call you tomorrow?", "r2")
    second = smtp_server.wait_for(2)[1].message
    assert second["In-Reply-To"] == "<m2@mail.example.net>"
    assert second["References"].split() == [
        "<20261204201403.4711@mail.example.net>",
        first["Message-ID"],
        "<m2@mail.example.net>",
    ]
    assert (
        TOKEN_ADDRESS.fullmatch(second["Reply-To"].addresses[0].addr_spec).group(1)
        == token
    )

    # A late reply to the first mail, by its Reply-To address only.
    dovecot.append(
        reply_to(
            first,
            sender=MARIA,
            body="Sorry, one more thing about the first mail.",
            message_id="<m3@mail.example.net>",
            to=first["Reply-To"].addresses[0].addr_spec,
            threaded=False,
        )
    )
    wait_imported(mail_server, 3)
    assert email_conversations(mail_server) == [cid]
    snap = snapshot(mail_server, cid)
    assert [m.sender for m in snap.messages] == [
        "visitor",
        "volunteer",
        "visitor",
        "volunteer",
        "visitor",
    ]
    assert snap.messages[2].body == "Thank you. Yes please."
    assert snap.messages[4].body == "Sorry, one more thing about the first mail."
    # The sender wrote last, so it is back with the volunteer who claimed it.
    assert snap.state == "claimed"
    assert len(smtp_server.messages) == 2


def test_mail_other_sender_never_merges(
    mail_server: RelayServer, dovecot: Dovecot, smtp_server: SmtpServer
) -> None:
    cid, first = start_thread(mail_server, dovecot, smtp_server)
    # Someone else has a copy of the reply and answers it, with its token.
    dovecot.append(
        reply_to(
            first,
            sender="eve@mail.example.net",
            body="I am Maria's husband. What did she tell you?",
            message_id="<eve1@mail.example.net>",
            to=first["Reply-To"].addresses[0].addr_spec,
        )
    )
    wait_imported(mail_server, 2)
    conversations = email_conversations(mail_server)
    assert len(conversations) == 2
    assert [m.sender for m in snapshot(mail_server, cid).messages] == [
        "visitor",
        "volunteer",
    ]
    eve = only_conversation_from(mail_server, "eve@mail.example.net")
    assert eve != cid
    assert len(snapshot(mail_server, eve).messages) == 1
    # A reply to Eve goes to Eve alone, with her own conversation's token.
    volunteer_reply(mail_server, eve, "We cannot share anything.", "e1")
    to_eve = smtp_server.wait_for(2)[1]
    assert to_eve.recipients == ["eve@mail.example.net"]
    assert first["Reply-To"].addresses[0].addr_spec not in str(
        to_eve.message["Reply-To"]
    )


def test_mail_addresses_never_in_database_file_or_log(
    mail_server: RelayServer, dovecot: Dovecot, smtp_server: SmtpServer
) -> None:
    append(dovecot, "plain.eml", "quoted_printable.eml")
    wait_until(lambda: all_seen(dovecot, 2), what="both flagged seen")
    mail_server.stop()
    stored = b"".join(
        path.read_bytes()
        for path in mail_server.directory.iterdir()
        if path.name.startswith("vso.sqlite3")
    )
    log = mail_server.log()
    for secret in (
        "maria.borg",
        "zaneta@",
        "Need to talk",
        "broke into my car",
        "Maria Borg",
    ):
        assert secret.encode() not in stored, secret
        assert secret not in log, secret


def test_mail_duplicate_message_id_imported_once(
    mail_server: RelayServer, dovecot: Dovecot
) -> None:
    append(dovecot, "plain.eml", "plain.eml")
    wait_until(lambda: all_seen(dovecot, 2), what="both flagged seen")
    rows = imports(mail_server)
    assert [row["outcome"] for row in rows] == ["imported", "duplicate"]
    assert [row["uid"] for row in rows] == [1, 2]
    assert len(email_conversations(mail_server)) == 1


def numbered_mail(number: int) -> bytes:
    message = EmailMessage()
    message["From"] = f"writer{number}@mail.example.net"
    message["To"] = SERVICE_ADDRESS
    message["Subject"] = f"Mail {number}"
    message["Message-ID"] = f"<bulk-{number}@mail.example.net>"
    message.set_content(f"This is mail number {number}.")
    return bytes(message)


def test_mail_import_survives_kill(
    tmp_path: Path, dovecot: Dovecot, smtp_server: SmtpServer
) -> None:
    count = 120
    client = dovecot.connect()
    try:
        for number in range(count):
            client.append("INBOX", "", None, numbered_mail(number))
    finally:
        client.logout()
    server = mail_relay(tmp_path, dovecot, smtp_server)
    server.start()
    try:
        wait_until(lambda: len(imports(server)) >= 1, what="the first import")
        kill(server)
        at_kill = len(imports(server))
        assert at_kill < count, "the import finished before the kill"
        # Mail imported before a crash but never flagged seen: take one
        # imported mail's flag away, as if the crash had come in between.
        first_uid = imports(server)[0]["uid"]
        client = dovecot.connect()
        try:
            client.select("INBOX")
            client.uid("STORE", str(first_uid), "-FLAGS", "(\\Seen)")
        finally:
            client.logout()
        server.start()
        wait_until(lambda: all_seen(dovecot, count), timeout=60, what="all seen")
        rows = imports(server)
        assert len(rows) == count
        assert len({row["uid"] for row in rows}) == count
        messages = query(
            server,
            "SELECT conversation_id, COUNT(*) AS n FROM messages GROUP BY 1",
        )
        assert len(messages) == count
        assert all(row["n"] == 1 for row in messages)
        assert re.search(r"flagging \d+ imported mails seen", server.log())
    finally:
        server.stop()


def test_mail_retries_after_smtp_down(
    mail_server: RelayServer, dovecot: Dovecot, smtp_server: SmtpServer
) -> None:
    smtp_server.set_down(True)
    append(dovecot, "attachment.eml")
    wait_until(
        lambda: "sending outbox mail 1 failed (attempt 1)" in mail_server.log(),
        what="a failed send",
    )
    assert smtp_server.messages == []
    smtp_server.set_down(False)
    sent = smtp_server.wait_for(1, timeout=30)
    assert sent[0].recipients == [MARIA]
    wait_until(
        lambda: query(mail_server, "SELECT sent_at FROM mail_outbox")[0]["sent_at"],
        what="the outbox row marked sent",
    )
    row = query(mail_server, "SELECT * FROM mail_outbox")[0]
    assert row["attempts"] >= 2
    assert row["content"] == ""
    assert row["recipient"] == ""
    assert "421" in (mail_server.log())
    assert len(smtp_server.messages) == 1
