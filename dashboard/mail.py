"""The e-mail conversation page: who wrote, the subject, every message as text,
and whether each reply went out."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from dashboard.access import forbidden, staff_request
from dashboard.bounces import bounce_mark
from dashboard.common import page_headers, templates
from dashboard.inbox import may_read
from relay import protocol
from relay.i18n import gettext as _
from relay.mailstore import MailStore

logger = logging.getLogger("dashboard.mail")


async def mail_thread_page(request: Request) -> Response:
    """Show an e-mail conversation to those who may read it in the inbox."""
    staff = await staff_request(request, "volunteer")
    if isinstance(staff, Response):
        return staff
    store = staff.services.store
    conversation_id = request.path_params["conversation_id"]
    if not protocol.CONVERSATION_ID_PATTERN.fullmatch(conversation_id):
        return _not_found()
    thread = await MailStore(store).get_thread(conversation_id)
    entry = await store.get_inbox_entry(conversation_id)
    if thread is None or entry is None:
        return _not_found()
    if not may_read(staff, entry):
        # The same rule as the inbox: the claimant, supervisors and admins.
        logger.info(
            "volunteer %d may not read %s, claimed by %s",
            staff.volunteer.id,
            conversation_id,
            entry.claimed_by,
        )
        return forbidden()

    messages = await store.messages_after(conversation_id, 0)
    deliveries = await MailStore(store).deliveries(conversation_id)
    # Display names of the volunteers who replied, for the message headings.
    names: dict[int, str] = {}
    for message in messages:
        if message.volunteer_id is not None and message.volunteer_id not in names:
            volunteer = await store.get_volunteer(message.volunteer_id)
            names[message.volunteer_id] = volunteer.display_name if volunteer else ""

    return templates.TemplateResponse(
        request,
        "mail_thread.html",
        {
            "thread": thread,
            "entry": entry,
            "messages": messages,
            "deliveries": deliveries,
            "bounces": {seq: bounce_mark(item) for seq, item in deliveries.items()},
            "names": names,
        },
        headers=page_headers(request, staff.services),
    )


def _not_found() -> Response:
    return PlainTextResponse(
        _("This e-mail conversation was not found."),
        status_code=404,
        headers={"cache-control": "no-store"},
    )


routes: list[BaseRoute] = [
    Route("/dashboard/mail/{conversation_id}", mail_thread_page, methods=["GET"]),
]
