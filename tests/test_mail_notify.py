"""The reply notice for message conversations: sent through a real SMTP server,
it tells only that a reply waits at /replies."""

from __future__ import annotations

import asyncio
from pathlib import Path

from relay.crypto import DataCipher, new_key_text
from relay.mail import MailService
from relay.settings import load_settings
from relay.store import Store
from tests.mailservers import SERVICE_ADDRESS, SmtpServer

VISITOR_TEXT = "He found my diary and I am scared to go home."
REPLY_TEXT = "You can stay with a friend tonight; here is how we can help."
REPLY_CODE_HASH = "c0de" * 16


def notify_once(
    tmp_path: Path, smtp_server: SmtpServer, notify_address: str | None
) -> str:
    """Store a message conversation with a reply, notify, send; return its id."""
    settings = load_settings(
        {
            "VSO_DATABASE": str(tmp_path / "vso.sqlite3"),
            "VSO_SECRET_KEY": "s" * 40,
            "VSO_PUBLIC_URL": "https://chat.example.org",
            "VSO_MAIL_ADDRESS": SERVICE_ADDRESS,
            "VSO_MAIL_SMTP_HOST": "127.0.0.1",
            "VSO_MAIL_SMTP_PORT": str(smtp_server.port),
            "VSO_MAIL_SMTP_TLS": "none",
        }
    )

    async def run() -> str:
        store = await Store.open(
            settings.database, DataCipher.from_text(new_key_text())
        )
        try:
            site = await store.add_site("demo", "Demo", [], "https://example.org/")
            volunteer = await store.add_volunteer("sam", "Sam", "x", 2)
            entry, _ = await store.create_inbox_conversation(
                "conv-notify-1",
                site.id,
                "message",
                VISITOR_TEXT,
                client_id="first",
                reply_code_hash=REPLY_CODE_HASH,
                notify_address=notify_address,
            )
            await store.record_inbox_reply(
                entry.conversation_id, volunteer.id, "reply-1", REPLY_TEXT
            )
            mail = MailService(settings, store)
            await mail.reply_waiting(entry.conversation_id)
            await mail.send_due()
            return entry.conversation_id
        finally:
            await store.close()

    return asyncio.run(run())


def test_notice_says_only_that_reply_waits(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    conversation_id = notify_once(tmp_path, smtp_server, "visitor@mail.example.net")
    [sent] = smtp_server.wait_for(1)
    assert sent.recipients == ["visitor@mail.example.net"]
    assert sent.sender == SERVICE_ADDRESS
    message = sent.message
    text = message.get_content()
    assert "https://chat.example.org/replies" in text
    assert message["Subject"] == "A reply is waiting for you"
    assert message["Auto-Submitted"] == "auto-replied"
    assert message["Reply-To"] is None
    assert message["In-Reply-To"] is None
    raw = sent.raw.decode("utf-8", "replace")
    for secret in (VISITOR_TEXT, REPLY_TEXT, REPLY_CODE_HASH, conversation_id):
        assert secret not in raw


def test_notice_without_address_sends_nothing(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    notify_once(tmp_path, smtp_server, None)
    assert smtp_server.messages == []
