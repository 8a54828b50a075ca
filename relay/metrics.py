"""Prometheus metrics at ``/metrics``, for the addresses the operator allows.

Labels carry only fixed words (a side, an error code), never an id, a token or
text, so the metrics say how busy the relay is and nothing about who uses it.
Counts of what is connected now are read from the hub and the queue when
Prometheus scrapes, so the hot path only increments counters.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from relay.ratelimit import client_address

if TYPE_CHECKING:
    from relay.conversations import ChatService
    from relay.hub import Hub

logger = logging.getLogger("relay.metrics")

REGISTRY = CollectorRegistry()
MESSAGES = Counter(
    "vso_messages_relayed",
    "Messages stored and delivered, by the side that wrote them.",
    ["sender"],
    registry=REGISTRY,
)
ERRORS = Counter(
    "vso_errors",
    "Frames the relay answered with an error, by error code.",
    ["code"],
    registry=REGISTRY,
)
QUEUE_WAIT = Histogram(
    "vso_queue_wait_seconds",
    "How long visitors waited in the queue before a volunteer accepted.",
    buckets=(5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600),
    registry=REGISTRY,
)


def observe_queue_wait(queued_at: str | None) -> None:
    """Record a wait that started at ``queued_at`` (ISO 8601 UTC) and ends now."""
    if queued_at is None:
        return
    started = datetime.fromisoformat(queued_at.replace("Z", "+00:00"))
    QUEUE_WAIT.observe(max(0.0, (datetime.now(UTC) - started).total_seconds()))


class LiveCollector(Collector):
    """Connections, waiting visitors and active conversations, read at scrape."""

    def __init__(self, hub: Hub, chat: ChatService) -> None:
        self._hub = hub
        self._chat = chat

    def collect(self) -> Iterator[Metric]:
        connections = GaugeMetricFamily(
            "vso_connections", "Open WebSocket connections, by side.", labels=["side"]
        )
        for side, count in self._hub.connection_counts().items():
            connections.add_metric([side], count)
        yield connections
        yield GaugeMetricFamily(
            "vso_waiting_visitors",
            "Conversations waiting in the queue for a volunteer.",
            value=len(self._chat.pairing.queue),
        )
        yield GaugeMetricFamily(
            "vso_active_conversations",
            "Conversations a volunteer has accepted and not ended.",
            value=self._chat.pairing.assigned_count(),
        )


def _allowed(request: Request) -> bool:
    from relay.services import get_services

    settings = get_services(request).settings
    if request.client is None:
        return False
    # A reverse proxy on an allowed address also forwards visitors' requests,
    # so a forwarded request is judged by the address the proxy received it from.
    forwarded = client_address(
        request.client.host,
        request.headers.get("x-forwarded-for"),
        settings.trusted_proxies,
    )
    try:
        address = ipaddress.ip_address(forwarded or "")
    except ValueError:
        return False
    allowed = settings.metrics_allow
    return any(address in network for network in allowed)


async def metrics(request: Request) -> Response:
    """Return the metrics, or 404 to an address not in VSO_METRICS_ALLOW."""
    if not _allowed(request):
        logger.info("metrics request from an address not allowed")
        return PlainTextResponse("Not Found", status_code=404)
    return Response(
        generate_latest(REGISTRY),
        media_type=CONTENT_TYPE_LATEST,
        headers={"cache-control": "no-store"},
    )
