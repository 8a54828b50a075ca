"""Configuration from ``VSO_*`` environment variables, checked once at start."""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from relay.crypto import DataCipher
from relay.mailsettings import DEFAULT_MAX_BYTES, MailSettingsError, parse_mail_settings
from relay.protocol import FRAME_OVERHEAD_BYTES, JSON_BYTES_PER_CHAR
from relay.resources import CONTENT_DIR
from relay.settingvalues import SettingsError as SettingsError
from relay.settingvalues import parse_int as _parse_int
from relay.sites import normalise_origin

logger = logging.getLogger("relay.settings")

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK_NETWORKS: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("127.0.0.1/32"),
    ipaddress.ip_network("::1/128"),
)


def ws_origin(http_origin: str) -> str:
    """Return the WebSocket origin for an http or https origin."""
    scheme, _, rest = http_origin.partition("://")
    return ("wss://" if scheme == "https" else "ws://") + rest


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """The relay's whole configuration; see the README for each variable."""

    host: str = "127.0.0.1"
    port: int = 8000
    database: Path = Path("var/vso.sqlite3")
    secret_key: str = ""
    public_url: str = "http://127.0.0.1:8000"
    log_level: str = "info"
    demo: bool = True
    visitor_grace_seconds: float = 60.0
    volunteer_grace_seconds: float = 30.0
    default_capacity: int = 2
    max_message_chars: int = 4000
    max_frame_bytes: int = 64 * 1024
    session_max_age_seconds: int = 12 * 3600
    session_idle_seconds: int = 2 * 3600
    data_key: str = ""
    data_key_file: Path | None = None
    retention_days: int = 30
    purge_interval_seconds: float = 3600.0
    block_seconds: int = 3600
    trusted_proxies: frozenset[str] = frozenset()
    ws_ping_seconds: float = 20.0
    log_format: str = "text"
    metrics_allow: tuple[IPNetwork, ...] = LOOPBACK_NETWORKS
    invite_hours: int = 72
    # The e-mail channel (relay/mailsettings.py); off while mail_address is "".
    mail_address: str = ""
    mail_name: str = "Victim Support"
    mail_site: str = ""
    mail_max_bytes: int = DEFAULT_MAX_BYTES
    mail_poll_seconds: float = 60.0
    mail_ca_file: Path | None = None
    mail_imap_host: str = ""
    mail_imap_port: int = 993
    mail_imap_tls: str = "tls"
    mail_imap_user: str = ""
    mail_imap_password: str = dataclasses.field(default="", repr=False)
    mail_imap_password_file: Path | None = None
    mail_imap_mailbox: str = "INBOX"
    mail_smtp_host: str = ""
    mail_smtp_port: int = 587
    mail_smtp_tls: str = "starttls"
    mail_smtp_user: str = ""
    mail_smtp_password: str = dataclasses.field(default="", repr=False)
    mail_smtp_password_file: Path | None = None
    break_seconds: int = 600
    content_dir: Path = CONTENT_DIR
    content_max_age_days: int = 180
    time_zone: str = "Europe/Malta"

    @property
    def public_origin(self) -> str:
        """Return scheme, host and port of ``public_url``, as browsers send Origin."""
        parts = urlsplit(self.public_url)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def own_origins(self) -> frozenset[str]:
        """Return the origins of the relay's own pages.

        On a loopback address ``localhost`` and ``127.0.0.1`` name the same server,
        so both are accepted there; elsewhere only the public origin is.
        """
        parts = urlsplit(self.public_url)
        origins = {self.public_origin}
        if parts.hostname in ("127.0.0.1", "localhost"):
            port = f":{parts.port}" if parts.port else ""
            for name in ("127.0.0.1", "localhost"):
                origins.add(f"{parts.scheme}://{name}{port}")
        return frozenset(origins)

    @property
    def secure(self) -> bool:
        """Return True when the relay is served over HTTPS."""
        return self.public_url.startswith("https://")

    @property
    def public_ws_url(self) -> str:
        """Return ``public_url`` with the WebSocket scheme."""
        return ws_origin(self.public_url.rstrip("/"))


