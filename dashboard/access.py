"""Access to staff pages: roles, sessions and form checks in one place.

Every staff route calls :func:`staff_request` (pages) or :func:`staff_form`
(posts) with the least role it needs. Roles are ranked, so a supervisor may do
whatever a volunteer may, and an admin whatever a supervisor may.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

from dashboard.common import read_form, signed_in_volunteer
from relay import auth
from relay.forms import STAFF_FORM_BYTES
from relay.i18n import gettext as _
from relay.services import Services, get_services
from relay.store import Volunteer

logger = logging.getLogger("dashboard")

Role = Literal["volunteer", "supervisor", "admin"]
ROLE_RANK: dict[str, int] = {"volunteer": 0, "supervisor": 1, "admin": 2}


def has_role(volunteer: Volunteer, minimum: Role) -> bool:
    """Return True when ``volunteer``'s role is ``minimum`` or above it."""
    return ROLE_RANK.get(volunteer.role, -1) >= ROLE_RANK[minimum]


@dataclass(frozen=True)
class Staff:
    """A signed-in staff member and the services a page needs to serve them."""

    volunteer: Volunteer
    session_id: str
    services: Services

    @property
    def csrf_token(self) -> str:
        return self.services.signer.csrf_token(self.session_id)


def forbidden() -> Response:
    """Return the same short 403 response for every forbidden request, so it leaks
    nothing."""
    return PlainTextResponse(
        _("You do not have access to this page."),
        status_code=403,
        headers={"cache-control": "no-store"},
    )


async def staff_request(request: Request, minimum: Role) -> Staff | Response:
    """Return the signed-in staff member, or the response that turns them away.

    Without a session the response is a redirect to the sign-in page for GET
    and 403 for anything else. With too low a role it is always 403.
    """
    services = get_services(request)
    volunteer, session_id = await signed_in_volunteer(request)
    if volunteer is None or session_id is None:
        if request.method == "GET":
            return RedirectResponse("/dashboard", status_code=303)
        return forbidden()
    if not has_role(volunteer, minimum):
        logger.warning(
            "volunteer %d rejected on %s %s: needs role %s",
            volunteer.id,
            request.method,
            request.url.path,
            minimum,
        )
        return forbidden()
    return Staff(volunteer, session_id, services)


async def staff_form(
    request: Request, minimum: Role, max_bytes: int = STAFF_FORM_BYTES
) -> tuple[Staff, dict[str, str]] | Response:
    """Check the session, role, origin and CSRF token of a staff form post.

    Returns the staff member and the form's fields, or the response that
    rejects the post. A body over ``max_bytes`` reads as an empty form.
    """
    staff = await staff_request(request, minimum)
    if isinstance(staff, Response):
        return staff
    if not auth.same_origin_request(
        request.headers, staff.services.settings.own_origins
    ):
        logger.warning("form rejected: cross-site post to %s", request.url.path)
        return forbidden()
    form = await read_form(request, max_bytes)
    if not staff.services.signer.check_csrf(form.get("csrf_token"), staff.session_id):
        logger.info("form rejected: missing or invalid CSRF token")
        return PlainTextResponse(
            _("This form expired. Go back, reload the page and try again."),
            status_code=400,
            headers={"cache-control": "no-store"},
        )
    return staff, form
