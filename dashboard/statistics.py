"""The statistics page and its CSV exports, for supervisors and admins."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from dashboard.access import has_role, staff_request
from dashboard.charts import column_chart, row_chart
from dashboard.common import page_headers, templates
from relay import hours
from relay.i18n import gettext as _
from relay.services import Services
from relay.statistics import (
    DateRange,
    RangeError,
    Report,
    load_report,
    table_csv,
)
from relay.store import Site, Store

logger = logging.getLogger("dashboard.statistics")

DEFAULT_RANGE_DAYS = 30


@dataclass(frozen=True)
class SiteHours:
    """One site's opening hours as coverage measured them; None is all hours."""

    site: Site
    schedule: hours.Schedule | None

    def week(self) -> str:
        """Return the weekly hours in words, such as "Monday: 09:00-17:00; …"."""
        if self.schedule is None:
            return ""
        return "; ".join(
            _("%(weekday)s: %(hours)s")
            % {
                "weekday": _(name),
                "hours": hours.format_day_hours(self.schedule, day) or _("closed"),
            }
            for day, name in enumerate(hours.WEEKDAY_NAMES)
        )

    def closed_in(self, date_range: DateRange) -> list[str]:
        """Return the site's closed dates within the range."""
        if self.schedule is None:
            return []
        return [
            day.isoformat()
            for day in self.schedule.closed_dates
            if date_range.first <= day <= date_range.last
        ]


async def site_hours(store: Store) -> list[SiteHours]:
    """Return every site's opening hours, which coverage is measured against."""
    return [
        SiteHours(site, await store.get_site_schedule(site.id))
        for site in await store.list_sites()
    ]


def default_range(zone: ZoneInfo, now: datetime) -> DateRange:
    """Return the last ``DEFAULT_RANGE_DAYS`` local days, today included."""
    today = now.astimezone(zone).date()
    return DateRange(today - timedelta(days=DEFAULT_RANGE_DAYS - 1), today)


def requested_range(request: Request, zone: ZoneInfo, now: datetime) -> DateRange:
    """Return the range in the query, or the default one; raises ``RangeError``."""
    first = request.query_params.get("from")
    last = request.query_params.get("to")
    if not first and not last:
        return default_range(zone, now)
    return DateRange.parse(first or "", last or "")


async def _report(
    services: Services, request: Request, measured: list[SiteHours]
) -> Report:
    """Build the report of the requested range; raises ``RangeError``."""
    zone = ZoneInfo(services.settings.time_zone)
    now = datetime.now(UTC)
    return await load_report(
        services.store,
        date_range=requested_range(request, zone, now),
        zone=zone,
        schedules=[item.schedule for item in measured],
        now=now,
    )


async def statistics_page(request: Request) -> Response:
    """Show every statistic of a date range, with charts and tables."""
    staff = await staff_request(request, "supervisor")
    if isinstance(staff, Response):
        return staff
    services = staff.services
    measured = await site_hours(services.store)
    context: dict[str, object] = {
        "error": None,
        "report": None,
        "charts": [],
        "time_zone": services.settings.time_zone,
        "site_hours": measured,
        "can_edit_hours": has_role(staff.volunteer, "admin"),
    }
    try:
        report = await _report(services, request, measured)
    except RangeError as error:
        fallback = default_range(
            ZoneInfo(services.settings.time_zone), datetime.now(UTC)
        )
        context.update(
            error=str(error),
            first=request.query_params.get("from", "")[:40],
            last=request.query_params.get("to", "")[:40],
            default_first=fallback.first.isoformat(),
        )
        return templates.TemplateResponse(
            request,
            "statistics.html",
            context,
            status_code=400,
            headers=page_headers(request, services),
        )
    first, last = report.date_range.first, report.date_range.last
    logger.info(
        "volunteer %d opened statistics from %s to %s", staff.volunteer.id, first, last
    )
    context.update(
        report=report,
        first=first.isoformat(),
        last=last.isoformat(),
        query=f"from={first.isoformat()}&to={last.isoformat()}",
        charts=_charts(report),
    )
    return templates.TemplateResponse(
        request, "statistics.html", context, headers=page_headers(request, services)
    )


def _charts(report: Report) -> dict[str, object]:
    first, last = report.date_range.first, report.date_range.last
    return {
        "daily": column_chart(
            "chart-daily",
            _("Conversations per day"),
            _(
                "Bars show how many conversations started on each day from"
                " %(first)s to %(last)s."
            )
            % {"first": first, "last": last},
            report.daily_totals,
            _("conversations"),
        ),
        "weekly": column_chart(
            "chart-weekly",
            _("Conversations per week"),
            _("Bars show how many conversations started in each week (from Monday)."),
            report.weekly_totals,
            _("conversations"),
        ),
        "categories": row_chart(
            "chart-categories",
            _("Categories"),
            _("Bars show how many conversations the case notes gave each category."),
            report.category_bars,
            _("conversations"),
        ),
        "referrals": row_chart(
            "chart-referrals",
            _("Referrals"),
            _("Bars show how many conversations led to each referral."),
            report.referral_bars,
            _("conversations"),
        ),
        "coverage": column_chart(
            "chart-coverage",
            _("Coverage of opening hours"),
            _(
                "Bars show, for each day, the percentage of opening hours in which"
                " at least one volunteer was available."
            ),
            report.coverage_bars,
            "%",
        ),
    }


async def statistics_csv(request: Request) -> Response:
    """Send one table of the statistics page as a CSV file."""
    staff = await staff_request(request, "supervisor")
    if isinstance(staff, Response):
        return staff
    measured = await site_hours(staff.services.store)
    try:
        report = await _report(staff.services, request, measured)
    except RangeError as error:
        return PlainTextResponse(
            str(error), status_code=400, headers={"cache-control": "no-store"}
        )
    date_range = report.date_range
    name = request.path_params["table"]
    table = report.tables.get(name)
    if table is None:
        return PlainTextResponse(
            _("There is no table named %(name)s. Use one of: %(names)s.")
            % {"name": name[:40], "names": ", ".join(report.tables)},
            status_code=404,
            headers={"cache-control": "no-store"},
        )
    filename = f"vso-{name}-{_day(date_range.first)}-{_day(date_range.last)}.csv"
    return Response(
        table_csv(table),
        media_type="text/csv; charset=utf-8",
        headers={
            "cache-control": "no-store",
            "content-disposition": f'attachment; filename="{filename}"',
        },
    )


def _day(day: date) -> str:
    return day.isoformat()


routes: list[BaseRoute] = [
    Route("/dashboard/statistics", statistics_page, methods=["GET"]),
    Route("/dashboard/statistics/{table:str}.csv", statistics_csv, methods=["GET"]),
]
