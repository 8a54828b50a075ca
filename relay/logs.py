"""Logging set-up for ``vso``: one format, and no client addresses anywhere."""

from __future__ import annotations

import ipaddress
import logging
import sys


def _is_address(value: object) -> bool:
    """Return True for ``host:port`` or a bare IP address, as uvicorn logs them."""
    if not isinstance(value, str):
        return False
    host = value.rsplit(":", 1)[0] if value.count(":") == 1 else value
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
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


def configure_logging(level: str) -> None:
    """Log to standard error at ``level``, with addresses redacted."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    handler.addFilter(RedactAddressFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
