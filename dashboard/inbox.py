"""The volunteers' inbox of messages and e-mails: list by state, claim, reply, close.

Server-rendered pages with plain forms. Every post goes through
``staff_form`` and responds with a redirect (Post/Redirect/Get), or with the
page and an error that keeps the reply's text.

Who may read what follows the chat: every volunteer sees every row of the
inbox with who claimed it, so that nobody answers a message unknowingly, but
the text of a conversation claimed by another volunteer is shown only to
supervisors and admins. A volunteer who takes a conversation over claims it
first, explicitly, and then reads it.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from dashboard.access import Staff, has_role, staff_form, staff_request
from dashboard.bounces import bounce_mark
from dashboard.common import page_headers, templates
from relay import protocol
from relay.i18n import gettext as _
from relay.inbox import InboxError
from relay.mailstore import MailStore
from relay.nojs import new_form_key
from relay.store import INBOX_STATES, InboxEntry

logger = logging.getLogger("dashboard.inbox")

PREVIEW_CHARS = 140


def _state_names() -> dict[str, str]:
    return {
        "waiting": _("Waiting"),
        "claimed": _("Claimed"),
        "answered": _("Answered"),
        "closed": _("Closed"),
    }


def _channel_names() -> dict[str, str]:
    return {"message": _("Message"), "email": _("E-mail")}


def may_read(staff: Staff, entry: InboxEntry) -> bool:
    """Return True when ``staff`` may read a conversation's text."""
    return entry.claimed_by in (None, staff.volunteer.id) or has_role(
        staff.volunteer, "supervisor"
    )


def _claim_label(staff: Staff, entry: InboxEntry) -> str:
    if entry.claimed_by is None:
        return _("Not claimed")
    if entry.claimed_by == staff.volunteer.id:
        return _("Claimed by you")
    return _("Claimed by %(name)s") % {"name": entry.claimed_by_name or "?"}


def _valid_id(conversation_id: str) -> bool:
    return bool(protocol.CONVERSATION_ID_PATTERN.fullmatch(conversation_id))


async def inbox_page(request: Request) -> Response:
    """GET /dashboard/inbox?state=waiting: one state's conversations."""
    staff = await staff_request(request, "volunteer")
    if isinstance(staff, Response):
        return staff
    store = staff.services.store
    state = request.query_params.get("state", "waiting")
    if state not in INBOX_STATES:
        state = "waiting"
    entries = await store.list_inbox([state])
    sites = {site.id: site.name for site in await store.list_sites()}
    undelivered = await MailStore(store).undelivered(
        [entry.conversation_id for entry in entries if entry.channel == "email"]
    )
    rows = []
    for entry in entries:
        readable = may_read(staff, entry)
        rows.append(
            {
                "entry": entry,
                "site_name": sites.get(entry.site_id, "?"),
                "channel": _channel_names().get(entry.channel, entry.channel),
                "claim_label": _claim_label(staff, entry),
                "mine": entry.claimed_by == staff.volunteer.id,
                "preview": await _preview(staff, entry) if readable else None,
                "undelivered": entry.conversation_id in undelivered,
            }
        )
    return templates.TemplateResponse(
        request,
        "inbox.html",
        {
            "state": state,
            "state_names": _state_names(),
            "counts": await store.count_inbox(),
            "rows": rows,
            "csrf_token": staff.csrf_token,
            "display_name": staff.volunteer.display_name,
        },
        headers=page_headers(request, staff.services),
    )


async def _preview(staff: Staff, entry: InboxEntry) -> str:
    """Return the start of the newest message from the visitor."""
    messages = await staff.services.store.messages_after(entry.conversation_id, 0)
    visitor_messages = [m for m in messages if m.sender == "visitor"]
    if not visitor_messages:
        return ""
    text = " ".join(visitor_messages[-1].body.split())
    if len(text) > PREVIEW_CHARS:
        text = text[: PREVIEW_CHARS - 1] + "…"
    return text


async def conversation_page(request: Request) -> Response:
    """GET /dashboard/inbox/{id}: one conversation with its forms."""
    staff = await staff_request(request, "volunteer")
    if isinstance(staff, Response):
        return staff
    return await _render_conversation(request, staff)


