"""Logging set-up for ``vso``: one format, and no client addresses anywhere."""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import sys
from datetime import UTC, datetime

# At DEBUG these loggers write SQL parameters, frame, mail or page text, or
# request headers, which include message bodies and session cookies. They stay
# at INFO at any relay level.
NOISY_LOGGERS = (
    "aiosqlite",
    "markdown_it",
    "aiosmtplib",
    "uvicorn.error",
    "uvicorn.protocols",
    "websockets",
)


# ``address:port`` with an IPv4 or a bracketed IPv6 address, checked by pattern
# because this runs for every argument of every record; uvicorn writes IPv6
# addresses without brackets, which only ``ipaddress`` tells from other text.
ADDRESS_PATTERN = re.compile(r"(?:\d{1,3}(?:\.\d{1,3}){3}|\[[0-9A-Fa-f:.]+\]):\d{1,5}")
IPV6_PORT_PATTERN = re.compile(r"([0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*):\d{1,5}")
# uvicorn's own lines for each WebSocket; the relay logs its sockets with ids.
CONNECTION_CHATTER = frozenset(
    {'%s - "WebSocket %s" [accepted]', "connection open", "connection closed"}
)


def _is_address(value: object) -> bool:
    """Return True for ``address:port``, the form uvicorn logs a client in.

    A bare address is left alone: uvicorn logs the listening host that way.
    """
    if not isinstance(value, str):
        return False
    if ADDRESS_PATTERN.fullmatch(value):
        return True
    match = IPV6_PORT_PATTERN.fullmatch(value)
    if match is None:
        return False
    try:
        ipaddress.IPv6Address(match.group(1))
    except ValueError:
        return False
    return True


class RedactAddressFilter(logging.Filter):
    """Replace client addresses in log arguments with ``client``.

    uvicorn logs each WebSocket handshake with the peer's address; the relay
    must never record a visitor's address, so the filter rewrites those records.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(map(_is_address, record.args)):
            record.args = tuple(
                "client" if _is_address(arg) else arg for arg in record.args
            )
        return True


class JsonFormatter(logging.Formatter):
    """Format each record as one JSON object: time, level, logger and message."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class ConnectionChatterFilter(logging.Filter):
    """Drop uvicorn's per-connection lines, which the relay's own lines replace."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name == "uvicorn.error" and record.msg in CONNECTION_CHATTER)


def configure_logging(level: str, log_format: str = "text") -> None:
    """Log to standard error at ``level``, with addresses redacted.

    ``log_format`` is ``text`` for readable lines or ``json`` for one JSON
    object per line.
    """
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
    handler.addFilter(ConnectionChatterFilter())
    handler.addFilter(RedactAddressFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    floor = max(logging.INFO, root.level)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(floor)
