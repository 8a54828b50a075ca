"""Admin pages for people: accounts, invitations and the audit log.

Every route here needs the admin role, checked by ``dashboard.access``. Each
change an admin makes is written to the audit log with its target's id.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from dashboard.access import ROLE_RANK, Staff, staff_form, staff_request
from dashboard.common import page_headers, templates
from relay.conversations import hash_token
from relay.i18n import gettext as _
from relay.pages import serving_origin
from relay.store import utc_ago

logger = logging.getLogger("dashboard.admin")

AUDIT_PAGE_SIZE = 50
INVITE_TOKEN_BYTES = 32


def render(
    request: Request,
    staff: Staff,
    name: str,
    context: dict[str, Any],
    status_code: int = 200,
) -> Response:
    """Render an admin page with the staff member's CSRF token and the nav."""
    return templates.TemplateResponse(
        request,
        name,
        {
            "csrf_token": staff.csrf_token,
            "display_name": staff.volunteer.display_name,
            "role": staff.volunteer.role,
            **context,
        },
        status_code=status_code,
        headers=page_headers(request, staff.services),
    )


def _last_admin_text() -> str:
    return _(
        "This is the last active admin account; make another account an admin first."
    )


def path_id(request: Request) -> int | None:
    """Return the ``{id}`` path parameter as a positive integer, or None."""
    text = str(request.path_params.get("id", ""))
    if not text.isdigit() or len(text) > 18:
        return None
    return int(text)


def not_found(request: Request, staff: Staff, message: str) -> Response:
    """Return the 404 page for an unknown account, invitation or site."""
    return render(request, staff, "admin_not_found.html", {"message": message}, 404)


# Accounts