async def _render_conversation(
    request: Request,
    staff: Staff,
    *,
    error: str | None = None,
    draft: str = "",
    offer_take_over: bool = False,
    status_code: int = 200,
) -> Response:
    conversation_id = request.path_params["conversation_id"]
    store = staff.services.store
    entry = (
        await store.get_inbox_entry(conversation_id)
        if _valid_id(conversation_id)
        else None
    )
    if entry is None:
        return templates.TemplateResponse(
            request,
            "inbox_conversation.html",
            {"entry": None, "error": _("This conversation does not exist.")},
            status_code=404,
            headers=page_headers(request, staff.services),
        )
    site = await store.get_site(entry.site_id)
    readable = may_read(staff, entry)
    items: list[dict[str, Any]] = []
    if readable:
        deliveries = (
            await MailStore(store).deliveries(entry.conversation_id)
            if entry.channel == "email"
            else {}
        )
        for message in await store.messages_after(entry.conversation_id, 0):
            author = (
                _("Visitor")
                if message.sender == "visitor"
                else await staff.services.chat.display_name(message.volunteer_id or 0)
            )
            items.append(
                {
                    "sender": message.sender,
                    "author": author,
                    "body": message.body,
                    "sent_at": message.created_at,
                    "bounce": bounce_mark(deliveries.get(message.seq))
                    if message.sender == "volunteer"
                    else None,
                }
            )
    notice = {
        "claimed": _("Claimed."),
        "replied": _("Reply sent."),
        "released": _("Released; the conversation waits for a volunteer again."),
        "closed": _("Closed."),
        "blocked": _("The reply code is blocked and the conversation closed."),
    }.get(request.query_params.get("done", ""))
    return templates.TemplateResponse(
        request,
        "inbox_conversation.html",
        {
            "entry": entry,
            "site_name": site.name if site else "?",
            "channel": _channel_names().get(entry.channel, entry.channel),
            "state_name": _state_names().get(entry.state, entry.state),
            "claim_label": _claim_label(staff, entry),
            "mine": entry.claimed_by == staff.volunteer.id,
            "claimed_by_other": entry.claimed_by not in (None, staff.volunteer.id),
            "readable": readable,
            "items": items,
            "csrf_token": staff.csrf_token,
            "form_key": new_form_key(),
            "error": error,
            "notice": notice,
            "draft": draft,
            "offer_take_over": offer_take_over,
            "max_chars": staff.services.settings.max_message_chars,
        },
        status_code=status_code,
        headers=page_headers(request, staff.services),
    )


def _done(conversation_id: str, outcome: str) -> Response:
    return RedirectResponse(
        f"/dashboard/inbox/{conversation_id}?done={outcome}", status_code=303
    )


def _error_text(error: InboxError, max_chars: int) -> str:
    if error.code == "claimed":
        return _(
            "%(name)s claimed this conversation, so your reply was not sent. Tick"
            " \u201cTake it over\u201d to answer it yourself."
        ) % {"name": error.details.get("claimed_by_name") or _("Another volunteer")}
    if error.code == "message_too_long":
        return _(
            "The reply is too long. Shorten it to %(count)d characters or fewer."
        ) % {"count": max_chars}
    return {
        "empty_message": _("Write a reply before sending."),
        "closed": _("This conversation is closed."),
        "storage_failed": _("The reply could not be saved. Please send it again."),
    }.get(error.code, _("The form was incomplete. Please try again."))


async def _form(request: Request) -> tuple[Staff, dict[str, str], str] | Response:
    checked = await staff_form(request, "volunteer")
    if isinstance(checked, Response):
        return checked
    staff, form = checked
    conversation_id = request.path_params["conversation_id"]
    if not _valid_id(conversation_id):
        return await _render_conversation(request, staff, status_code=404)
    return staff, form, conversation_id


