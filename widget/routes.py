"""Visitor-side routes: the embed loader, the chat page, its WebSocket, the demo."""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from relay import i18n, protocol
from relay.assets import StaticAssets, asset_response
from relay.auth import same_origin_request
from relay.conversations import EMERGENCY_NUMBER
from relay.demo import DEMO_SITE_KEY
from relay.forms import read_form
from relay.i18n import gettext as _
from relay.pages import (
    content_security_policy,
    make_templates,
    serving_origin,
)
from relay.protocol import ProtocolError
from relay.ratelimit import client_address
from relay.services import Services, get_services
from relay.sites import DEFAULT_EXIT_URL, inline_snippet
from relay.store import Site
from relay.transport import open_peer, receive_frames
from widget import brand, feedback, messages, nojs

logger = logging.getLogger("widget")

HERE = Path(__file__).parent
SITE_KEY_MAX_CHARS = 64

assets = StaticAssets(HERE / "static", "/widget/static")
templates = make_templates(HERE / "templates", assets)
# Every visitor page may name the emergency number, whatever its route passes.
templates.env.globals["emergency_number"] = EMERGENCY_NUMBER

NO_STORE = {"cache-control": "no-store"}


async def _site_from_query(request: Request | WebSocket) -> Site | None:
    key = request.query_params.get("site", "")
    site = None
    if key and len(key) <= SITE_KEY_MAX_CHARS:
        site = await get_services(request).store.get_site_by_key(key)
    nojs.use_visitor_language(request, site)
    return site


def _page_headers(origin: str, frame_ancestors: list[str]) -> dict[str, str]:
    return nojs.page_headers(origin, frame_ancestors)


def _safety_context(site: Site | None) -> dict[str, str]:
    """Return the Quick exit address and the safety page's URL for a site."""
    if site is None:
        query = urlencode({i18n.LANGUAGE_PARAMETER: i18n.current_language()})
        return {"exit_url": DEFAULT_EXIT_URL, "safety_url": f"/safety?{query}"}
    return {
        "exit_url": site.exit_url,
        "safety_url": f"/safety?{nojs.page_query(site)}",
    }


def _not_found(request: Request, message: str) -> Response:
    return templates.TemplateResponse(
        request,
        "not_found.html",
        {
            "message": message,
            "emergency_number": EMERGENCY_NUMBER,
            **_safety_context(None),
        },
        status_code=404,
        headers=NO_STORE,
    )


async def safety_page(request: Request) -> Response:
    """Serve the page on Quick exit, browsing history and shared devices."""
    services = get_services(request)
    site = await _site_from_query(request)
    return templates.TemplateResponse(
        request,
        "safety.html",
        {
            "emergency_number": EMERGENCY_NUMBER,
            "chat_url": f"/chat?{nojs.page_query(site)}" if site else None,
            **_safety_context(site),
        },
        headers=_page_headers(
            serving_origin(request, services.settings),
            ["'self'", *site.origins] if site else [],
        ),
    )


async def chat_page(request: Request) -> Response:
    """Serve the chat page for one partner site, inside its iframe or a tab.

    The page works with scripts off; with the conversation cookie it shows the
    running conversation (see ``widget/nojs.py``).
    """
    site = await _site_from_query(request)
    if site is None:
        return _not_found(request, _(nojs.INVALID_LINK_TEXT))
    return await nojs.chat_page(request, site)


async def delete_form(request: Request) -> Response:
    """Delete a conversation from a plain form post, for pages without scripts.

    The form sends the conversation ``token``, which proves the conversation is
    the visitor's, and ``confirm=yes``; a cross-site post is rejected.
    """
    services = get_services(request)
    site = await _site_from_query(request)
    if site is None:
        return _not_found(request, _(nojs.INVALID_LINK_TEXT))
    if not same_origin_request(request.headers, services.settings.own_origins):
        logger.warning("deletion rejected: cross-site form post")
        return _deletion_page(request, services, site, "cross_site", 403)
    form = await read_form(request)
    token = form.get("token", "")
    if form.get("confirm") != "yes" or not protocol.TOKEN_PATTERN.fullmatch(token):
        return _deletion_page(request, services, site, "invalid", 400)
    try:
        await services.chat.visitor_delete(site, token)
    except ProtocolError:
        return _deletion_page(request, services, site, "not_found", 404)
    response = _deletion_page(request, services, site, "deleted", 200)
    response.delete_cookie(nojs.chat_cookie_name(services), path="/")
    return response


def _deletion_page(
    request: Request, services: Services, site: Site, outcome: str, status_code: int
) -> Response:
    return templates.TemplateResponse(
        request,
        "deleted.html",
        {
            "outcome": outcome,
            "chat_url": f"/chat?{nojs.page_query(site)}",
            "emergency_number": EMERGENCY_NUMBER,
            **_safety_context(site),
        },
        status_code=status_code,
        headers=_page_headers(
            serving_origin(request, services.settings), ["'self'", *site.origins]
        ),
    )


async def loader_script(request: Request) -> Response:
    """Serve the embed loader; partner pages on any origin load it."""
    return asset_response(
        request,
        assets["loader.js"],
        {
            "cache-control": "public, max-age=3600",
            "cross-origin-resource-policy": "cross-origin",
        },
    )


