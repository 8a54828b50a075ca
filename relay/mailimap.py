"""The service's mailbox over IMAP, with imaplib.

imaplib blocks, so ``MailService`` calls these methods on a thread of its own,
one at a time. Every method raises ``MailError``, ``OSError`` (``ssl.SSLError``
included) or ``imaplib.IMAP4.error`` when the server fails.
"""

from __future__ import annotations

import imaplib
import re
from typing import Any

from relay.mailsettings import tls_context
from relay.settings import Settings

IMAP_TIMEOUT_SECONDS = 30.0
_SIZE = re.compile(rb"RFC822\.SIZE (\d+)")


class MailError(Exception):
    """The mail server failed or returned something unexpected."""


class ImapMailbox:
    """The commands the relay sends to the mailbox named in its settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def connect(self) -> imaplib.IMAP4:
        settings = self.settings
        host, port = settings.mail_imap_host, settings.mail_imap_port
        client: imaplib.IMAP4
        if settings.mail_imap_tls == "tls":
            client = imaplib.IMAP4_SSL(
                host,
                port,
                ssl_context=tls_context(settings.mail_ca_file),
                timeout=IMAP_TIMEOUT_SECONDS,
            )
        else:
            client = imaplib.IMAP4(host, port, timeout=IMAP_TIMEOUT_SECONDS)
            if settings.mail_imap_tls == "starttls":
                client.starttls(tls_context(settings.mail_ca_file))
        try:
            client.login(settings.mail_imap_user, settings.mail_imap_password)
        except imaplib.IMAP4.error:
            client.shutdown()
            raise MailError(
                f"IMAP sign-in as {settings.mail_imap_user!r} failed; check"
                " VSO_MAIL_IMAP_USER and the password."
            ) from None
        return client

    def select(self, client: imaplib.IMAP4) -> int:
        mailbox = self.settings.mail_imap_mailbox
        status, _data = client.select(f'"{mailbox}"')
        if status != "OK":
            raise MailError(f"The mailbox {mailbox!r} cannot be selected.")
        _code, values = client.response("UIDVALIDITY")
        for value in values:
            if isinstance(value, bytes) and value.isdigit():
                return int(value)
        raise MailError(f"The mailbox {mailbox!r} reported no UIDVALIDITY.")

    def search(self, client: imaplib.IMAP4, *criteria: str) -> list[int]:
        status, data = client.uid("SEARCH", *criteria)
        if status != "OK":
            raise MailError(f"UID SEARCH {' '.join(criteria)} failed.")
        found = b" ".join(item for item in data if isinstance(item, bytes))
        return sorted(int(uid) for uid in found.split())

    def new_uids(self, client: imaplib.IMAP4, last: int) -> list[int]:
        # "N:*" also matches the highest UID when it is below N.
        return [
            uid for uid in self.search(client, "UID", f"{last + 1}:*") if uid > last
        ]

    def unseen_up_to(self, client: imaplib.IMAP4, last: int) -> list[int]:
        return [
            uid
            for uid in self.search(client, "UNSEEN", "UID", f"1:{last}")
            if uid <= last
        ]

    def fetch(self, client: imaplib.IMAP4, uid: int) -> tuple[bytes, int]:
        """Return the mail of ``uid`` and its size; only headers when too big."""
        status, data = client.uid("FETCH", str(uid), "(RFC822.SIZE)")
        match = _SIZE.search(b" ".join(_bytes_of(data))) if status == "OK" else None
        if match is None:
            raise MailError(f"UID FETCH {uid} returned no size.")
        size = int(match.group(1))
        part = (
            "BODY.PEEK[]"
            if size <= self.settings.mail_max_bytes
            else "BODY.PEEK[HEADER]"
        )
        status, data = client.uid("FETCH", str(uid), f"({part})")
        literals = [item[1] for item in data if isinstance(item, tuple)]
        if status != "OK" or not literals:
            raise MailError(f"UID FETCH {uid} returned no message.")
        return bytes(literals[0]), size

    def flag_seen(self, client: imaplib.IMAP4, uids: list[int]) -> None:
        uid_set = ",".join(str(uid) for uid in uids)
        status, _data = client.uid("STORE", uid_set, "+FLAGS.SILENT", "(\\Seen)")
        if status != "OK":
            raise MailError(f"Flagging mail {uid_set} seen failed.")

    @staticmethod
    def logout(client: imaplib.IMAP4) -> None:
        try:
            client.logout()
        except (OSError, imaplib.IMAP4.error):
            pass


def _bytes_of(data: list[Any]) -> list[bytes]:
    """Return the byte strings of an imaplib response, from tuples too."""
    found: list[bytes] = []
    for item in data:
        if isinstance(item, bytes):
            found.append(item)
        elif isinstance(item, tuple):
            found.extend(part for part in item if isinstance(part, bytes))
    return found