def _parse_seconds(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number of seconds.") from None
    if not 0 < value <= 86400:
        raise SettingsError(
            f"{name}={value} is out of range; use more than 0, at most 86400 seconds."
        )
    return value


def _parse_networks(raw: str) -> tuple[IPNetwork, ...]:
    """Return the networks of a comma-separated list of addresses and CIDR blocks."""
    networks = []
    for item in raw.split(","):
        if not item.strip():
            continue
        try:
            networks.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError:
            raise SettingsError(
                f"VSO_METRICS_ALLOW has {item.strip()!r}, which is not an address or"
                " a network; use e.g. 127.0.0.1,::1,10.0.0.0/8."
            ) from None
    return tuple(networks)


def _parse_bool(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={raw!r} is not a boolean; use true or false.")


def _parse_addresses(name: str, raw: str) -> frozenset[str]:
    addresses = set()
    for part in raw.replace(",", " ").split():
        try:
            addresses.add(str(ipaddress.ip_address(part)))
        except ValueError:
            raise SettingsError(
                f"{name} contains {part!r}, which is not an IP address; list the"
                " proxies' addresses separated by commas, e.g. 127.0.0.1,::1."
            ) from None
    return frozenset(addresses)


def _parse_time_zone(raw: str) -> str:
    name = raw.strip()
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise SettingsError(
            f"VSO_TIME_ZONE={raw!r} is not a known IANA time zone; write one such"
            " as Europe/Malta or UTC."
        ) from None
    return name


def _parse_public_url(raw: str) -> str:
    """Return the URL as the origin browsers send, e.g. ``https://chat.example.org``."""
    parts = urlsplit(raw.strip())
    if parts.path not in ("", "/"):
        raise SettingsError(
            f"VSO_PUBLIC_URL={raw!r} has a path; the relay must be served at the root"
            " of its host."
        )
    try:
        return normalise_origin(raw)
    except ValueError as error:
        raise SettingsError(
            f"VSO_PUBLIC_URL is invalid: {error} Use an http or https URL with a host,"
            " e.g. https://chat.example.org."
        ) from None


def _load_or_create_secret(database: Path) -> str:
    """Return the secret kept beside the database, creating it on first use."""
    path = database.parent / "secret_key"
    if path.exists():
        key = path.read_text(encoding="utf-8").strip()
        if len(key) < 32:
            raise SettingsError(
                f"{path} contains a secret key shorter than 32 characters;"
                " delete it to have a new one generated."
            )
        return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(key + "\n")
    logger.warning(
        "VSO_SECRET_KEY is not set; generated a secret key into %s."
        " Set VSO_SECRET_KEY when running more than one relay process.",
        path,
    )
    return key


# Settings that older versions read, and what replaces each of them.
REPLACED_SETTINGS = {
    "VSO_TIMEZONE": "set VSO_TIME_ZONE, the one time zone of pages and statistics.",
    "VSO_OPENING_HOURS": (
        "each site has its own opening hours, which admins set at"
        " /dashboard/sites/ID/hours, and statistics measure coverage against them."
    ),
}


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build ``Settings`` from ``VSO_*`` variables.

    Raises ``SettingsError`` with a sentence naming the bad variable. Without
    ``VSO_SECRET_KEY`` a key is generated into the database's folder, with a warning.
    """
    env = os.environ if environ is None else environ
    known = {f"VSO_{field.name.upper()}" for field in dataclasses.fields(Settings)}
    unknown = sorted(
        name for name in env if name.startswith("VSO_") and name not in known
    )
    for name in unknown:
        if name in REPLACED_SETTINGS:
            raise SettingsError(f"{name} is no longer read; {REPLACED_SETTINGS[name]}")
    if unknown:
        raise SettingsError(
            f"Unknown setting {unknown[0]}; the settings are"
            f" {', '.join(sorted(known))}."
        )
    values: dict[str, object] = {}
    if "VSO_HOST" in env:
        if not env["VSO_HOST"].strip():
            raise SettingsError("VSO_HOST is empty; give an address such as 127.0.0.1.")
        values["host"] = env["VSO_HOST"].strip()
    port = Settings.port
    if "VSO_PORT" in env:
        port = _parse_int("VSO_PORT", env["VSO_PORT"], 1, 65535)
        values["port"] = port
    if "VSO_DATABASE" in env:
        if not env["VSO_DATABASE"].strip():
            raise SettingsError("VSO_DATABASE is empty; give a file path.")
        values["database"] = Path(env["VSO_DATABASE"])
    if "VSO_PUBLIC_URL" in env:
        values["public_url"] = _parse_public_url(env["VSO_PUBLIC_URL"])
    else:
        values["public_url"] = f"http://127.0.0.1:{port}"
    if "VSO_LOG_LEVEL" in env:
        level = env["VSO_LOG_LEVEL"].strip().lower()
        if level not in LOG_LEVELS:
            raise SettingsError(
                f"VSO_LOG_LEVEL={env['VSO_LOG_LEVEL']!r} is not one of"
                f" {', '.join(LOG_LEVELS)}."
            )
        values["log_level"] = level
    if "VSO_LOG_FORMAT" in env:
        log_format = env["VSO_LOG_FORMAT"].strip().lower()
        if log_format not in LOG_FORMATS:
            raise SettingsError(
                f"VSO_LOG_FORMAT={env['VSO_LOG_FORMAT']!r} is not one of"
                f" {', '.join(LOG_FORMATS)}."
            )
        values["log_format"] = log_format
    if "VSO_METRICS_ALLOW" in env:
        values["metrics_allow"] = _parse_networks(env["VSO_METRICS_ALLOW"])
    if "VSO_TIME_ZONE" in env:
        values["time_zone"] = _parse_time_zone(env["VSO_TIME_ZONE"])
    if "VSO_WS_PING_SECONDS" in env:
        values["ws_ping_seconds"] = _parse_seconds(
            "VSO_WS_PING_SECONDS", env["VSO_WS_PING_SECONDS"]
        )
    if "VSO_DEMO" in env:
        values["demo"] = _parse_bool("VSO_DEMO", env["VSO_DEMO"])
    for name in ("visitor_grace_seconds", "volunteer_grace_seconds"):
        variable = f"VSO_{name.upper()}"
        if variable in env:
            values[name] = _parse_seconds(variable, env[variable])
    if "VSO_DEFAULT_CAPACITY" in env:
        values["default_capacity"] = _parse_int(
            "VSO_DEFAULT_CAPACITY", env["VSO_DEFAULT_CAPACITY"], 1, 20
        )
    if "VSO_BREAK_SECONDS" in env:
        values["break_seconds"] = _parse_int(
            "VSO_BREAK_SECONDS", env["VSO_BREAK_SECONDS"], 1, 7200
        )
    if "VSO_MAX_MESSAGE_CHARS" in env:
        values["max_message_chars"] = _parse_int(
            "VSO_MAX_MESSAGE_CHARS", env["VSO_MAX_MESSAGE_CHARS"], 1, 4000
        )
    if "VSO_MAX_FRAME_BYTES" in env:
        values["max_frame_bytes"] = _parse_int(
            "VSO_MAX_FRAME_BYTES", env["VSO_MAX_FRAME_BYTES"], 1024, 64 * 1024
        )
    if "VSO_SESSION_MAX_AGE_SECONDS" in env:
        values["session_max_age_seconds"] = _parse_int(
            "VSO_SESSION_MAX_AGE_SECONDS",
            env["VSO_SESSION_MAX_AGE_SECONDS"],
            60,
            7 * 86400,
        )
    max_chars = int(str(values.get("max_message_chars", Settings.max_message_chars)))
    max_frame = int(str(values.get("max_frame_bytes", Settings.max_frame_bytes)))
    needed = max_chars * JSON_BYTES_PER_CHAR + FRAME_OVERHEAD_BYTES
    if max_frame < needed:
        raise SettingsError(
            f"VSO_MAX_FRAME_BYTES={max_frame} cannot carry a message of"
            f" VSO_MAX_MESSAGE_CHARS={max_chars} characters written as JSON escapes;"
            f" use at least {needed} bytes or fewer characters."
        )
    if "VSO_TRUSTED_PROXIES" in env:
        values["trusted_proxies"] = _parse_addresses(
            "VSO_TRUSTED_PROXIES", env["VSO_TRUSTED_PROXIES"]
        )
    if "VSO_SESSION_IDLE_SECONDS" in env:
        values["session_idle_seconds"] = _parse_int(
            "VSO_SESSION_IDLE_SECONDS", env["VSO_SESSION_IDLE_SECONDS"], 60, 7 * 86400
        )
    if "VSO_DATA_KEY" in env:
        try:
            DataCipher.from_text(env["VSO_DATA_KEY"])
        except ValueError as error:
            raise SettingsError(f"VSO_DATA_KEY is invalid: {error}") from None
        values["data_key"] = env["VSO_DATA_KEY"].strip()
    if "VSO_DATA_KEY_FILE" in env:
        if not env["VSO_DATA_KEY_FILE"].strip():
            raise SettingsError("VSO_DATA_KEY_FILE is empty; give a file path.")
        values["data_key_file"] = Path(env["VSO_DATA_KEY_FILE"].strip())
    if "VSO_RETENTION_DAYS" in env:
        values["retention_days"] = _parse_int(
            "VSO_RETENTION_DAYS", env["VSO_RETENTION_DAYS"], 0, 3650
        )
    if "VSO_PURGE_INTERVAL_SECONDS" in env:
        values["purge_interval_seconds"] = _parse_seconds(
            "VSO_PURGE_INTERVAL_SECONDS", env["VSO_PURGE_INTERVAL_SECONDS"]
        )
    if "VSO_BLOCK_SECONDS" in env:
        values["block_seconds"] = _parse_int(
            "VSO_BLOCK_SECONDS", env["VSO_BLOCK_SECONDS"], 60, 7 * 86400
        )
    if "VSO_INVITE_HOURS" in env:
        values["invite_hours"] = _parse_int(
            "VSO_INVITE_HOURS", env["VSO_INVITE_HOURS"], 1, 30 * 24
        )
    try:
        values.update(parse_mail_settings(env))
    except MailSettingsError as error:
        raise SettingsError(str(error)) from None
    if "VSO_CONTENT_DIR" in env:
        if not env["VSO_CONTENT_DIR"].strip():
            raise SettingsError("VSO_CONTENT_DIR is empty; give a folder path.")
        values["content_dir"] = Path(env["VSO_CONTENT_DIR"].strip())
    if "VSO_CONTENT_MAX_AGE_DAYS" in env:
        values["content_max_age_days"] = _parse_int(
            "VSO_CONTENT_MAX_AGE_DAYS", env["VSO_CONTENT_MAX_AGE_DAYS"], 1, 3650
        )
    database = values.get("database", Settings.database)
    database_path = Path(str(database))
    if "VSO_SECRET_KEY" in env:
        key = env["VSO_SECRET_KEY"].strip()
        if len(key) < 32:
            raise SettingsError(
                "VSO_SECRET_KEY is shorter than 32 characters; generate one with"
                " `python -c 'import secrets; print(secrets.token_urlsafe(48))'`."
            )
        values["secret_key"] = key
    else:
        values["secret_key"] = _load_or_create_secret(database_path)
    return Settings(**values)  # type: ignore[arg-type]
