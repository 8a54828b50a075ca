"""The statistics page and its CSV exports, for supervisors and admins."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from dashboard.access import staff_request
from dashboard.charts import column_chart, row_chart
from dashboard.common import page_headers, templates
from relay.coverage import WeeklyHours, parse_opening_hours
from relay.i18n import gettext as _
from relay.services import Services
from relay.statistics import (
    DateRange,
    RangeError,
    Report,
    load_report,
    table_csv,
)

logger = logging.getLogger("dashboard.statistics")

DEFAULT_RANGE_DAYS = 30


def opening_hours(services: Services) -> WeeklyHours:
    """Return the weekly hours that coverage is measured against.

    NOTE: one set of hours for the whole service, from ``VSO_OPENING_HOURS``;
    when sites have their own opening hours, pass theirs here instead.
    """
    return parse_opening_hours(services.settings.opening_hours)


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


async def _report(services: Services, request: Request) -> Report:
    """Build the report of the requested range; raises ``RangeError``."""
    zone = ZoneInfo(services.settings.timezone)
    now = datetime.now(UTC)
    return await load_report(
        services.store,
        date_range=requested_range(request, zone, now),
        zone=zone,
        opening_hours=opening_hours(services),
        now=now,
    )


async def statistics_page(request: Request) -> Response:
    """Show every statistic of a date range, with charts and tables."""
    staff = await staff_request(request, "supervisor")
    if isinstance(staff, Response):
        return staff
    services = staff.services
    context: dict[str, object] = {
        "error": None,
        "report": None,
        "charts": [],
        "timezone": services.settings.timezone,
        "opening_hours": services.settings.opening_hours,
    }
    try:
        report = await _report(services, request)
    except RangeError as error:
        fallback = default_range(
            ZoneInfo(services.settings.timezone), datetime.now(UTC)
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
    try:
        report = await _report(staff.services, request)
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
