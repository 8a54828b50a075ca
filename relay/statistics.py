"""Statistics over conversations: counts, waits, durations, labels and coverage.

``load_report`` reads the rows from the store; everything else here is pure
and turns rows into tables, so it is tested without a database. Days and
weeks are local days in the service's time zone (``VSO_TIME_ZONE``), so a day
that changes to or from daylight saving time has 23 or 25 hours.
``docs/statistics.md`` defines each number.
"""

from __future__ import annotations

import csv
import io
import math
import statistics as pystatistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from relay.casestore import CaseStore, Label, StatisticRow
from relay.coverage import coverage_by_day, local_midnight
from relay.hours import Schedule
from relay.i18n import gettext as _
from relay.store import Store

MAX_RANGE_DAYS = 366
FIRST_DATE = date(2000, 1, 1)
LAST_DATE = date(2999, 12, 31)
CHANNELS = ("chat", "message", "email")
Cell = str | int | float

# Spreadsheets run a cell that starts with one of these as a formula.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class RangeError(ValueError):
    """A date range is malformed, reversed or too long."""


def channel_of(row: StatisticRow) -> str:
    """Return the channel a conversation counts under.

    Rows keep the conversations' ``channel`` column, which is 'chat' for every
    conversation of the live chat; any value outside ``CHANNELS`` counts as chat.
    """
    return row.channel if row.channel in CHANNELS else "chat"


@dataclass(frozen=True)
class DateRange:
    """Local days from ``first`` to ``last``, both included."""

    first: date
    last: date

    @classmethod
    def parse(cls, first_text: str, last_text: str) -> DateRange:
        """Parse two ``YYYY-MM-DD`` dates; raise ``RangeError`` with the reason."""
        first = _parse_date(first_text, _("start date"))
        last = _parse_date(last_text, _("end date"))
        if last < first:
            raise RangeError(
                _(
                    "The end date %(last)s is before the start date %(first)s."
                    " Swap them."
                )
                % {"last": last.isoformat(), "first": first.isoformat()}
            )
        days = (last - first).days + 1
        if days > MAX_RANGE_DAYS:
            raise RangeError(
                _("The range has %(days)d days; choose at most %(max)d.")
                % {"days": days, "max": MAX_RANGE_DAYS}
            )
        return cls(first, last)

    def days(self) -> list[date]:
        return [
            self.first + timedelta(days=offset)
            for offset in range((self.last - self.first).days + 1)
        ]

    def utc_bounds(self, zone: ZoneInfo) -> tuple[datetime, datetime]:
        """Return the UTC instants of the first day's start and the day after last."""
        return local_midnight(self.first, zone), local_midnight(
            self.last + timedelta(days=1), zone
        )


def _parse_date(text: str, name: str) -> date:
    try:
        day = date.fromisoformat(text.strip())
    except ValueError:
        raise RangeError(
            _("The %(name)s %(value)r is invalid; use the form 2026-01-31.")
            % {"name": name, "value": text[:40]}
        ) from None
    # Far dates would overflow the time zone arithmetic near year 1 and 9999.
    if not FIRST_DATE <= day <= LAST_DATE:
        raise RangeError(
            _("The %(name)s %(value)s is out of range; use %(first)s to %(last)s.")
            % {
                "name": name,
                "value": day.isoformat(),
                "first": FIRST_DATE.isoformat(),
                "last": LAST_DATE.isoformat(),
            }
        )
    return day


def minute_text(moment: datetime) -> str:
    """Return a UTC instant as ``YYYY-MM-DDTHH:MMZ``, as statistics rows store it."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


def parse_utc(text: str) -> datetime:
    """Parse a stored UTC time: ``utc_now`` output or ``YYYY-MM-DDTHH:MMZ``."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def local_day(started_at: str, zone: ZoneInfo) -> date:
    return parse_utc(started_at).astimezone(zone).date()


def week_start(day: date) -> date:
    """Return the Monday of the ISO week that contains ``day``."""
    return day - timedelta(days=day.weekday())


def nearest_rank(values: Sequence[float], fraction: float) -> float:
    """Return the nearest-rank percentile: the ceil(fraction × n)-th smallest."""
    if not values:
        raise ValueError("No values to take a percentile of.")
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Table:
    """One table of the statistics page and its CSV export."""

    name: str
    title: str
    columns: tuple[str, ...]
    rows: list[tuple[Cell, ...]]


@dataclass(frozen=True)
class Bar:
    label: str
    value: float


@dataclass
class Report:
    """Every table of the statistics page for one date range."""

    date_range: DateRange
    tables: dict[str, Table] = field(default_factory=dict)
    daily_totals: list[Bar] = field(default_factory=list)
    weekly_totals: list[Bar] = field(default_factory=list)
    category_bars: list[Bar] = field(default_factory=list)
    referral_bars: list[Bar] = field(default_factory=list)
    coverage_bars: list[Bar] = field(default_factory=list)


