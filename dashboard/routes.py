"""Volunteer-side routes: sign-in, the dashboard page and its WebSocket."""

from __future__ import annotations

import logging
import random
import time

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from dashboard import (
    admin,
    casework,
    hours,
    inbox,
    invite,
    mail,
    replies,
    resources,
    site_admin,
    statistics,
    supervision,
    two_factor,
)
from dashboard.access import has_role
from dashboard.common import (
    USERNAME_MAX_CHARS,
    assets,
    login_page,
    page_headers,
    read_form,
    signed_in_volunteer,
    start_session,
    templates,
)
from dashboard.resources import share_resource, stale_count
from relay import auth, protocol
from relay.forms import honeypot_filled
from relay.i18n import gettext as _
from relay.pages import serving_origin
from relay.services import get_services
from relay.settings import ws_origin
from relay.transport import open_peer, receive_frames

logger = logging.getLogger("dashboard")

# How often an open dashboard socket checks that its session is still valid,
# and marks it used, when the volunteer acts.
SESSION_CHECK_SECONDS = 60.0
# A short idle time makes the checks more frequent. The first check may wait
# two intervals and the store writes the last use up to a tenth of the idle
# time late, so four checks per idle time keep a session in use live.
SESSION_CHECKS_PER_IDLE = 4


async def dashboard_page(request: Request) -> Response:
    services = get_services(request)
    volunteer, session_id = await signed_in_volunteer(request)
    if volunteer is None or session_id is None:
        return login_page(request, services, None)
    return templates.TemplateResponse(
        request,
        "dashboard.html",
        {
            "display_name": volunteer.display_name,
            "totp_enabled": volunteer.totp_enabled,
            "is_supervisor": has_role(volunteer, "supervisor"),
            "is_admin": has_role(volunteer, "admin"),
            "stale_entries": stale_count(volunteer, services),
            "csrf_token": services.signer.csrf_token(session_id),
            "ws_url": f"{ws_origin(serving_origin(request, services.settings))}"
            "/dashboard/ws",
        },
        headers=page_headers(request, services),
    )


async def login(request: Request) -> Response:
    """Check a username and password and set the session cookie."""
    services = get_services(request)
    if not auth.same_origin_request(request.headers, services.settings.own_origins):
        logger.warning("sign-in rejected: cross-site request")
        return login_page(
            request, services, _("This form was sent from another site."), 403
        )
    form = await read_form(request)
    nonce = request.cookies.get(services.signer.login_cookie)
    if not services.signer.check_csrf(form.get("csrf_token"), nonce):
        logger.info("sign-in rejected: missing or invalid CSRF token")
        return login_page(
            request, services, _("The form expired. Please sign in again."), 400
        )
    username = form.get("username", "").strip()
    password = form.get("password", "")
    if honeypot_filled(form):
        logger.warning("sign-in rejected: honeypot field filled")
        return login_page(
            request, services, _("The username or password is wrong."), 401
        )
    if not username or not password or len(username) > USERNAME_MAX_CHARS:
        return login_page(
            request, services, _("Enter your username and password."), 400
        )
    if not services.guard.allow_sign_in(username):
        logger.warning("sign-in throttled: too many attempts for one account")
        return login_page(
            request,
            services,
            _(
                "Too many sign-in attempts for this account. Wait a minute, then"
                " try again."
            ),
            429,
        )
    volunteer = await services.store.get_volunteer_by_username(username)
    known = volunteer is not None and volunteer.active
    hash_to_check = volunteer.password_hash if volunteer and known else None
    verified = await auth.verify_password_async(hash_to_check, password)
    if not verified or volunteer is None:
        logger.info("sign-in failed")
        return login_page(
            request, services, _("The username or password is wrong."), 401
        )
    if auth.needs_rehash(volunteer.password_hash):
        await services.store.update_password_hash(
            volunteer.id, await auth.hash_password_async(password)
        )
    if volunteer.totp_enabled or volunteer.role in two_factor.REQUIRED_ROLES:
        return await two_factor.ask_for_code(request, services, volunteer)
    response = RedirectResponse("/dashboard", status_code=303)
    await start_session(services, volunteer, response)
    return response


