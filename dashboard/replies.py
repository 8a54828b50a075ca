"""Saved replies: texts admins prepare per language, which volunteers search
from the chat panel and insert into their reply box."""

from __future__ import annotations

import logging
import unicodedata
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from dashboard.access import Staff, staff_form, staff_request
from dashboard.common import page_headers, templates
from relay.i18n import gettext as _
from relay.protocol import ProtocolError, clean_body
from relay.resources import LANGUAGES
from relay.store import SavedReply

logger = logging.getLogger("dashboard.replies")

TITLE_MAX_CHARS = 100
LIST_PATH = "/dashboard/replies"


def _page(
    request: Request,
    staff: Staff,
    template: str,
    status_code: int = 200,
    **context: Any,
) -> Response:
    return templates.TemplateResponse(
        request,
        template,
        {"csrf_token": staff.csrf_token, "languages": LANGUAGES, **context},
        status_code=status_code,
        headers=page_headers(request, staff.services),
    )


def _check(form: dict[str, str], max_chars: int) -> tuple[dict[str, str], str | None]:
    """Return the cleaned fields of a reply form and the first error, if any."""
    fields = {
        "language": form.get("language", ""),
        "title": form.get("title", "").strip(),
        "body": form.get("body", ""),
    }
    if fields["language"] not in LANGUAGES:
        return fields, _("Choose the language of the reply.")
    title = fields["title"]
    if not title or len(title) > TITLE_MAX_CHARS:
        return fields, _("Give the reply a title of 1 to %(max)d characters.") % {
            "max": TITLE_MAX_CHARS
        }
    if any(unicodedata.category(char) in ("Cc", "Cf") for char in title):
        return fields, _("The title contains control or format characters.")
    try:
        fields["body"] = clean_body(fields["body"], max_chars=max_chars)
    except ProtocolError:
        return fields, _("Write the reply's text, at most %(max)d characters.") % {
            "max": max_chars
        }
    return fields, None


async def list_replies(request: Request) -> Response:
    """List every saved reply with a form to add one."""
    staff = await staff_request(request, "admin")
    if isinstance(staff, Response):
        return staff
    return await _list_page(request, staff, None, {}, 200)


async def _list_page(
    request: Request,
    staff: Staff,
    error: str | None,
    draft: dict[str, str],
    status_code: int,
) -> Response:
    replies = await staff.services.store.list_saved_replies()
    return _page(
        request,
        staff,
        "replies.html",
        status_code,
        replies=replies,
        error=error,
        draft=draft,
        max_chars=staff.services.settings.max_message_chars,
    )


async def add_reply(request: Request) -> Response:
    checked = await staff_form(request, "admin")
    if isinstance(checked, Response):
        return checked
    staff, form = checked
    fields, error = _check(form, staff.services.settings.max_message_chars)
    if error is not None:
        return await _list_page(request, staff, error, fields, 400)
    reply_id = await staff.services.store.add_saved_reply(
        fields["language"], fields["title"], fields["body"]
    )
    logger.info("admin %d added saved reply %d", staff.volunteer.id, reply_id)
    return RedirectResponse(LIST_PATH, status_code=303)


async def _reply_or_none(staff: Staff, request: Request) -> SavedReply | None:
    return await staff.services.store.get_saved_reply(request.path_params["id"])


async def edit_reply(request: Request) -> Response:
    """Show the form that changes one saved reply."""
    staff = await staff_request(request, "admin")
    if isinstance(staff, Response):
        return staff
    reply = await _reply_or_none(staff, request)
    if reply is None:
        return await _not_found(request, staff)
    draft = {"language": reply.language, "title": reply.title, "body": reply.body}
    return _edit_page(request, staff, reply.id, draft, None, 200)


def _edit_page(
    request: Request,
    staff: Staff,
    reply_id: int,
    draft: dict[str, str],
    error: str | None,
    status_code: int,
) -> Response:
    return _page(
        request,
        staff,
        "reply_edit.html",
        status_code,
        reply_id=reply_id,
        draft=draft,
        error=error,
        max_chars=staff.services.settings.max_message_chars,
    )


async def _not_found(request: Request, staff: Staff) -> Response:
    error = _("This saved reply does not exist. It may have been deleted.")
    return await _list_page(request, staff, error, {}, 404)


async def save_reply(request: Request) -> Response:
    checked = await staff_form(request, "admin")
    if isinstance(checked, Response):
        return checked
    staff, form = checked
    reply_id: int = request.path_params["id"]
    fields, error = _check(form, staff.services.settings.max_message_chars)
    if error is not None:
        return _edit_page(request, staff, reply_id, fields, error, 400)
    updated = await staff.services.store.update_saved_reply(
        reply_id, fields["language"], fields["title"], fields["body"]
    )
    if not updated:
        return await _not_found(request, staff)
    logger.info("admin %d changed saved reply %d", staff.volunteer.id, reply_id)
    return RedirectResponse(LIST_PATH, status_code=303)


async def delete_reply(request: Request) -> Response:
    checked = await staff_form(request, "admin")
    if isinstance(checked, Response):
        return checked
    staff, _form = checked
    reply_id: int = request.path_params["id"]
    if not await staff.services.store.delete_saved_reply(reply_id):
        return await _not_found(request, staff)
    logger.info("admin %d deleted saved reply %d", staff.volunteer.id, reply_id)
    return RedirectResponse(LIST_PATH, status_code=303)


routes: list[BaseRoute] = [
    Route(LIST_PATH, list_replies, methods=["GET"]),
    Route(LIST_PATH, add_reply, methods=["POST"]),
    Route(LIST_PATH + "/{id:int}", edit_reply, methods=["GET"]),
    Route(LIST_PATH + "/{id:int}", save_reply, methods=["POST"]),
    Route(LIST_PATH + "/{id:int}/delete", delete_reply, methods=["POST"]),
]