async def accounts_page(
    request: Request,
    staff: Staff | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    """List the staff accounts and pending invitations, with their actions."""
    if staff is None:
        checked = await staff_request(request, "admin")
        if isinstance(checked, Response):
            return checked
        staff = checked
    store = staff.services.store
    volunteers = await store.list_volunteers()
    names = {volunteer.id: volunteer.display_name for volunteer in volunteers}
    return render(
        request,
        staff,
        "admin_accounts.html",
        {
            "volunteers": volunteers,
            "invitations": await store.list_pending_invitations(),
            "names": names,
            "roles": list(ROLE_RANK),
            "me": staff.volunteer.id,
            "error": error,
            "invite_hours": staff.services.settings.invite_hours,
        },
        status_code,
    )


async def _change_account(
    request: Request,
    staff: Staff,
    volunteer_id: int,
    change: Awaitable[bool],
    description: str,
) -> Response | None:
    """Await a store change of an account; return None, or the page of its error.

    The store raises ``ValueError`` when the change would leave no active admin,
    and returns False for an unknown account. ``description`` names the change
    in the log line of a rejection.
    """
    try:
        changed = await change
    except ValueError:
        logger.info(
            "admin %d: %s volunteer %d rejected: last active admin",
            staff.volunteer.id,
            description,
            volunteer_id,
        )
        return await accounts_page(request, staff, _last_admin_text(), 400)
    if not changed:
        return not_found(request, staff, _("This account does not exist."))
    return None


async def set_active(request: Request) -> Response:
    """Deactivate or reactivate an account.

    Deactivating deletes the person's sessions, closes their dashboard sockets
    and hands their chats back to the queue at once.
    """
    checked = await staff_form(request, "admin")
    if isinstance(checked, Response):
        return checked
    staff, form = checked
    volunteer_id = path_id(request)
    active = form.get("active")
    if volunteer_id is None or active not in ("0", "1"):
        return not_found(request, staff, _("This account does not exist."))
    store = staff.services.store
    change = store.set_volunteer_active(volunteer_id, active == "1")
    failed = await _change_account(request, staff, volunteer_id, change, "deactivating")
    if failed is not None:
        return failed
    if active == "0":
        await staff.services.chat.sign_out(volunteer_id)
    action = "account.reactivate" if active == "1" else "account.deactivate"
    await store.record_audit(staff.volunteer.id, action, "volunteer", volunteer_id)
    logger.info("admin %d: %s volunteer %d", staff.volunteer.id, action, volunteer_id)
    return RedirectResponse("/dashboard/admin/accounts", status_code=303)


async def set_role(request: Request) -> Response:
    """Change an account's role; the last active admin cannot be demoted."""
    checked = await staff_form(request, "admin")
    if isinstance(checked, Response):
        return checked
    staff, form = checked
    volunteer_id = path_id(request)
    role = form.get("role", "")
    if volunteer_id is None or role not in ROLE_RANK:
        return not_found(request, staff, _("This account does not exist."))
    store = staff.services.store
    change = store.set_volunteer_role(volunteer_id, role)
    failed = await _change_account(
        request, staff, volunteer_id, change, "role change of"
    )
    if failed is not None:
        return failed
    await store.record_audit(
        staff.volunteer.id, f"account.role.{role}", "volunteer", volunteer_id
    )
    logger.info(
        "admin %d: volunteer %d is now %s", staff.volunteer.id, volunteer_id, role
    )
    return RedirectResponse("/dashboard/admin/accounts", status_code=303)


# Invitations


async def create_invitation(request: Request) -> Response:
    """Create a one-time invitation link and show it once.

    Only the token's SHA-256 hash is stored, so the link cannot be shown again.
    """
    checked = await staff_form(request, "admin")
    if isinstance(checked, Response):
        return checked
    staff, form = checked
    role = form.get("role", "")
    if role not in ROLE_RANK:
        return await accounts_page(request, staff, _("Choose a role."), 400)
    services = staff.services
    token = secrets.token_urlsafe(INVITE_TOKEN_BYTES)
    hours = services.settings.invite_hours
    invitation = await services.store.add_invitation(
        hash_token(token), role, staff.volunteer.id, utc_ago(-hours * 3600)
    )
    await services.store.record_audit(
        staff.volunteer.id, "invitation.create", "invitation", invitation.id
    )
    logger.info("admin %d: created invitation %d", staff.volunteer.id, invitation.id)
    origin = serving_origin(request, services.settings)
    return render(
        request,
        staff,
        "admin_invited.html",
        {
            "link": f"{origin}/dashboard/invite/{token}",
            "invitation": invitation,
            "hours": hours,
        },
    )


async def revoke_invitation(request: Request) -> Response:
    checked = await staff_form(request, "admin")
    if isinstance(checked, Response):
        return checked
    staff, _form = checked
    invitation_id = path_id(request)
    store = staff.services.store
    if invitation_id is None or not await store.revoke_invitation(invitation_id):
        return not_found(
            request, staff, _("This invitation does not exist or is no longer pending.")
        )
    await store.record_audit(
        staff.volunteer.id, "invitation.revoke", "invitation", invitation_id
    )
    logger.info("admin %d: revoked invitation %d", staff.volunteer.id, invitation_id)
    return RedirectResponse("/dashboard/admin/accounts", status_code=303)


# Audit log


async def audit_page(request: Request) -> Response:
    """Show the audit log, newest first, a page at a time, filtered by action."""
    checked = await staff_request(request, "admin")
    if isinstance(checked, Response):
        return checked
    staff = checked
    store = staff.services.store
    actions = await store.audit_actions()
    action = request.query_params.get("action") or None
    if action is not None and action not in actions:
        action = None
    before_text = request.query_params.get("before", "")
    before = (
        int(before_text) if before_text.isdigit() and len(before_text) < 18 else None
    )
    entries = await store.list_audit(
        action=action, before_id=before, limit=AUDIT_PAGE_SIZE + 1
    )
    older = entries[AUDIT_PAGE_SIZE - 1].id if len(entries) > AUDIT_PAGE_SIZE else None
    return render(
        request,
        staff,
        "admin_audit.html",
        {
            "entries": entries[:AUDIT_PAGE_SIZE],
            "actions": actions,
            "action": action,
            "older": older,
            "first_page": before is None,
        },
    )


async def admin_home(request: Request) -> Response:
    checked = await staff_request(request, "admin")
    if isinstance(checked, Response):
        return checked
    return RedirectResponse("/dashboard/admin/accounts", status_code=303)


routes: list[BaseRoute] = [
    Route("/dashboard/admin", admin_home, methods=["GET"]),
    Route("/dashboard/admin/accounts", accounts_page, methods=["GET"]),
    Route("/dashboard/admin/accounts/{id}/active", set_active, methods=["POST"]),
    Route("/dashboard/admin/accounts/{id}/role", set_role, methods=["POST"]),
    Route("/dashboard/admin/invitations", create_invitation, methods=["POST"]),
    Route(
        "/dashboard/admin/invitations/{id}/revoke",
        revoke_invitation,
        methods=["POST"],
    ),
    Route("/dashboard/admin/audit", audit_page, methods=["GET"]),
]
