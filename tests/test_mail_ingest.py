"""Importing single e-mails into a real SQLite store, without mail servers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from email.message import EmailMessage
from pathlib import Path
from typing import TypeVar

import pytest

from relay.crypto import DataCipher, new_key_text
from relay.mail import MailService
from relay.mailstore import MailStore, purge_mail_records, reseal_mail
from relay.mailthread import reply_token
from relay.settings import Settings, load_settings
from relay.store import Store, StoreError

T = TypeVar("T")
CORPUS = Path(__file__).parent / "mail_corpus"
SECRET = "s" * 40


def settings_for(tmp_path: Path, **extra: str) -> Settings:
    return load_settings(
        {
            "VSO_DATABASE": str(tmp_path / "vso.sqlite3"),
            "VSO_SECRET_KEY": SECRET,
            "VSO_MAIL_ADDRESS": "help@vso.example.org",
            **extra,
        }
    )


def with_mail(
    tmp_path: Path,
    work: Callable[[MailService, Store], Awaitable[T]],
    add_site: bool = True,
    **extra: str,
) -> T:
    settings = settings_for(tmp_path, **extra)

    async def run() -> T:
        store = await Store.open(
            settings.database, DataCipher.from_text(new_key_text())
        )
        try:
            if add_site:
                await store.add_site("demo", "Demo", [], "https://example.org/")
            return await work(MailService(settings, store), store)
        finally:
            await store.close()

    return asyncio.run(run())


def test_ingest_new_uidvalidity_skips_known_mail(tmp_path: Path) -> None:
    raw = (CORPUS / "plain.eml").read_bytes()

    async def work(mail: MailService, store: Store) -> list[str]:
        first = await mail.ingest("INBOX", 1, 1, raw)
        again = await mail.ingest("INBOX", 1, 1, raw)
        recreated = await mail.ingest("INBOX", 2, 1, raw)
        assert await MailStore(store).last_uid("INBOX", 2) == 1
        return [first, again, recreated]

    assert with_mail(tmp_path, work) == ["imported", "duplicate", "duplicate"]


def test_ingest_blocked_sender_stores_nothing(tmp_path: Path) -> None:
    async def work(mail: MailService, store: Store) -> tuple[str, int]:
        await mail.ingest("INBOX", 1, 1, (CORPUS / "plain.eml").read_bytes())
        [entry] = await store.list_inbox()
        volunteer = await store.add_volunteer("sam", "Sam", "x", 2)
        await store.block_inbox_reply_code(entry.conversation_id, volunteer.id)
        token = reply_token(SECRET, entry.conversation_id)
        reply = EmailMessage()
        reply["From"] = "maria.borg@mail.example.net"
        reply["To"] = f"help+{token}@vso.example.org"
        reply["Message-ID"] = "<blocked-reply@mail.example.net>"
        reply.set_content("Are you there?")
        outcome = await mail.ingest("INBOX", 1, 2, bytes(reply))
        messages = await store.messages_after(entry.conversation_id, 0)
        return outcome, len(messages)

    assert with_mail(tmp_path, work) == ("blocked", 1)


def test_ingest_without_site_fails_and_retries(tmp_path: Path) -> None:
    async def work(mail: MailService, store: Store) -> int:
        with pytest.raises(StoreError, match="No site exists"):
            await mail.ingest("INBOX", 1, 1, (CORPUS / "plain.eml").read_bytes())
        # Nothing was recorded, so the next poll imports it.
        return await MailStore(store).last_uid("INBOX", 1)

    assert with_mail(tmp_path, work, add_site=False) == 0


def test_ingest_unknown_site_setting(tmp_path: Path) -> None:
    async def work(mail: MailService, store: Store) -> None:
        with pytest.raises(StoreError, match="VSO_MAIL_SITE='other' names no site"):
            await mail.ingest("INBOX", 1, 1, (CORPUS / "plain.eml").read_bytes())

    with_mail(tmp_path, work, VSO_MAIL_SITE="other")


def test_ingest_own_address_ignored(tmp_path: Path) -> None:
    own = EmailMessage()
    own["From"] = "help+abc@vso.example.org"
    own["To"] = "help@vso.example.org"
    own.set_content("A loop.")

    async def work(mail: MailService, store: Store) -> tuple[str, int]:
        outcome = await mail.ingest("INBOX", 1, 1, bytes(own))
        return outcome, len(await store.list_inbox())

    assert with_mail(tmp_path, work) == ("ignored from the service itself", 0)


def test_purge_keeps_newest_import_per_mailbox(tmp_path: Path) -> None:
    async def work(mail: MailService, store: Store) -> tuple[int, int, int, str]:
        for uid in (1, 2, 3):
            message = EmailMessage()
            message["From"] = f"writer{uid}@mail.example.net"
            message["Message-ID"] = f"<purge-{uid}@mail.example.net>"
            message.set_content("Hello")
            await mail.ingest("INBOX", 7, uid, bytes(message))
        imports, sent = await purge_mail_records(store, "9999-01-01T00:00:00.000Z")
        last = await MailStore(store).last_uid("INBOX", 7)
        again = await mail.ingest("INBOX", 7, 3, b"From: x@mail.example.net\r\n\r\n")
        return imports, sent, last, again

    assert with_mail(tmp_path, work) == (2, 0, 3, "duplicate")


def test_reseal_mail_after_key_rotation(tmp_path: Path) -> None:
    old_key, new_key = new_key_text(), new_key_text()
    settings = settings_for(tmp_path)

    async def run() -> tuple[int, str, int]:
        store = await Store.open(settings.database, DataCipher.from_text(old_key))
        try:
            await store.add_site("demo", "Demo", [], "https://example.org/")
            mail = MailService(settings, store)
            await mail.ingest("INBOX", 1, 1, (CORPUS / "attachment.eml").read_bytes())
        finally:
            await store.close()
        both = DataCipher.from_text(f"{new_key} {old_key}")
        store = await Store.open(settings.database, both)
        try:
            count = await reseal_mail(store)
        finally:
            await store.close()
        store = await Store.open(settings.database, DataCipher.from_text(new_key))
        try:
            [entry] = await store.list_inbox()
            thread = await MailStore(store).get_thread(entry.conversation_id)
            assert thread is not None
            due = await MailStore(store).due_outgoing("9999-01-01T00:00:00.000Z")
            return count, thread.sender, len(due)
        finally:
            await store.close()

    # Four thread values and the notice's recipient and content.
    assert asyncio.run(run()) == (6, "maria.borg@mail.example.net", 1)
