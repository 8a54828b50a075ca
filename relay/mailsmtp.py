"""Sending over SMTP with aiosmtplib, and the server checks of ``vso mail-check``."""

from __future__ import annotations

import asyncio
import imaplib
from typing import Any

import aiosmtplib

from relay.mailimap import ImapMailbox, MailError
from relay.mailsettings import tls_context
from relay.settings import Settings

SMTP_TIMEOUT_SECONDS = 30.0


def smtp_options(settings: Settings) -> dict[str, Any]:
    """Return aiosmtplib's connection options for the configured SMTP server."""
    tls = settings.mail_smtp_tls
    return {
        "hostname": settings.mail_smtp_host,
        "port": settings.mail_smtp_port,
        "username": settings.mail_smtp_user or None,
        "password": settings.mail_smtp_password or None,
        "use_tls": tls == "tls",
        "start_tls": tls == "starttls",
        "tls_context": tls_context(settings.mail_ca_file) if tls != "none" else None,
        "timeout": SMTP_TIMEOUT_SECONDS,
    }


def smtp_reason(error: Exception) -> str:
    """Return an SMTP failure without addresses: the class and reply code."""
    code = getattr(error, "code", None)
    return f"{type(error).__name__}" + (f" {code}" if code is not None else "")


async def check_servers(settings: Settings) -> list[str]:
    """Sign in to the configured IMAP and SMTP servers and return one line each.

    Nothing is fetched, flagged or sent. Raises ``MailError`` naming the server
    that failed and why.
    """
    if not settings.mail_address:
        raise MailError("VSO_MAIL_ADDRESS is not set, so e-mail is off.")
    lines = []
    if settings.mail_imap_host:
        mailbox = ImapMailbox(settings)
        try:
            client = await asyncio.to_thread(mailbox.connect)
            try:
                uidvalidity = await asyncio.to_thread(mailbox.select, client)
                count = len(await asyncio.to_thread(mailbox.search, client, "ALL"))
            finally:
                await asyncio.to_thread(mailbox.logout, client)
        except (OSError, imaplib.IMAP4.error) as error:
            raise MailError(
                f"IMAP {settings.mail_imap_host}:{settings.mail_imap_port} failed:"
                f" {error}"
            ) from None
        lines.append(
            f"IMAP: signed in at {settings.mail_imap_host}:{settings.mail_imap_port};"
            f" {settings.mail_imap_mailbox} has {count} messages"
            f" (UIDVALIDITY {uidvalidity})."
        )
    else:
        lines.append("IMAP: VSO_MAIL_IMAP_HOST is not set; no mail is fetched.")
    if settings.mail_smtp_host:
        options = smtp_options(settings)
        username, password = options.pop("username"), options.pop("password")
        smtp = aiosmtplib.SMTP(**options)
        try:
            await smtp.connect()
            if username:
                await smtp.login(username, password)
            await smtp.quit()
        except (aiosmtplib.SMTPException, OSError) as error:
            raise MailError(
                f"SMTP {settings.mail_smtp_host}:{settings.mail_smtp_port} failed:"
                f" {error}"
            ) from None
        lines.append(
            f"SMTP: connected to {settings.mail_smtp_host}:{settings.mail_smtp_port}"
            f" with {settings.mail_smtp_tls}"
            + (", signed in." if settings.mail_smtp_user else ", without signing in.")
        )
    else:
        lines.append("SMTP: VSO_MAIL_SMTP_HOST is not set; nothing is sent.")
    return lines


async def send_mail(settings: Settings, recipient: str, content: bytes) -> None:
    """Send ``content`` to ``recipient`` from the service's address.

    Raises ``aiosmtplib.SMTPException``, ``OSError`` or ``TimeoutError``.
    """
    await aiosmtplib.send(
        content,
        sender=settings.mail_address,
        recipients=[recipient],
        **smtp_options(settings),
    )
