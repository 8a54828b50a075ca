"""A relay with the e-mail channel on, wired to the test Dovecot and aiosmtpd,
and helpers that read and write its database from the test process."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import TypeVar

from relay.crypto import load_cipher
from relay.mailstore import MailStore, MailThread
from relay.store import Message, Store
from tests.mailservers import SERVICE_ADDRESS, Dovecot, SmtpServer
from tests.relayserver import RelayServer

CORPUS = Path(__file__).parent / "mail_corpus"
T = TypeVar("T")


def mail_relay(
    directory: Path, dovecot: Dovecot, smtp: SmtpServer, **settings: str
) -> RelayServer:
    """Return an unstarted relay that fetches from ``dovecot`` and sends to ``smtp``."""
    return RelayServer(
        directory,
        mail_address=SERVICE_ADDRESS,
        mail_name="Victim Support",
        mail_poll_seconds="1",
        mail_imap_host="127.0.0.1",
        mail_imap_port=str(dovecot.port),
        mail_imap_tls="none",
        mail_imap_user=dovecot.user,
        mail_imap_password=dovecot.password,
        mail_smtp_host="127.0.0.1",
        mail_smtp_port=str(smtp.port),
        mail_smtp_tls="none",
        **settings,
    )


def wait_until(
    condition: Callable[[], T], timeout: float = 20.0, what: str = "condition"
) -> T:
    """Return ``condition()`` once it is truthy; raise ``TimeoutError`` after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def query(
    server: RelayServer, sql: str, params: tuple[object, ...] = ()
) -> list[sqlite3.Row]:
    """Run a read-only query on the relay's database file."""
    db = sqlite3.connect(f"file:{server.database}?mode=ro", uri=True, timeout=5)
    db.row_factory = sqlite3.Row
    try:
        return list(db.execute(sql, params))
    except sqlite3.OperationalError as error:
        if "no such table" in str(error):
            return []
        raise
    finally:
        db.close()


def imports(server: RelayServer) -> list[sqlite3.Row]:
    return query(server, "SELECT * FROM mail_imports ORDER BY uid")


def email_conversations(server: RelayServer) -> list[str]:
    rows = query(
        server,
        "SELECT id FROM conversations WHERE channel = 'email' ORDER BY created_at, id",
    )
    return [row["id"] for row in rows]


@dataclass
class Snapshot:
    """An e-mail conversation as the relay stored it, decrypted."""

    thread: MailThread
    messages: list[Message]
    state: str


def run_async(work: Callable[[], Coroutine[object, object, T]]) -> T:
    """Run a coroutine on a thread of its own, so that it works beside the
    event loop that Playwright's sync API keeps running in the test's thread."""
    with ThreadPoolExecutor(1) as executor:
        return executor.submit(lambda: asyncio.run(work())).result()


async def _open(server: RelayServer) -> Store:
    cipher = load_cipher("", None, server.database)
    return await Store.open(server.database, cipher)


def snapshot(server: RelayServer, conversation_id: str) -> Snapshot:
    """Return the conversation's thread, messages and inbox state."""

    async def read() -> Snapshot:
        store = await _open(server)
        try:
            thread = await MailStore(store).get_thread(conversation_id)
            assert thread is not None, f"{conversation_id} has no mail thread"
            messages = await store.messages_after(conversation_id, 0)
            entry = await store.get_inbox_entry(conversation_id)
            assert entry is not None
            return Snapshot(thread, messages, entry.state)
        finally:
            await store.close()

    return run_async(read)


def volunteer_reply(
    server: RelayServer, conversation_id: str, body: str, client_id: str
) -> Message:
    """Store a reply by the demo volunteer, as the dashboard's inbox does."""

    async def write() -> Message:
        store = await _open(server)
        try:
            volunteer = await store.get_volunteer_by_username("demo")
            assert volunteer is not None
            message, _ = await store.record_inbox_reply(
                conversation_id, volunteer.id, client_id, body
            )
            return message
        finally:
            await store.close()

    return run_async(write)


def reply_to(
    original: EmailMessage,
    *,
    sender: str,
    body: str,
    message_id: str,
    to: str = SERVICE_ADDRESS,
    threaded: bool = True,
) -> bytes:
    """Return a reply to ``original`` as a mail client writes one.

    With ``threaded`` it names the original in In-Reply-To and References;
    without, only the address it is sent to can thread it.
    """
    reply = EmailMessage()
    reply["From"] = sender
    reply["To"] = to
    reply["Subject"] = "Re: " + str(original["Subject"]).removeprefix("Re: ")
    reply["Message-ID"] = message_id
    reply["Date"] = "Mon, 14 Dec 2026 10:00:00 +0100"
    if threaded:
        reply["In-Reply-To"] = str(original["Message-ID"])
        references = str(original.get("References", ""))
        reply["References"] = f"{references} {original['Message-ID']}".strip()
    quoted = "\n".join("> " + line for line in original.get_content().splitlines())
    reply.set_content(
        f"{body}\n\nOn Mon, 14 Dec 2026, Victim Support wrote:\n{quoted}\n"
    )
    return bytes(reply)
