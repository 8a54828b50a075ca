"""The admin page of a site's opening hours and closed dates.

Admins only (``staff_form(request, "admin")``). Hours are typed per weekday
as ``09:00-13:00, 17:00-21:00`` in the site's time zone. An invalid form is
shown again with everything as typed, and the first problem named.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from dashboard.access import Staff, staff_form, staff_request
from dashboard.common import page_headers, templates
from relay import hours
from relay.i18n import gettext as _
from relay.store import Site

logger = logging.getLogger("dashboard.hours")


async def _site(request: Request, staff: Staff) -> Site | None:
    try:
        site_id = int(request.path_params["site_id"])
    except ValueError:
        return None
    return await staff.services.store.get_site(site_id)


def _fields_of(schedule: hours.Schedule | None) -> dict[str, object]:
    shown = schedule or hours.Schedule()
    return {
        "limited": schedule is not None,
        "time_zone": shown.time_zone,
        "days": [hours.format_day_hours(shown, day) for day in range(7)],
        "closed_dates": "\n".join(day.isoformat() for day in shown.closed_dates),
    }


def _render(
    request: Request,
    staff: Staff,
    site: Site,
    fields: dict[str, object],
    schedule: hours.Schedule | None,
    *,
    error: str | None = None,
    saved: bool = False,
    status_code: int = 200,
) -> Response:
    now = datetime.now(UTC)
    zone = schedule.zone if schedule else hours.Schedule().zone
    opening = hours.next_opening(schedule, now)
    return templates.TemplateResponse(
        request,
        "hours.html",
        {
            "site": site,
            "fields": fields,
            "weekday_names": [_(name) for name in hours.WEEKDAY_NAMES],
            "open_now": hours.is_open(schedule, now),
            "next_opening": hours.describe_moment(opening) if opening else None,
            "local_now": now.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z"),
            "csrf_token": staff.csrf_token,
            "error": error,
            "saved": saved,
        },
        status_code=status_code,
        headers=page_headers(request, staff.services),
    )


def _not_found(request: Request, staff: Staff) -> Response:
    return templates.TemplateResponse(
        request,
        "hours.html",
        {"site": None, "error": _("This site does not exist.")},
        status_code=404,
        headers=page_headers(request, staff.services),
    )


async def hours_page(request: Request) -> Response:
    """GET /dashboard/sites/{site_id}/hours: the form with the stored hours."""
    staff = await staff_request(request, "admin")
    if isinstance(staff, Response):
        return staff
    site = await _site(request, staff)
    if site is None:
        return _not_found(request, staff)
    schedule = await staff.services.store.get_site_schedule(site.id)
    return _render(
        request,
        staff,
        site,
        _fields_of(schedule),
        schedule,
        saved=request.query_params.get("saved") == "1",
    )


def parse_schedule(form: dict[str, str]) -> hours.Schedule | None:
    """Read the hours form; None when the site is to be open at all hours.

    Raises ``ValueError`` naming the first invalid field.
    """
    if form.get("limited") != "yes":
        return None
    time_zone = hours.check_time_zone(form.get("time_zone", ""))
    intervals: list[hours.Interval] = []
    for day, name in enumerate(hours.WEEKDAY_NAMES):
        try:
            intervals.extend(hours.parse_day_hours(day, form.get(f"day{day}", "")))
        except ValueError as error:
            raise ValueError(f"{_(name)}: {error}") from None
    closed = hours.parse_closed_dates(form.get("closed_dates", ""))
    return hours.Schedule(time_zone, tuple(intervals), tuple(closed))


async def save_hours(request: Request) -> Response:
    """POST /dashboard/sites/{site_id}/hours: replace the site's hours."""
    checked = await staff_form(request, "admin")
    if isinstance(checked, Response):
        return checked
    staff, form = checked
    site = await _site(request, staff)
    if site is None:
        return _not_found(request, staff)
    try:
        schedule = parse_schedule(form)
    except ValueError as error:
        fields: dict[str, object] = {
            "limited": form.get("limited") == "yes",
            "time_zone": form.get("time_zone", ""),
            "days": [form.get(f"day{day}", "") for day in range(7)],
            "closed_dates": form.get("closed_dates", ""),
        }
        stored = await staff.services.store.get_site_schedule(site.id)
        return _render(
            request, staff, site, fields, stored, error=str(error), status_code=400
        )
    await staff.services.store.set_site_schedule(site.id, schedule)
    logger.info(
        "volunteer %d set the opening hours of site %d", staff.volunteer.id, site.id
    )
    return RedirectResponse(f"/dashboard/sites/{site.id}/hours?saved=1", 303)


async def hours_index(request: Request) -> Response:
    """GET /dashboard/hours: every site, linked to its hours page."""
    staff = await staff_request(request, "admin")
    if isinstance(staff, Response):
        return staff
    sites = await staff.services.store.list_sites()
    return templates.TemplateResponse(
        request,
        "hours.html",
        {"site": None, "sites": sites, "error": None},
        headers=page_headers(request, staff.services),
    )


routes: list[BaseRoute] = [
    Route("/dashboard/hours", hours_index, methods=["GET"]),
    Route("/dashboard/sites/{site_id:int}/hours", hours_page, methods=["GET"]),
    Route("/dashboard/sites/{site_id:int}/hours", save_hours, methods=["POST"]),
]
