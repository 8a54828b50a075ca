"""The second sign-in step: a TOTP code or a recovery code, and enrolment.

After a correct password, volunteers with TOTP and every supervisor and admin
get a signed, short-lived pending cookie instead of a session. Those without a
secret yet enrol first: the page shows a QR code drawn on the server, and the
first valid code stores the secret and shows ten single-use recovery codes.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from dashboard.access import staff_request
from dashboard.common import (
    login_page,
    page_headers,
    read_form,
    set_private_cookie,
    start_session,
    templates,
)
from relay import auth, totp
from relay.i18n import gettext as _
from relay.services import Services, get_services
from relay.store import Volunteer

logger = logging.getLogger("dashboard")

REQUIRED_ROLES = ("supervisor", "admin")


def _code_page(
    request: Request,
    services: Services,
    pending: dict[str, Any],
    username: str,
    error: str | None,
    status_code: int = 200,
) -> Response:
    """Render the code form, with the QR code while enrolling, and set the cookie."""
    context: dict[str, Any] = {
        "csrf_token": services.signer.csrf_token(pending["nonce"]),
        "error": error,
        "enrolling": "secret" in pending,
        "required": pending.get("required", False),
    }
    if "secret" in pending:
        uri = totp.provisioning_uri(pending["secret"], username)
        # segno writes the SVG from the URI alone, so nothing in it comes from a user.
        context["qr_svg"] = Markup(totp.qr_svg(uri))
        context["secret"] = pending["secret"]
    response = templates.TemplateResponse(
        request,
        "two_factor.html",
        context,
        status_code=status_code,
        headers=page_headers(request, services),
    )
    set_private_cookie(
        response,
        services,
        services.signer.pending_cookie,
        services.signer.sign_pending(pending),
        auth.PENDING_MAX_AGE_SECONDS,
    )
    return response


async def ask_for_code(
    request: Request, services: Services, volunteer: Volunteer
) -> Response:
    """Respond to a correct password with the code form, enrolling when needed."""
    pending: dict[str, Any] = {
        "volunteer": volunteer.id,
        "nonce": secrets.token_urlsafe(16),
    }
    if not volunteer.totp_enabled:
        pending["secret"] = totp.new_secret()
        pending["required"] = True
    logger.info("volunteer %d passed the password step", volunteer.id)
    return _code_page(request, services, pending, volunteer.username, None)


async def enrol(request: Request) -> Response:
    """Start optional TOTP enrolment for a signed-in volunteer."""
    staff = await staff_request(request, "volunteer")
    if isinstance(staff, Response):
        return staff
    volunteer = staff.volunteer
    services = staff.services
    pending = {
        "volunteer": volunteer.id,
        "nonce": secrets.token_urlsafe(16),
        "secret": totp.new_secret(),
    }
    return _code_page(request, services, pending, volunteer.username, None)


async def _check_code(services: Services, pending: dict[str, Any], code: str) -> bool:
    """Return True when ``code`` is a fresh TOTP code or an unused recovery code."""
    volunteer_id = int(pending["volunteer"])
    store = services.store
    if "secret" in pending:
        step = totp.matching_step(pending["secret"], code)
        return step is not None
    secret = await store.get_totp_secret(volunteer_id)
    step = totp.matching_step(secret, code) if secret else None
    if step is not None:
        return await store.use_totp_step(volunteer_id, step)
    if await store.use_recovery_code(volunteer_id, totp.hash_recovery_code(code)):
        logger.warning("volunteer %d signed in with a recovery code", volunteer_id)
        return True
    return False


async def confirm_code(request: Request) -> Response:
    """Check the second factor and start the session, or show the form again."""
    services = get_services(request)
    if not auth.same_origin_request(request.headers, services.settings.own_origins):
        logger.warning("second factor rejected: cross-site request")
        return login_page(
            request, services, _("This form was sent from another site."), 403
        )

    pending = services.signer.unsign_pending(
        request.cookies.get(services.signer.pending_cookie)
    )
    form = await read_form(request)
    if pending is None or not services.signer.check_csrf(
        form.get("csrf_token"), str(pending.get("nonce", ""))
    ):
        logger.info("second factor rejected: missing, expired or forged form")
        return login_page(
            request, services, _("The sign-in expired. Please sign in again."), 400
        )
    volunteer = await services.store.get_volunteer(int(pending["volunteer"]))
    if volunteer is None or not volunteer.active:
        logger.info("second factor rejected: the account is missing or inactive")
        return login_page(request, services, _("Please sign in again."), 400)

    if not services.guard.allow_sign_in(f"#code {volunteer.id}"):
        logger.warning("second factor throttled for volunteer %d", volunteer.id)
        return _code_page(
            request,
            services,
            pending,
            volunteer.username,
            _("Too many codes were tried. Wait a minute, then try again."),
            429,
        )
    code = form.get("code", "")[:64]
    if not await _check_code(services, pending, code):
        logger.info("second factor failed for volunteer %d", volunteer.id)
        return _code_page(
            request,
            services,
            pending,
            volunteer.username,
            _("That code is not valid. Enter the current code from your app."),
            401,
        )

    if "secret" in pending:
        return await _finish_enrolment(request, services, volunteer, pending, code)
    response = RedirectResponse("/dashboard", status_code=303)
    await start_session(services, volunteer, response)
    return response


async def _finish_enrolment(
    request: Request,
    services: Services,
    volunteer: Volunteer,
    pending: dict[str, Any],
    code: str,
) -> Response:
    """Store the confirmed secret, show the recovery codes once, and sign in."""
    codes = totp.new_recovery_codes()
    await services.store.set_totp(
        volunteer.id, pending["secret"], [totp.hash_recovery_code(c) for c in codes]
    )
    step = totp.matching_step(pending["secret"], code)
    if step is not None:
        await services.store.use_totp_step(volunteer.id, step)
    logger.info("volunteer %d set up two-factor sign-in", volunteer.id)
    response = templates.TemplateResponse(
        request,
        "recovery_codes.html",
        {"codes": codes},
        headers=page_headers(request, services),
    )
    await start_session(services, volunteer, response)
    return response


routes: list[BaseRoute] = [
    Route("/dashboard/login/code", confirm_code, methods=["POST"]),
    Route("/dashboard/two-factor", enrol, methods=["GET"]),
]