async def claim(request: Request) -> Response:
    """POST /dashboard/inbox/{id}/claim: claim it, or take it over."""
    checked = await _form(request)
    if isinstance(checked, Response):
        return checked
    staff, form, conversation_id = checked
    try:
        await staff.services.inbox.claim(
            conversation_id,
            staff.volunteer.id,
            take_over=form.get("take_over") == "yes",
        )
    except InboxError as error:
        text = (
            _("%(name)s claimed this conversation first.")
            % {"name": error.details.get("claimed_by_name") or _("Another volunteer")}
            if error.code == "claimed"
            else _error_text(error, 0)
        )
        return await _render_conversation(
            request, staff, error=text, offer_take_over=True, status_code=409
        )
    return _done(conversation_id, "claimed")


async def reply(request: Request) -> Response:
    """POST /dashboard/inbox/{id}/reply: send a reply; a conversation someone
    else claimed is refused unless ``take_over`` is ticked."""
    checked = await _form(request)
    if isinstance(checked, Response):
        return checked
    staff, form, conversation_id = checked
    body = form.get("body", "")
    try:
        await staff.services.inbox.reply(
            conversation_id,
            staff.volunteer.id,
            form.get("key", ""),
            body,
            take_over=form.get("take_over") == "yes",
        )
    except InboxError as error:
        status = {"claimed": 409, "closed": 409, "storage_failed": 503}.get(
            error.code, 400
        )
        return await _render_conversation(
            request,
            staff,
            error=_error_text(error, staff.services.settings.max_message_chars),
            draft=body,
            offer_take_over=error.code == "claimed",
            status_code=status,
        )
    return _done(conversation_id, "replied")


async def release(request: Request) -> Response:
    """POST /dashboard/inbox/{id}/release: give up one's own claim."""
    checked = await _form(request)
    if isinstance(checked, Response):
        return checked
    staff, _form_fields, conversation_id = checked
    if not await staff.services.inbox.release(conversation_id, staff.volunteer.id):
        return await _render_conversation(
            request,
            staff,
            error=_("Only the volunteer who claimed it can release it."),
            status_code=409,
        )
    return _done(conversation_id, "released")


async def close(request: Request) -> Response:
    """POST /dashboard/inbox/{id}/close: close it; only its claimant, an
    unclaimed one, or a supervisor."""
    checked = await _form(request)
    if isinstance(checked, Response):
        return checked
    staff, _form_fields, conversation_id = checked
    entry = await staff.services.store.get_inbox_entry(conversation_id)
    if entry is not None and not may_read(staff, entry):
        return await _render_conversation(
            request,
            staff,
            error=_("Take this conversation over before closing it."),
            offer_take_over=True,
            status_code=409,
        )
    if not await staff.services.inbox.close(conversation_id, staff.volunteer.id):
        return await _render_conversation(
            request,
            staff,
            error=_("This conversation is closed."),
            status_code=409,
        )
    return _done(conversation_id, "closed")


async def block(request: Request) -> Response:
    """POST /dashboard/inbox/{id}/block: block the visitor's reply code."""
    checked = await _form(request)
    if isinstance(checked, Response):
        return checked
    staff, form, conversation_id = checked
    entry = await staff.services.store.get_inbox_entry(conversation_id)
    if entry is not None and not may_read(staff, entry):
        return await _render_conversation(
            request,
            staff,
            error=_("Take this conversation over before blocking its code."),
            offer_take_over=True,
            status_code=409,
        )
    if form.get("confirm") != "yes":
        return await _render_conversation(
            request,
            staff,
            error=_("Tick the box to confirm the block."),
            status_code=400,
        )
    if not await staff.services.inbox.block(conversation_id, staff.volunteer.id):
        return await _render_conversation(
            request,
            staff,
            error=_("This reply code is blocked already."),
            status_code=409,
        )
    return _done(conversation_id, "blocked")


routes: list[BaseRoute] = [
    Route("/dashboard/inbox", inbox_page, methods=["GET"]),
    Route("/dashboard/inbox/{conversation_id}", conversation_page, methods=["GET"]),
    Route("/dashboard/inbox/{conversation_id}/claim", claim, methods=["POST"]),
    Route("/dashboard/inbox/{conversation_id}/reply", reply, methods=["POST"]),
    Route("/dashboard/inbox/{conversation_id}/release", release, methods=["POST"]),
    Route("/dashboard/inbox/{conversation_id}/close", close, methods=["POST"]),
    Route("/dashboard/inbox/{conversation_id}/block", block, methods=["POST"]),
]
