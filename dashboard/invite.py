"""The page behind an invitation link, where a new staff member sets up their
account: username, display name and password.

The link's token is the only credential. The relay stores its SHA-256 hash, and
the token stops working once used, revoked or expired.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from dashboard.common import page_headers, read_form, templates
from relay import auth
from relay.cli import (
    DISPLAY_NAME_MAX_CHARS,
    USERNAME_PATTERN,
    CommandError,
    check_name,
)
from relay.conversations import hash_token
from relay.i18n import gettext as _
from relay.passwords import check_new_password
from relay.services import Services, get_services
from relay.store import Invitation

logger = logging.getLogger("dashboard.invite")

# token_urlsafe(32) gives 43 characters; anything else is no invitation.
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{43}")


def _page(
    request: Request,
    services: Services,
    token_hash: str,
    context: dict[str, Any],
    status_code: int = 200,
) -> Response:
    return templates.TemplateResponse(
        request,
        "invite.html",
        {
            "csrf_token": services.signer.csrf_token(f"invite:{token_hash}"),
            "username": "",
            "display_name": "",
            "errors": {},
            "done": False,
            "invalid": False,
            **context,
        },
        status_code=status_code,
        headers=page_headers(request, services),
    )


def _invalid(request: Request, services: Services, status_code: int) -> Response:
    return _page(request, services, "", {"invalid": True}, status_code)


async def _open_invitation(
    request: Request, services: Services
) -> tuple[Invitation, str] | None:
    token = str(request.path_params.get("token", ""))
    if not TOKEN_PATTERN.fullmatch(token):
        return None
    token_hash = hash_token(token)
    invitation = await services.store.get_open_invitation(token_hash)
    return (invitation, token_hash) if invitation else None


async def invite_page(request: Request) -> Response:
    """Show the account form of a usable invitation, or a page stating that the
    link is invalid."""
    services = get_services(request)
    found = await _open_invitation(request, services)
    if found is None:
        logger.info("invitation page: unknown, used or expired link")
        return _invalid(request, services, 404)
    invitation, token_hash = found
    return _page(request, services, token_hash, {"role": invitation.role})


def _check_fields(
    username: str, display_name: str, password: str, repeated: str
) -> tuple[dict[str, str], str]:
    """Return the problem of each field, and the display name cleaned."""
    errors: dict[str, str] = {}
    if not USERNAME_PATTERN.fullmatch(username):
        errors["username"] = _(
            "Use 2 to 64 lowercase letters, digits, dots, dashes or underscores,"
            " starting with a letter or digit."
        )
    try:
        display_name = check_name(display_name, "display name", DISPLAY_NAME_MAX_CHARS)
    except CommandError as error:
        errors["display_name"] = str(error)
    try:
        check_new_password(password, username, display_name)
    except ValueError as error:
        errors["password"] = str(error)
    if "password" not in errors and password != repeated:
        errors["password"] = _("The two passwords differ.")
    return errors, display_name


async def accept_invitation(request: Request) -> Response:
    """Create the account of a usable invitation; the invitation is then used up."""
    services = get_services(request)
    if not auth.same_origin_request(request.headers, services.settings.own_origins):
        logger.warning("invitation form rejected: cross-site post")
        return _invalid(request, services, 403)
    found = await _open_invitation(request, services)
    if found is None:
        logger.info("invitation form: unknown, used or expired link")
        return _invalid(request, services, 410)
    invitation, token_hash = found
    form = await read_form(request)
    if not services.signer.check_csrf(form.get("csrf_token"), f"invite:{token_hash}"):
        logger.info("invitation form rejected: missing or invalid CSRF token")
        return _invalid(request, services, 400)
    username = form.get("username", "").strip().lower()[:100]
    display_name = form.get("display_name", "")[:200]
    errors, display_name = _check_fields(
        username, display_name, form.get("password", ""), form.get("repeat", "")
    )
    context = {
        "role": invitation.role,
        "username": username,
        "display_name": display_name,
    }
    if errors:
        return _page(request, services, token_hash, {**context, "errors": errors}, 400)
    password_hash = await auth.hash_password_async(form.get("password", ""))
    try:
        volunteer = await services.store.accept_invitation(
            token_hash,
            username,
            display_name,
            password_hash,
            services.settings.default_capacity,
        )
    except ValueError:
        errors = {"username": _("This username is taken; choose another.")}
        return _page(request, services, token_hash, {**context, "errors": errors}, 400)
    if volunteer is None:
        logger.info("invitation %d was used meanwhile", invitation.id)
        return _invalid(request, services, 410)
    await services.store.record_audit(
        volunteer.id, "invitation.accept", "invitation", invitation.id
    )
    logger.info("invitation %d created volunteer %d", invitation.id, volunteer.id)
    return _page(request, services, "", {**context, "done": True})


routes: list[BaseRoute] = [
    Route("/dashboard/invite/{token}", invite_page, methods=["GET"]),
    Route("/dashboard/invite/{token}", accept_invitation, methods=["POST"]),
]