@dataclass(frozen=True)
class Summary:
    """Totals over the whole range; seconds are None when nothing was measured."""

    conversations: int
    closed: int
    answered: int
    missed: int
    wait_median: float | None
    wait_p90: float | None
    duration_median: float | None
    duration_p90: float | None


def summarise(rows: Iterable[StatisticRow]) -> Summary:
    """Count conversations and measure waits and durations.

    A conversation is missed when it closed before anyone answered. Waits are
    times to the first answer of answered conversations; durations run from the
    first answer to the end of closed, answered ones.
    """
    rows = list(rows)
    closed = [row for row in rows if row.total_seconds is not None]
    waits = [float(row.wait_seconds) for row in rows if row.wait_seconds is not None]
    durations = [
        float(row.total_seconds - row.wait_seconds)
        for row in closed
        if row.total_seconds is not None and row.wait_seconds is not None
    ]
    return Summary(
        conversations=len(rows),
        closed=len(closed),
        answered=len(waits),
        missed=sum(1 for row in closed if row.wait_seconds is None),
        wait_median=pystatistics.median(waits) if waits else None,
        wait_p90=nearest_rank(waits, 0.9) if waits else None,
        duration_median=pystatistics.median(durations) if durations else None,
        duration_p90=nearest_rank(durations, 0.9) if durations else None,
    )


def build_report(
    rows: Sequence[StatisticRow],
    *,
    date_range: DateRange,
    zone: ZoneInfo,
    site_names: dict[int, str],
    labels: Sequence[Label],
    availability: Sequence[tuple[datetime, datetime]],
    schedules: Sequence[Schedule | None],
    now: datetime,
) -> Report:
    """Build every table for conversations that started within ``date_range``.

    ``availability`` holds UTC intervals when a volunteer was available; open
    ones end at ``now``. ``schedules`` contains each site's opening hours, or
    None for a site open at all hours. Coverage counts the time when any site
    is open, up to ``now``.
    """
    report = Report(date_range)
    days = date_range.days()
    in_range = [
        row
        for row in rows
        if date_range.first <= local_day(row.started_at, zone) <= date_range.last
    ]

    def site_name(site_id: int) -> str:
        return site_names.get(site_id, _("Site %(id)d") % {"id": site_id})

    per_day: Counter[tuple[date, str, str]] = Counter()
    missed_day: Counter[tuple[date, str, str]] = Counter()
    per_week: Counter[tuple[date, str, str]] = Counter()
    missed_week: Counter[tuple[date, str, str]] = Counter()
    for row in in_range:
        day = local_day(row.started_at, zone)
        key = (day, site_name(row.site_id), channel_of(row))
        week_key = (week_start(day), key[1], key[2])
        per_day[key] += 1
        per_week[week_key] += 1
        if row.total_seconds is not None and row.wait_seconds is None:
            missed_day[key] += 1
            missed_week[week_key] += 1
    count_columns = (
        _("day"),
        _("site"),
        _("channel"),
        _("conversations"),
        _("missed"),
    )
    report.tables["daily"] = Table(
        "daily",
        _("Conversations per day"),
        count_columns,
        [
            (day.isoformat(), site, channel, count, missed_day[(day, site, channel)])
            for (day, site, channel), count in sorted(per_day.items())
        ],
    )
    report.tables["weekly"] = Table(
        "weekly",
        _("Conversations per week"),
        (_("week starting"), *count_columns[1:]),
        [
            (day.isoformat(), site, channel, count, missed_week[(day, site, channel)])
            for (day, site, channel), count in sorted(per_week.items())
        ],
    )
    daily_total = Counter(local_day(row.started_at, zone) for row in in_range)
    report.daily_totals = [Bar(day.isoformat(), daily_total[day]) for day in days]
    weeks = sorted({week_start(day) for day in days})
    weekly_total = Counter(week_start(day) for day in daily_total.elements())
    report.weekly_totals = [Bar(week.isoformat(), weekly_total[week]) for week in weeks]

    summary = summarise(in_range)
    report.tables["summary"] = Table(
        "summary",
        _("Summary"),
        (_("measure"), _("value")),
        [
            (_("conversations"), summary.conversations),
            (_("closed conversations"), summary.closed),
            (_("answered conversations"), summary.answered),
            (_("missed conversations"), summary.missed),
            (_("median wait (seconds)"), _number(summary.wait_median)),
            (_("90th percentile wait (seconds)"), _number(summary.wait_p90)),
            (_("median duration (seconds)"), _number(summary.duration_median)),
            (_("90th percentile duration (seconds)"), _number(summary.duration_p90)),
        ],
    )
    channel_rows: list[tuple[Cell, ...]] = []
    for channel in CHANNELS:
        part = summarise(row for row in in_range if channel_of(row) == channel)
        if part.conversations:
            channel_rows.append(
                (
                    channel,
                    part.conversations,
                    part.answered,
                    part.missed,
                    _number(part.wait_median),
                    _number(part.wait_p90),
                    _number(part.duration_median),
                    _number(part.duration_p90),
                )
            )
    report.tables["channels"] = Table(
        "channels",
        _("Waits and durations by channel"),
        (
            _("channel"),
            _("conversations"),
            _("answered"),
            _("missed"),
            _("median wait (seconds)"),
            _("90th percentile wait (seconds)"),
            _("median duration (seconds)"),
            _("90th percentile duration (seconds)"),
        ),
        channel_rows,
    )

    for kind, name, title in (
        ("category", "categories", _("Categories")),
        ("referral", "referrals", _("Referrals")),
    ):
        counts = Counter(label_id for row in in_range for label_id in row.label_ids)
        table_rows: list[tuple[Cell, ...]] = []
        bars = []
        for label in labels:
            if label.kind != kind:
                continue
            # A retired label still counts where notes chose it.
            if label.retired and not counts[label.id]:
                continue
            shown = (
                _("%(name)s (retired)") % {"name": label.name}
                if label.retired
                else label.name
            )
            table_rows.append((shown, counts[label.id]))
            bars.append(Bar(shown, counts[label.id]))
        report.tables[name] = Table(
            name, title, (_("label"), _("conversations")), table_rows
        )
        if kind == "category":
            report.category_bars = bars
        else:
            report.referral_bars = bars

    helped = Counter(row.helped for row in in_range if row.helped is not None)
    ratings = Counter(row.rating for row in in_range if row.rating is not None)
    report.tables["feedback"] = Table(
        "feedback",
        _("Post-chat question"),
        (_("answer"), _("visitors")),
        [
            (_("answered the question"), sum(1 for row in in_range if _answered(row))),
            (_("got the help they needed: yes"), helped[True]),
            (_("got the help they needed: no"), helped[False]),
            *[
                (_("rating %(rating)d of 5") % {"rating": rating}, ratings[rating])
                for rating in range(1, 6)
            ],
        ],
    )

    coverage_rows = coverage_by_day(days, zone, availability, schedules, now)
    report.tables["coverage"] = Table(
        "coverage",
        _("Coverage of opening hours"),
        (_("day"), _("open minutes"), _("covered minutes"), _("coverage (%)")),
        [
            (
                day.isoformat(),
                round(open_seconds / 60),
                round(covered_seconds / 60),
                _percent(covered_seconds, open_seconds),
            )
            for day, open_seconds, covered_seconds in coverage_rows
        ],
    )
    total_open = sum(item[1] for item in coverage_rows)
    total_covered = sum(item[2] for item in coverage_rows)
    report.tables["coverage"].rows.append(
        (
            _("whole range"),
            round(total_open / 60),
            round(total_covered / 60),
            _percent(total_covered, total_open),
        )
    )
    report.coverage_bars = [
        Bar(day.isoformat(), round(100 * covered / opened, 1) if opened else 0.0)
        for day, opened, covered in coverage_rows
    ]
    return report


