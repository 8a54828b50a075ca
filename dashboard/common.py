"""Shared parts of the dashboard routes: templates, headers, forms and sessions."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from relay import auth
from relay.assets import StaticAssets
from relay.forms import read_form as read_form
from relay.pages import content_security_policy, make_templates, serving_origin
from relay.services import Services, get_services
from relay.settings import ws_origin
from relay.store import Volunteer

logger = logging.getLogger("dashboard")

HERE = Path(__file__).parent
USERNAME_MAX_CHARS = 64

assets = StaticAssets(HERE / "static", "/dashboard/static")
templates = make_templates(HERE / "templates", assets)


def page_headers(request: Request, services: Services) -> dict[str, str]:
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
    volunteer = await services.store.get_session_volunteer(
        session_id, idle_seconds=services.settings.session_idle_seconds
    )
    if volunteer is None:
        return None, None
    return volunteer, session_id


def login_page(
    request: Request, services: Services, error: str | None, status_code: int = 200
) -> Response:
    nonce = secrets.token_urlsafe(16)
    response = templates.TemplateResponse(
        request,
        "login.html",
        {"csrf_token": services.signer.csrf_token(nonce), "error": error},
        status_code=status_code,
        headers=page_headers(request, services),
    )
    set_private_cookie(response, services, services.signer.login_cookie, nonce, 3600)
    return response


def set_private_cookie(
    response: Response, services: Services, name: str, value: str, max_age: int
) -> None:
    """Set a cookie only this site's own requests carry: HttpOnly, SameSite
    strict, for the whole host, and Secure over HTTPS."""
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        secure=services.signer.secure,
        httponly=True,
        samesite="strict",
    )


async def start_session(
    services: Services, volunteer: Volunteer, response: Response
) -> None:
    """Create a session for a signed-in volunteer and set its cookie on ``response``."""
    session_id = auth.new_session_id()
    await services.store.create_session(session_id, volunteer.id)
    logger.info("volunteer %d signed in", volunteer.id)
    set_private_cookie(
        response,
        services,
        services.signer.session_cookie,
        services.signer.sign_session(session_id),
        services.settings.session_max_age_seconds,
    )
    response.delete_cookie(services.signer.login_cookie, path="/")
    response.delete_cookie(services.signer.pending_cookie, path="/")