async def demo_page(request: Request) -> Response:
    """Serve a sample partner page with the embed snippet on it."""
    services = get_services(request)
    site = await services.store.get_site_by_key(DEMO_SITE_KEY)
    if not services.settings.demo or site is None:
        return _not_found(request, _("The demo is switched off on this server."))
    public_url = serving_origin(request, services.settings)
    return templates.TemplateResponse(
        request,
        "demo.html",
        {
            "chat_url": f"{public_url}/chat?site={site.key}",
            "loader_url": f"{public_url}/widget/loader.js",
            "site_key": site.key,
            "inline_snippet": inline_snippet(public_url, site.key),
        },
        headers={
            **NO_STORE,
            "content-security-policy": content_security_policy(frame_src=["'self'"]),
        },
    )


def _origin_allowed(services: Services, origin: str | None, site: Site | None) -> bool:
    if origin is None:
        return False
    if origin in services.settings.own_origins:
        return True
    return site is not None and origin in site.origins


async def chat_socket(websocket: WebSocket) -> None:
    """Own one visitor WebSocket from handshake to close.

    Whatever way the connection ends, the ``finally`` block unregisters the
    socket, so that the conversation's grace period starts and nothing leaks.
    """
    services = get_services(websocket)
    site = await _site_from_query(websocket)
    if not _origin_allowed(services, websocket.headers.get("origin"), site):
        logger.info("visitor socket rejected: origin not allowed")
        await websocket.close(protocol.CLOSE_POLICY_VIOLATION)
        return
    await websocket.accept()
    if site is None:
        await websocket.close(protocol.CLOSE_POLICY_VIOLATION, reason="unknown site")
        return
    chat = services.chat
    guard = services.guard
    peer = open_peer(websocket, "visitor")
    services.hub.add_idle_visitor(peer)
    peer.send(chat.visitor_status_frame())
    conversation_id: str | None = None
    max_chars = services.settings.max_message_chars
    logger.info("visitor socket %s opened on site %d", peer.id, site.id)

    def address_key() -> str:
        address = client_address(
            websocket.client.host if websocket.client else None,
            websocket.headers.get("x-forwarded-for"),
            services.settings.trusted_proxies,
        )
        return guard.address_key(address)

    async def handle(text: str) -> None:
        nonlocal conversation_id
        frame = protocol.parse_visitor_frame(text, max_chars=max_chars)
        match frame:
            case protocol.Ping():
                peer.send({"type": "pong"})
            case protocol.Start() | protocol.Resume():
                if conversation_id is not None and chat.is_open(conversation_id):
                    raise ProtocolError(
                        "already_started", _("This socket already has a conversation.")
                    )
                if conversation_id is not None:
                    await chat.visitor_disconnected(conversation_id, peer)
                    conversation_id = None
                if isinstance(frame, protocol.Start):
                    if not await services.inbox.within_hours(site):
                        # Outside opening hours the chat is offline, as when
                        # nobody is available.
                        peer.send(
                            {"type": "unavailable", "emergency": EMERGENCY_NUMBER}
                        )
                        return
                    key = address_key()
                    guard.check_start(key)
                    started = await chat.start(peer, site, i18n.current_language())
                    conversation_id = started.id if started else None
                    if started is not None:
                        guard.started(started.id, key)
                else:
                    resumed = await chat.resume(peer, site, frame.token, frame.last_seq)
                    conversation_id = resumed.id if resumed.is_open else None
            case protocol.Send():
                if conversation_id is None:
                    raise ProtocolError(
                        "not_started",
                        _("Start a chat first."),
                        client_id=frame.client_id,
                    )
                guard.check_message(conversation_id, frame.client_id)
                await chat.visitor_send(conversation_id, frame)
            case protocol.End():
                if conversation_id is None:
                    raise ProtocolError("not_started", _("There is no chat to end."))
                await chat.visitor_end(conversation_id)
            case protocol.Delete():
                deleted = await chat.visitor_delete(site, frame.token)
                if deleted == conversation_id:
                    await chat.visitor_disconnected(deleted, peer)
                    conversation_id = None
                peer.send({"type": "deleted", "conversation": deleted})

    try:
        await receive_frames(websocket, peer, handle)
    finally:
        services.hub.remove_idle_visitor(peer)
        if conversation_id is not None:
            await chat.visitor_disconnected(conversation_id, peer)
        await peer.stop()
        logger.info("visitor socket %s closed", peer.id)


nojs.setup(templates, _safety_context)

routes: list[BaseRoute] = [
    Route("/chat", chat_page, methods=["GET"]),
    Route("/safety", safety_page, methods=["GET"]),
    Route("/chat/delete", delete_form, methods=["POST"]),
    Route("/chat/feedback", feedback.feedback_form, methods=["POST"]),
    Route("/chat/nojs/start", nojs.start, methods=["POST"]),
    Route("/chat/nojs/send", nojs.send, methods=["POST"]),
    Route("/chat/nojs/end", nojs.end, methods=["POST"]),
    Route("/chat/nojs/transcript", nojs.transcript, methods=["GET"]),
    Route("/chat/session", nojs.remember, methods=["POST"]),
    WebSocketRoute("/chat/ws", chat_socket),
    Route("/chat/nojs/leave", messages.leave_instead, methods=["POST"]),
    Route("/message", messages.message_page, methods=["GET"]),
    Route("/message", messages.leave_message, methods=["POST"]),
    Route("/replies", messages.replies_page, methods=["GET"]),
    Route("/replies", messages.open_replies, methods=["POST"]),
    Route("/replies/send", messages.answer, methods=["POST"]),
    Route("/replies/delete", messages.delete, methods=["POST"]),
    Route("/widget/loader.js", loader_script, methods=["GET"]),
    Route("/widget/site.css", brand.site_stylesheet, methods=["GET"]),
    Route("/demo", demo_page, methods=["GET"]),
    assets.mount("widget_static"),
]