async def load_report(
    store: Store,
    *,
    date_range: DateRange,
    zone: ZoneInfo,
    schedules: Sequence[Schedule | None],
    now: datetime,
) -> Report:
    """Read the numbers of ``date_range`` from the store and build every table.

    ``schedules`` are the sites' opening hours that coverage is measured
    against, one per site, None for a site open at all hours.
    """
    cases = CaseStore(store)
    start, end = date_range.utc_bounds(zone)
    rows = await cases.statistic_rows(minute_text(start), minute_text(end))
    intervals = await cases.availability_between(
        start.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        end.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
    )
    availability = [
        (parse_utc(opened), parse_utc(closed) if closed else now)
        for opened, closed in intervals
    ]
    sites = {site.id: site.name for site in await store.list_sites()}
    return build_report(
        rows,
        date_range=date_range,
        zone=zone,
        site_names=sites,
        labels=await cases.list_labels(),
        availability=availability,
        schedules=schedules,
        now=now,
    )


def _answered(row: StatisticRow) -> bool:
    return row.helped is not None or row.rating is not None


def _number(value: float | None) -> Cell:
    return "" if value is None else round(value, 1)


def _percent(part: float, whole: float) -> Cell:
    return "" if not whole else round(100 * part / whole, 1)


def safe_cell(value: Cell) -> Cell:
    """Return a CSV cell that spreadsheets show as text, never run as a formula.

    Text starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return
    gets a leading apostrophe. Numbers stay numbers, negative ones included.
    """
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def table_csv(table: Table) -> str:
    """Return a table as CSV (RFC 4180 quoting, CRLF line ends), formula-safe."""
    output = io.StringIO()
    writer = csv.writer(output, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n")
    writer.writerow([safe_cell(column) for column in table.columns])
    for row in table.rows:
        writer.writerow([safe_cell(cell) for cell in row])
    return output.getvalue()