async def logout(request: Request) -> Response:
    """End the session, close the volunteer's sockets and hand back their chats."""
    services = get_services(request)
    volunteer, session_id = await signed_in_volunteer(request)
    response = RedirectResponse("/dashboard", status_code=303)
    if volunteer is None or session_id is None:
        return response
    form = await read_form(request)
    if not auth.same_origin_request(
        request.headers, services.settings.own_origins
    ) or not services.signer.check_csrf(form.get("csrf_token"), session_id):
        logger.info("sign-out rejected for volunteer %d: bad CSRF token", volunteer.id)
        return Response(
            _("The sign-out form expired. Reload the dashboard and try again."),
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
    if has_role(volunteer, "supervisor"):
        services.supervision.supervisor_connected(volunteer.id, peer)
    max_chars = services.settings.max_message_chars
    logger.info("volunteer socket %s opened for volunteer %d", peer.id, volunteer.id)

    cookie = websocket.cookies.get(services.signer.session_cookie)
    # The cookie cannot change while the socket is open, so its signature is
    # checked once here and only its age on each frame.
    session_expires_at = services.signer.session_expires_at(cookie)
    check_interval = min(
        SESSION_CHECK_SECONDS,
        services.settings.session_idle_seconds / SESSION_CHECKS_PER_IDLE,
    )
    # The handshake has just checked the session, so the socket's first check
    # comes one to two intervals later. Sockets opened together (after a
    # restart, say) thus spread their checks over an interval instead of all
    # reading the database in the same second.
    session_checked_at = time.monotonic() + random.uniform(0, check_interval)

    async def handle(text: str) -> None:
        nonlocal session_checked_at
        if time.time() > session_expires_at:
            logger.info("volunteer socket %s: session expired", peer.id)
            peer.close(protocol.CLOSE_SIGNED_OUT)
            return
        frame = protocol.parse_volunteer_frame(text, max_chars=max_chars)
        # Actions, not keep-alives, keep the session from going idle; an expired
        # or signed-out session closes the socket as a sign-out does.
        now = time.monotonic()
        if (
            not isinstance(frame, protocol.Ping)
            and now - session_checked_at >= check_interval
        ):
            session_checked_at = now
            if (await signed_in_volunteer(websocket))[0] is None:
                logger.info("volunteer %d session expired", volunteer.id)
                peer.close(protocol.CLOSE_SIGNED_OUT)
                return
        match frame:
            case protocol.Ping():
                peer.send({"type": "pong"})
            case protocol.Hello():
                await chat.hello(
                    volunteer.id, volunteer.display_name, peer, frame.last_seq
                )
                await services.supervision.send_whispers_to(volunteer.id, peer)
                if has_role(volunteer, "supervisor"):
                    await services.supervision.send_open_alerts(peer)
            case protocol.Availability():
                if frame.available and services.supervision.on_break(volunteer.id):
                    await services.supervision.end_break(volunteer.id)
                else:
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
            case protocol.ShareResource():
                await share_resource(services, volunteer.id, frame)
            case _:
                await supervision.handle_frame(services, volunteer, peer, frame)

    try:
        await receive_frames(websocket, peer, handle)
    finally:
        services.supervision.supervisor_disconnected(volunteer.id, peer)
        await chat.volunteer_disconnected(volunteer.id, peer)
        await peer.stop()
        logger.info("volunteer socket %s closed", peer.id)


routes: list[BaseRoute] = [
    Route("/dashboard", dashboard_page, methods=["GET"]),
    Route("/dashboard/login", login, methods=["POST"]),
    Route("/dashboard/logout", logout, methods=["POST"]),
    *two_factor.routes,
    *admin.routes,
    *site_admin.routes,
    *invite.routes,
    *inbox.routes,
    *hours.routes,
    *mail.routes,
    *casework.routes,
    *statistics.routes,
    *supervision.routes,
    Route("/dashboard/session", session_status, methods=["GET"]),
    *resources.routes,
    *replies.routes,
    WebSocketRoute("/dashboard/ws", dashboard_socket),
    assets.mount("dashboard_static"),
]
