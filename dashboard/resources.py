"""Resources in the chat panel: search of the hub and saved replies, resource
cards sent to visitors, and the admins' view of out-of-date directory entries."""

from __future__ import annotations

import datetime
import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from dashboard.access import has_role, staff_request
from dashboard.common import page_headers, templates
from relay import protocol
from relay.protocol import ProtocolError
from relay.resources import LANGUAGES, card_as_text, fold_text
from relay.services import Services
from relay.store import Volunteer

logger = logging.getLogger("dashboard.resources")

MAX_QUERY_CHARS = 100
MAX_REPLY_RESULTS = 20
NO_STORE = {"cache-control": "no-store"}


async def share_resource(
    services: Services, volunteer_id: int, frame: protocol.ShareResource
) -> None:
    """Send a resource card into one of the volunteer's conversations.

    The relay builds the card from its own content by id, so a card contains
    only what the directory or hub page contains. Raises ``ProtocolError``:
    ``not_found`` for an unknown resource or language, ``message_too_long``
    when the card's text is over the message limit, and whatever
    ``volunteer_send`` raises for a conversation that is not theirs.
    """
    card = services.content.card(frame.resource, frame.language)
    if card is None:
        raise ProtocolError(
            "not_found",
            "There is no resource with this id in this language.",
            client_id=frame.client_id,
            conversation=frame.conversation,
        )
    text = card_as_text(card, frame.language, services.settings.public_origin)
    try:
        body = protocol.clean_body(text, max_chars=services.settings.max_message_chars)
    except ProtocolError as error:
        error.client_id = frame.client_id
        error.conversation = frame.conversation
        raise
    await services.chat.volunteer_send(
        volunteer_id,
        protocol.Send(frame.client_id, body, frame.conversation),
        resource=card,
    )
    logger.info(
        "volunteer %d sent a resource card in %s", volunteer_id, frame.conversation
    )


async def search(request: Request) -> Response:
    """Return hub results and saved replies matching ``q`` in language ``lang``.

    An empty query returns no hub results and the first saved replies of the
    language, so the panel can list them before the volunteer types.
    """
    staff = await staff_request(request, "volunteer")
    if isinstance(staff, Response):
        return staff
    query = request.query_params.get("q", "").strip()
    language = request.query_params.get("lang", "en")
    if language not in LANGUAGES or len(query) > MAX_QUERY_CHARS:
        return JSONResponse(
            {
                "error": f"Give lang as one of {', '.join(LANGUAGES)} and q of at"
                f" most {MAX_QUERY_CHARS} characters."
            },
            status_code=400,
            headers=NO_STORE,
        )
    services = staff.services
    resources = [
        {
            "id": result.id,
            "kind": result.kind,
            "title": result.title,
            "summary": result.summary,
        }
        for result in services.content.search(query, language)
    ]
    words = fold_text(query).split()
    replies = [
        {"id": reply.id, "title": reply.title, "body": reply.body}
        for reply in await services.store.list_saved_replies(language)
        if all(word in fold_text(f"{reply.title} {reply.body}") for word in words)
    ][:MAX_REPLY_RESULTS]
    return JSONResponse({"resources": resources, "replies": replies}, headers=NO_STORE)


def stale_count(volunteer: Volunteer, services: Services) -> int:
    """Return how many directory entries need checking, for admins; else 0."""
    if not has_role(volunteer, "admin"):
        return 0
    today = datetime.datetime.now(datetime.UTC).date()
    max_age = services.settings.content_max_age_days
    return len(services.content.stale_services(today, max_age))


async def content_status(request: Request) -> Response:
    """Show admins the directory entries whose details need checking."""
    staff = await staff_request(request, "admin")
    if isinstance(staff, Response):
        return staff
    services = staff.services
    today = datetime.datetime.now(datetime.UTC).date()
    max_age = services.settings.content_max_age_days
    stale: list[dict[str, Any]] = [
        {
            "id": service.id,
            "name": service.name["en"],
            "checked": service.checked.isoformat() if service.checked else None,
            "source": service.source,
        }
        for service in services.content.stale_services(today, max_age)
    ]
    return templates.TemplateResponse(
        request,
        "content_status.html",
        {
            "stale": stale,
            "max_age_days": max_age,
            "directory_path": str(services.content.directory_path),
            "service_count": len(services.content.services),
        },
        headers=page_headers(request, services),
    )


routes: list[BaseRoute] = [
    Route("/dashboard/resources/search", search, methods=["GET"]),
    Route("/dashboard/content", content_status, methods=["GET"]),
]
