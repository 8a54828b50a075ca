"""Volunteer-side routes: sign-in, the dashboard page and its WebSocket."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket

from relay import auth, protocol
from relay.pages import (
    content_security_policy,
    make_templates,
    serving_origin,
)
from relay.services import Services, get_services
from relay.settings import ws_origin
from relay.store import Volunteer
from relay.transport import open_peer, receive_frames

logger = logging.getLogger("dashboard")

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
STATIC_PREFIX = "/dashboard/static"
MAX_FORM_BYTES = 8 * 1024
USERNAME_MAX_CHARS = 64

templates = make_templates(HERE / "templates", STATIC_PREFIX, STATIC_DIR)


def _headers(request: Request, services: Services) -> dict[str, str]:
    origin = ws_origin(serving_origin(request, services.settings))
    return {
        "cache-control": "no-store",
        "content-security-policy": content_security_policy(connect=[origin]),
    }


async def signed_in_volunteer(
    connection: HTTPConnection,
) -> tuple[Volunteer, str] | tuple[None, None]:
    """Return the volunteer and session id of a request's session cookie."""
    services = get_services(connection)
    session_id = services.signer.unsign_session(
        connection.cookies.get(services.signer.session_cookie)
    )
    if session_id is None:
        return None, None
    volunteer = await services.store.get_session_volunteer(session_id)
    if volunteer is None:
        return None, None
    return volunteer, session_id


def _login_page(
    request: Request, services: Services, error: str | None, status_code: int = 200
) -> Response:
    nonce = secrets.token_urlsafe(16)
    response = templates.TemplateResponse(
        request,
        "login.html",
        {"csrf_token": services.signer.csrf_token(nonce), "error": error},
        status_code=status_code,
        headers=_headers(request, services),
    )
    response.set_cookie(
        services.signer.login_cookie,
        nonce,
        max_age=3600,
        path="/",
        secure=services.signer.secure,
        httponly=True,
        samesite="strict",
    )
    return response


async def dashboard_page(request: Request) -> Response:
    services = get_services(request)
    volunteer, session_id = await signed_in_volunteer(request)
    if volunteer is None or session_id is None:
        return _login_page(request, services, None)
    return templates.TemplateResponse(
        request,
        "dashboard.html",
        {
            "display_name": volunteer.display_name,
            "csrf_token": services.signer.csrf_token(session_id),
            "ws_url": f"{ws_origin(serving_origin(request, services.settings))}"
            "/dashboard/ws",
        },
        headers=_headers(request, services),
    )


async def _read_form(request: Request) -> dict[str, str]:
    if int(request.headers.get("content-length") or 0) > MAX_FORM_BYTES:
        return {}
    form = await request.form(max_files=0, max_fields=10, max_part_size=MAX_FORM_BYTES)
    return {key: value for key, value in form.items() if isinstance(value, str)}


async def login(request: Request) -> Response:
    """Check a username and password and set the session cookie."""
    services = get_services(request)
    if not auth.same_origin_request(request.headers, services.settings.own_origins):
        logger.warning("sign-in rejected: cross-site request")
        return _login_page(
            request, services, "This form was sent from another site.", 403
        )
    form = await _read_form(request)
    nonce = request.cookies.get(services.signer.login_cookie)
    if not services.signer.check_csrf(form.get("csrf_token"), nonce):
        logger.info("sign-in rejected: missing or invalid CSRF token")
        return _login_page(
            request, services, "The form expired. Please sign in again.", 400
        )
    username = form.get("username", "").strip()
    password = form.get("password", "")
    if not username or not password or len(username) > USERNAME_MAX_CHARS:
        return _login_page(request, services, "Enter your username and password.", 400)
    if not services.guard.allow_sign_in(username):
        logger.warning("sign-in throttled: too many attempts for one account")
        return _login_page(
            request,
            services,
            "Too many sign-in attempts for this account. Wait a minute, then try"
            " again.",
            429,
        )
    volunteer = await services.store.get_volunteer_by_username(username)
    known = volunteer is not None and volunteer.active
    hash_to_check = volunteer.password_hash if volunteer and known else None
    verified = await auth.verify_password_async(hash_to_check, password)
    if not verified or volunteer is None:
        logger.info("sign-in failed")
        return _login_page(request, services, "The username or password is wrong.", 401)
    if auth.needs_rehash(volunteer.password_hash):
        await services.store.update_password_hash(
            volunteer.id, await auth.hash_password_async(password)
        )
    session_id = auth.new_session_id()
    await services.store.create_session(session_id, volunteer.id)
    logger.info("volunteer %d signed in", volunteer.id)
    response = RedirectResponse("/dashboard", status_code=303)
    response.set_cookie(
        services.signer.session_cookie,
        services.signer.sign_session(session_id),
        max_age=services.settings.session_max_age_seconds,
        path="/",
        secure=services.signer.secure,
        httponly=True,
        samesite="strict",
    )
    response.delete_cookie(services.signer.login_cookie, path="/")
    return response


