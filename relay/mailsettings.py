"""The ``VSO_MAIL_*`` settings: the service's address, its IMAP mailbox and SMTP.

``load_settings`` calls ``parse_mail_settings`` and stores the result in the
``mail_*`` fields of ``Settings``. The e-mail channel is on when
``VSO_MAIL_ADDRESS`` is set; fetching needs ``VSO_MAIL_IMAP_HOST`` and sending
needs ``VSO_MAIL_SMTP_HOST``.
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Mapping
from pathlib import Path

from relay.mailparse import normalise_address
from relay.settingvalues import SettingsError, parse_int

TLS_MODES = ("tls", "starttls", "none")
IMAP_PORTS = {"tls": 993, "starttls": 143, "none": 143}
SMTP_PORTS = {"tls": 465, "starttls": 587, "none": 25}
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
MIN_MAX_BYTES = 10 * 1024
MAX_MAX_BYTES = 50 * 1024 * 1024


class MailSettingsError(SettingsError):
    """A ``VSO_MAIL_*`` variable contains a value the relay cannot run with."""


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _password(env: Mapping[str, str], prefix: str) -> tuple[str, Path | None]:
    """Return the password of ``VSO_MAIL_{prefix}_PASSWORD`` or of its file."""
    variable = f"VSO_MAIL_{prefix}_PASSWORD"
    file_variable = f"{variable}_FILE"
    if variable in env:
        return env[variable], None
    if file_variable not in env:
        return "", None
    path = Path(env[file_variable].strip())
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise MailSettingsError(
            f"{file_variable}: cannot read {path}: {error.strerror}."
        ) from None
    password = text.rstrip("\r\n")
    if not password:
        raise MailSettingsError(f"{file_variable}: the file {path} is empty.")
    return password, path


def _server(env: Mapping[str, str], prefix: str, default_tls: str) -> dict[str, object]:
    """Return host, port, TLS mode, user and password of the IMAP or SMTP server."""
    key = prefix.lower()
    values: dict[str, object] = {}
    host = env.get(f"VSO_MAIL_{prefix}_HOST", "").strip()
    tls = env.get(f"VSO_MAIL_{prefix}_TLS", default_tls).strip().lower()
    if tls not in TLS_MODES:
        raise MailSettingsError(
            f"VSO_MAIL_{prefix}_TLS={tls!r} is not one of {', '.join(TLS_MODES)}."
        )
    if host and tls == "none" and not _is_loopback(host):
        raise MailSettingsError(
            f"VSO_MAIL_{prefix}_TLS=none sends the password and mail unencrypted;"
            f" it is allowed only for a loopback host, not {host!r}. Use tls or"
            " starttls."
        )
    values[f"mail_{key}_host"] = host
    values[f"mail_{key}_tls"] = tls
    ports = IMAP_PORTS if prefix == "IMAP" else SMTP_PORTS
    port_variable = f"VSO_MAIL_{prefix}_PORT"
    values[f"mail_{key}_port"] = (
        parse_int(port_variable, env[port_variable], 1, 65535)
        if port_variable in env
        else ports[tls]
    )
    values[f"mail_{key}_user"] = env.get(f"VSO_MAIL_{prefix}_USER", "").strip()
    password, password_file = _password(env, prefix)
    values[f"mail_{key}_password"] = password
    values[f"mail_{key}_password_file"] = password_file
    if prefix == "IMAP" and host and not (values["mail_imap_user"] and password):
        raise MailSettingsError(
            "VSO_MAIL_IMAP_HOST is set, so VSO_MAIL_IMAP_USER and"
            " VSO_MAIL_IMAP_PASSWORD (or VSO_MAIL_IMAP_PASSWORD_FILE) are needed."
        )
    return values


def parse_mail_settings(env: Mapping[str, str]) -> dict[str, object]:
    """Return the ``mail_*`` fields of ``Settings`` from ``VSO_MAIL_*`` variables.

    Raises ``SettingsError`` with a sentence naming the bad variable.
    """
    values: dict[str, object] = {}
    raw_address = env.get("VSO_MAIL_ADDRESS", "").strip()
    if raw_address:
        address = normalise_address(raw_address)
        if address is None or "+" in address:
            raise MailSettingsError(
                f"VSO_MAIL_ADDRESS={raw_address!r} is not a plain e-mail address;"
                " give the service's own address without a +tag, e.g."
                " help@example.org."
            )
        values["mail_address"] = address
    if "VSO_MAIL_NAME" in env:
        name = " ".join(env["VSO_MAIL_NAME"].split())
        if not name or len(name) > 100:
            raise MailSettingsError(
                "VSO_MAIL_NAME must be 1 to 100 characters, e.g. Victim Support."
            )
        values["mail_name"] = name
    if "VSO_MAIL_SITE" in env:
        values["mail_site"] = env["VSO_MAIL_SITE"].strip()
    if "VSO_MAIL_MAX_BYTES" in env:
        values["mail_max_bytes"] = parse_int(
            "VSO_MAIL_MAX_BYTES",
            env["VSO_MAIL_MAX_BYTES"],
            MIN_MAX_BYTES,
            MAX_MAX_BYTES,
        )
    if "VSO_MAIL_POLL_SECONDS" in env:
        values["mail_poll_seconds"] = float(
            parse_int("VSO_MAIL_POLL_SECONDS", env["VSO_MAIL_POLL_SECONDS"], 1, 86400)
        )
    if "VSO_MAIL_IMAP_MAILBOX" in env:
        mailbox = env["VSO_MAIL_IMAP_MAILBOX"].strip()
        if not mailbox or any(ord(char) < 32 or char == '"' for char in mailbox):
            raise MailSettingsError(
                f"VSO_MAIL_IMAP_MAILBOX={mailbox!r} is not a mailbox name; use e.g."
                " INBOX."
            )
        values["mail_imap_mailbox"] = mailbox
    if "VSO_MAIL_CA_FILE" in env:
        ca_file = Path(env["VSO_MAIL_CA_FILE"].strip())
        if not ca_file.is_file():
            raise MailSettingsError(
                f"VSO_MAIL_CA_FILE={str(ca_file)!r} is not a readable file of"
                " PEM certificates."
            )
        values["mail_ca_file"] = ca_file
    values.update(_server(env, "IMAP", "tls"))
    values.update(_server(env, "SMTP", "starttls"))
    if not raw_address and (values["mail_imap_host"] or values["mail_smtp_host"]):
        raise MailSettingsError(
            "VSO_MAIL_IMAP_HOST or VSO_MAIL_SMTP_HOST is set without"
            " VSO_MAIL_ADDRESS; give the service's own address."
        )
    return values


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """Return a client TLS context that verifies the server's certificate.

    It trusts the certificates in ``ca_file`` when one is given, else the
    system's. Raises ``ssl.SSLError`` or ``OSError`` for an unusable file.
    """
    return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
