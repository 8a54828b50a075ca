"""The supervision page, and the dashboard socket's supervision and wellbeing
frames.

The page shows a snapshot of the overview that reads without scripts;
``supervision.js`` keeps it live over the dashboard socket. Every supervision
frame re-reads the sender's role from the store, so a role taken away applies
to the next frame of an open socket.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from dashboard.access import has_role, staff_request
from dashboard.common import page_headers, templates
from relay import protocol
from relay.hub import Peer
from relay.pages import serving_origin
from relay.protocol import ProtocolError
from relay.services import Services
from relay.settings import ws_origin
from relay.store import Volunteer

logger = logging.getLogger("dashboard")


def minutes_since(moment: str | None, now: datetime) -> int | None:
    """Return whole minutes from an ISO 8601 UTC time to ``now``, or None."""
    if not moment:
        return None
    start = datetime.strptime(moment, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    return max(0, int((now - start).total_seconds() // 60))


async def supervision_page(request: Request) -> Response:
    staff = await staff_request(request, "supervisor")
    if isinstance(staff, Response):
        return staff
    services = staff.services
    overview = await services.supervision.overview()
    now = datetime.now(UTC)
    for entry in overview["conversations"]:
        since = entry["assigned_at"] or entry["created_at"]
        entry["minutes"] = minutes_since(since, now)
    for volunteer in overview["volunteers"]:
        for period in ("today", "week"):
            seconds = volunteer[f"available_seconds_{period}"]
            volunteer[f"hours_{period}"] = f"{seconds / 3600:.1f}"
    return templates.TemplateResponse(
        request,
        "supervision.html",
        {
            "display_name": staff.volunteer.display_name,
            "csrf_token": staff.csrf_token,
            "overview": overview,
            "ws_url": f"{ws_origin(serving_origin(request, services.settings))}"
            "/dashboard/ws",
        },
        headers=page_headers(request, services),
    )


async def handle_frame(
    services: Services, volunteer: Volunteer, peer: Peer, frame: Any
) -> None:
    """Handle a wellbeing or supervision frame from a dashboard socket.

    Raises ``ProtocolError`` (``forbidden``) when a supervision frame comes
    from someone who is not, or no longer, a supervisor or admin.
    """
    supervision = services.supervision
    match frame:
        case protocol.NeedSupport():
            await supervision.need_support(volunteer.id, frame.conversation)
            return
        case protocol.HardChat():
            await supervision.mark_hard(volunteer.id, frame.conversation)
            return
        case protocol.EndBreak():
            await supervision.end_break(volunteer.id)
            return
    if not isinstance(frame, protocol.SUPERVISOR_FRAMES):
        raise TypeError(f"no handler for the frame {type(frame).__name__}")
    await _check_supervisor(services, volunteer.id, type(frame).__name__)
    match frame:
        case protocol.Supervise():
            await supervision.subscribe(peer)
        case protocol.Watch():
            await supervision.watch(peer, volunteer.id, frame.conversation)
        case protocol.Unwatch():
            supervision.unwatch(peer, frame.conversation)
        case protocol.WhisperNote():
            await supervision.whisper(volunteer.id, frame.conversation, frame.body)
        case protocol.Join():
            await supervision.join(peer, volunteer.id, frame.conversation)
        case protocol.Leave():
            await supervision.leave(peer, volunteer.id, frame.conversation)
        case protocol.SupervisorSend():
            await services.chat.supervisor_send(volunteer.id, frame.send)
        case protocol.Transfer():
            await supervision.transfer(
                volunteer.id, frame.conversation, frame.volunteer
            )
        case protocol.Acknowledge():
            await supervision.acknowledge(volunteer.id, frame.alert)


async def _check_supervisor(services: Services, volunteer_id: int, name: str) -> None:
    current = await services.store.get_volunteer(volunteer_id)
    if current is None or not current.active or not has_role(current, "supervisor"):
        logger.warning(
            "volunteer %d rejected: %s needs a supervisor", volunteer_id, name
        )
        raise ProtocolError("forbidden", "Only supervisors can do this.")


routes: list[BaseRoute] = [
    Route("/dashboard/supervision", supervision_page, methods=["GET"]),
]
