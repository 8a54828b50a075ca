"""The composition root: ``create_app(settings)`` mounts every route."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Route

import dashboard.routes
import widget.info
import widget.routes
from relay import metrics, protocol
from relay.assets import StaticAssets
from relay.auth import Signer
from relay.conversations import ChatService, Timeouts
from relay.crypto import load_cipher
from relay.hub import LocalHub
from relay.i18n import LanguageMiddleware
from relay.inbox import InboxService
from relay.mail import MailService
from relay.nojs import NoScriptVisitors
from relay.pages import SecurityHeadersMiddleware
from relay.ratelimit import Guard
from relay.resources import load_content, log_stale_entries
from relay.retention import run_purges
from relay.services import Services, get_services
from relay.settings import Settings
from relay.store import Store, StoreError
from relay.supervision import Supervision
from relay.transport import ServerSendMiddleware

logger = logging.getLogger("relay.app")

CLOSE_DRAIN_SECONDS = 5.0
# Scripts both the visitor's pages and the dashboard import.
SHARED_ASSETS = StaticAssets(Path(__file__).parent / "static", "/static")


async def healthz(request: Request) -> Response:
    """Return 200 while the process serves requests: the liveness probe."""
    return JSONResponse({"status": "ok"}, headers={"cache-control": "no-store"})


async def readyz(request: Request) -> Response:
    """Return 200 while the database accepts writes, 503 otherwise.

    A load balancer sends new visitors elsewhere while this fails; the relay
    stops accepting connections altogether once it is shutting down.
    """
    try:
        await get_services(request).store.check_writable()
    except StoreError as error:
        logger.error("readiness check failed: %s", error)
        return JSONResponse(
            {"status": "error", "detail": "The database is not writable."},
            status_code=503,
            headers={"cache-control": "no-store"},
        )
    return JSONResponse({"status": "ok"}, headers={"cache-control": "no-store"})


async def storage_unavailable(request: Request, error: Exception) -> Response:
    """Return 503 when the database fails (disk full, locked) during a request."""
    logger.error("%s %s failed: %s", request.method, request.url.path, error)
    return PlainTextResponse(
        "The service cannot save data right now. Please try again in a minute.",
        status_code=503,
        headers={"cache-control": "no-store", "retry-after": "60"},
    )


async def favicon(request: Request) -> Response:
    """Return 204 to browsers' automatic icon request, so no 404 is logged."""
    return Response(status_code=204, headers={"cache-control": "public, max-age=86400"})


async def home(request: Request) -> Response:
    return RedirectResponse("/dashboard", status_code=302)


def _log_unexpected_end(task: asyncio.Task[None]) -> None:
    """Log a background task that ended other than by cancellation."""
    if task.cancelled():
        return
    error = task.exception()
    logger.error("background task %s ended: %r", task.get_name(), error)


def create_app(settings: Settings) -> Starlette:
    """Build the relay's ASGI app; the lifespan opens the store and the service."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        content = load_content(settings.content_dir)
        log_stale_entries(content, settings.content_max_age_days)
        cipher = load_cipher(
            settings.data_key, settings.data_key_file, settings.database
        )
        store = await Store.open(settings.database, cipher)
        hub = LocalHub()
        chat = ChatService(
            store,
            hub,
            Timeouts(
                visitor=settings.visitor_grace_seconds,
                volunteer=settings.volunteer_grace_seconds,
            ),
        )
        await chat.restore()
        mail = MailService(settings, store) if settings.mail_address else None
        app.state.services = Services(
            settings=settings,
            store=store,
            hub=hub,
            chat=chat,
            signer=Signer(settings),
            guard=Guard(block_seconds=settings.block_seconds),
            nojs=NoScriptVisitors(
                chat, settings.secret_key, settings.max_message_chars
            ),
            inbox=InboxService(
                store,
                chat,
                settings.secret_key,
                max_chars=settings.max_message_chars,
                notifier=mail,
            ),
            mail=mail,
            supervision=Supervision(store, hub, chat, settings.break_seconds),
            content=content,
        )
        if mail is not None:
            mail.start()
        purges = asyncio.create_task(
            run_purges(store, settings.retention_days, settings.purge_interval_seconds),
            name="retention",
        )
        purges.add_done_callback(_log_unexpected_end)
        collector = metrics.LiveCollector(hub, chat)
        metrics.REGISTRY.register(collector)
        logger.info("relay started with database %s", settings.database)
        try:
            yield
        finally:
            purges.cancel()
            await asyncio.gather(purges, return_exceptions=True)
            metrics.REGISTRY.unregister(collector)
            # Ask clients to reconnect (to the next process), stop timers, then
            # close the database once nothing writes to it any more.
            count = hub.connection_count()
            if count:
                logger.info("closing %d connections", count)
            hub.close_all(protocol.CLOSE_SERVICE_RESTART)
            await app.state.services.supervision.stop()
            await chat.stop()
            await app.state.services.inbox.stop()
            if mail is not None:
                await mail.stop()
            await store.close()
            logger.info("relay stopped")

    routes = [
        Route("/", home, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics.metrics, methods=["GET"]),
        Route("/favicon.ico", favicon, methods=["GET"]),
        SHARED_ASSETS.mount("static"),
        *widget.routes.routes,
        *widget.info.routes,
        *dashboard.routes.routes,
    ]
    return Starlette(
        routes=routes,
        middleware=[
            Middleware(ServerSendMiddleware),
            Middleware(SecurityHeadersMiddleware, hsts=settings.secure),
            Middleware(LanguageMiddleware),
        ],
        exception_handlers={StoreError: storage_unavailable},
        lifespan=lifespan,
    )