async def logout(request: Request) -> Response:
    """End the session, close the volunteer's sockets and hand back their chats."""
    services = get_services(request)
    volunteer, session_id = await signed_in_volunteer(request)
    response = RedirectResponse("/dashboard", status_code=303)
    if volunteer is None or session_id is None:
        return response
    form = await _read_form(request)
    if not auth.same_origin_request(
        request.headers, services.settings.own_origins
    ) or not services.signer.check_csrf(form.get("csrf_token"), session_id):
        logger.info("sign-out rejected for volunteer %d: bad CSRF token", volunteer.id)
        return Response(
            "The sign-out form expired. Reload the dashboard and try again.",
            status_code=400,
            media_type="text/plain",
        )
    await services.store.delete_session(session_id)
    await services.chat.sign_out(volunteer.id)
    logger.info("volunteer %d signed out", volunteer.id)
    response.delete_cookie(services.signer.session_cookie, path="/")
    return response


async def session_status(request: Request) -> Response:
    """Tell the dashboard script whether its session cookie is still valid."""
    volunteer, _ = await signed_in_volunteer(request)
    return JSONResponse(
        {"signed_in": volunteer is not None}, headers={"cache-control": "no-store"}
    )


async def dashboard_socket(websocket: WebSocket) -> None:
    """Own one dashboard WebSocket from handshake to close.

    The ``finally`` block unregisters the socket on every exit, so a volunteer's
    grace period starts when their last socket goes.
    """
    services = get_services(websocket)
    if websocket.headers.get("origin") not in services.settings.own_origins:
        logger.info("dashboard socket rejected: origin not allowed")
        await websocket.close(protocol.CLOSE_POLICY_VIOLATION)
        return
    volunteer, _ = await signed_in_volunteer(websocket)
    if volunteer is None:
        logger.info("dashboard socket rejected: no valid session")
        await websocket.close(protocol.CLOSE_POLICY_VIOLATION)
        return
    await websocket.accept()
    chat = services.chat
    peer = open_peer(websocket, "volunteer")
    await chat.volunteer_connected(volunteer.id, volunteer.capacity, peer)
    max_chars = services.settings.max_message_chars
    logger.info("volunteer socket %s opened for volunteer %d", peer.id, volunteer.id)

    cookie = websocket.cookies.get(services.signer.session_cookie)

    async def handle(text: str) -> None:
        if services.signer.unsign_session(cookie) is None:
            logger.info("volunteer socket %s: session expired", peer.id)
            peer.close(protocol.CLOSE_SIGNED_OUT)
            return
        frame = protocol.parse_volunteer_frame(text, max_chars=max_chars)
        match frame:
            case protocol.Ping():
                peer.send({"type": "pong"})
            case protocol.Hello():
                await chat.hello(
                    volunteer.id, volunteer.display_name, peer, frame.last_seq
                )
            case protocol.Availability():
                await chat.set_availability(volunteer.id, frame.available)
            case protocol.Accept():
                await chat.accept(volunteer.id, frame.conversation)
            case protocol.Send():
                await chat.volunteer_send(volunteer.id, frame)
            case protocol.End():
                await chat.volunteer_end(volunteer.id, frame.conversation)
            case protocol.Block():
                blocked = await chat.volunteer_block(volunteer.id, frame.conversation)
                services.guard.block(blocked)

    try:
        await receive_frames(websocket, peer, handle)
    finally:
        await chat.volunteer_disconnected(volunteer.id, peer)
        await peer.stop()
        logger.info("volunteer socket %s closed", peer.id)


routes: list[BaseRoute] = [
    Route("/dashboard", dashboard_page, methods=["GET"]),
    Route("/dashboard/login", login, methods=["POST"]),
    Route("/dashboard/logout", logout, methods=["POST"]),
    Route("/dashboard/session", session_status, methods=["GET"]),
    WebSocketRoute("/dashboard/ws", dashboard_socket),
    Mount(
        STATIC_PREFIX, app=StaticFiles(directory=STATIC_DIR), name="dashboard_static"
    ),
]
