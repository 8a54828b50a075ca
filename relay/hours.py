"""Opening hours: weekly hours in a named time zone, closed dates, and the clock.

Hours are stored as wall-clock minutes in the site's time zone (a zoneinfo
name), never as UTC offsets, so "09:00 to 17:00" stays 09:00 to 17:00 local
time on both sides of a daylight-saving switch. Every question about a moment
("open now?", "when next?") converts that moment to the zone first, and every
answer in UTC goes through ``local_to_utc``, which settles the hour that a
spring switch skips and the hour that an autumn switch repeats. Nothing here
reads the real clock: callers pass ``now`` as an aware datetime.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from relay.i18n import gettext as _

DEFAULT_TIME_ZONE = "Europe/Malta"
MINUTES_PER_DAY = 24 * 60
# How far ahead ``next_opening`` looks; a site closed for longer has none.
LOOKAHEAD_DAYS = 400
MAX_INTERVALS_PER_DAY = 6
MAX_CLOSED_DATES = 366

WEEKDAY_NAMES = (
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
)
MONTH_NAMES = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)

_TIME_RANGE = re.compile(r"^(\d{1,2}):(\d{2})\s*[-\u2013]\s*(\d{1,2}):(\d{2})$")


@dataclass(frozen=True, order=True)
class Interval:
    """One opening on one weekday, in local wall-clock minutes since midnight.

    ``weekday`` counts from Monday as 0; ``closes`` may be 1440, the end of
    the day, and is always after ``opens``.
    """

    weekday: int
    opens: int
    closes: int

    def __post_init__(self) -> None:
        if not 0 <= self.weekday <= 6:
            raise ValueError(f"weekday must be 0 to 6, not {self.weekday}")
        if not 0 <= self.opens < self.closes <= MINUTES_PER_DAY:
            raise ValueError(
                f"An opening must start before it ends within one day, not"
                f" {format_minutes(self.opens)} to {format_minutes(self.closes)}."
            )


@dataclass(frozen=True)
class Schedule:
    """A site's weekly opening hours and closed dates in its time zone.

    A site without a schedule is open at all hours; a schedule without
    intervals is never open.
    """

    time_zone: str = DEFAULT_TIME_ZONE
    intervals: tuple[Interval, ...] = ()
    closed_dates: tuple[date, ...] = ()

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)

    def on_weekday(self, weekday: int) -> list[Interval]:
        """Return the intervals of one weekday, earliest first."""
        return sorted(i for i in self.intervals if i.weekday == weekday)


def check_time_zone(name: str) -> str:
    """Return ``name`` if it is in the zoneinfo database, else raise ``ValueError``."""
    cleaned = name.strip()
    if not cleaned or cleaned not in available_timezones():
        raise ValueError(
            f"{name!r} is not a known time zone; use a name such as"
            f" {DEFAULT_TIME_ZONE}."
        )
    try:
        ZoneInfo(cleaned)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(f"The time zone {cleaned!r} cannot be loaded.") from error
    return cleaned


def is_open(schedule: Schedule | None, now: datetime) -> bool:
    """Return True when ``now`` (an aware datetime) falls in an opening."""
    if schedule is None:
        return True
    local = now.astimezone(schedule.zone)
    if local.date() in schedule.closed_dates:
        return False
    minute = local.hour * 60 + local.minute
    return any(
        interval.opens <= minute < interval.closes
        for interval in schedule.on_weekday(local.weekday())
    )


def local_to_utc(day: date, minute: int, zone: ZoneInfo) -> datetime:
    """Return the UTC instant when the wall clock in ``zone`` first reads
    ``minute`` (0 to 1440) on ``day``, or passes it.

    An ambiguous time (the hour an autumn switch repeats) gives its first
    occurrence. A time that does not exist (the hour a spring switch skips)
    gives the instant of the switch, when the clock jumps past it.
    """
    if minute >= MINUTES_PER_DAY:
        return local_to_utc(day + timedelta(days=1), 0, zone)
    naive = datetime.combine(day, time(minute // 60, minute % 60))
    first = naive.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == naive:
        return first
    # In the gap fold=0 maps to after the switch and fold=1 to before it;
    # search between them, to the minute, for the first instant past ``naive``.
    low = naive.replace(tzinfo=zone, fold=1).astimezone(UTC)
    high = first
    low, high = min(low, high), max(low, high)
    while high - low > timedelta(minutes=1):
        middle = low + (high - low) / 2
        if middle.astimezone(zone).replace(tzinfo=None) >= naive:
            high = middle
        else:
            low = middle
    return high.replace(second=0, microsecond=0)


def openings_on(schedule: Schedule, day: date) -> list[tuple[datetime, datetime]]:
    """Return the UTC start and end of each opening on a local date."""
    if day in schedule.closed_dates:
        return []
    zone = schedule.zone
    return [
        (local_to_utc(day, i.opens, zone), local_to_utc(day, i.closes, zone))
        for i in schedule.on_weekday(day.weekday())
    ]


def next_opening(schedule: Schedule | None, now: datetime) -> datetime | None:
    """Return when the site next opens after ``now``, in the site's zone.

    Returns None when it is open now, or when no opening comes within
    ``LOOKAHEAD_DAYS``.
    """
    if schedule is None or is_open(schedule, now):
        return None
    today = now.astimezone(schedule.zone).date()
    for offset in range(LOOKAHEAD_DAYS):
        for start, _end in openings_on(schedule, today + timedelta(days=offset)):
            if start > now:
                return start.astimezone(schedule.zone)
    return None


# Reading and writing the admin form's text


def format_minutes(minute: int) -> str:
    """Return minutes since midnight as HH:MM; 1440 is 24:00."""
    return f"{minute // 60:02d}:{minute % 60:02d}"


def parse_day_hours(weekday: int, text: str) -> list[Interval]:
    """Read one weekday's hours, such as ``09:00-13:00, 17:00-24:00``.

    An empty text means closed all day. Raises ``ValueError`` naming the part
    that is invalid, or when openings overlap.
    """
    intervals: list[Interval] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        match = _TIME_RANGE.match(part)
        if match is None:
            raise ValueError(
                _("%(text)s is not a time range; write it as 09:00-17:00.")
                % {"text": repr(part[:40])}
            )
        hour_a, minute_a, hour_b, minute_b = (int(group) for group in match.groups())
        if hour_a > 23 or minute_a > 59 or hour_b > 24 or minute_b > 59:
            raise ValueError(_("%(text)s is not a valid time.") % {"text": part})
        if hour_b == 24 and minute_b:
            raise ValueError(_("%(text)s is not a valid time.") % {"text": part})
        opens, closes = hour_a * 60 + minute_a, hour_b * 60 + minute_b
        if opens >= closes:
            raise ValueError(
                _(
                    "%(text)s ends before it starts; split a night opening at"
                    " 24:00 and go on the next day from 00:00."
                )
                % {"text": part}
            )
        intervals.append(Interval(weekday, opens, closes))
    intervals.sort()
    if len(intervals) > MAX_INTERVALS_PER_DAY:
        raise ValueError(
            _("A day can have at most %(count)d openings.")
            % {"count": MAX_INTERVALS_PER_DAY}
        )
    for earlier, later in zip(intervals, intervals[1:], strict=False):
        if later.opens < earlier.closes:
            raise ValueError(
                _("The openings %(first)s and %(second)s overlap.")
                % {
                    "first": format_interval(earlier),
                    "second": format_interval(later),
                }
            )
    return intervals


def format_interval(interval: Interval) -> str:
    return f"{format_minutes(interval.opens)}-{format_minutes(interval.closes)}"


def format_day_hours(schedule: Schedule, weekday: int) -> str:
    """Return one weekday's hours as ``parse_day_hours`` reads them."""
    return ", ".join(format_interval(i) for i in schedule.on_weekday(weekday))


def parse_closed_dates(text: str) -> list[date]:
    """Read closed dates, one ``YYYY-MM-DD`` per line or separated by commas.

    Raises ``ValueError`` naming the first invalid date.
    """
    days: set[date] = set()
    for part in re.split(r"[\s,]+", text.strip()):
        if not part:
            continue
        try:
            days.add(date.fromisoformat(part))
        except ValueError:
            raise ValueError(
                _("%(text)s is not a date; write it as 2026-12-25.")
                % {"text": repr(part[:40])}
            ) from None
    if len(days) > MAX_CLOSED_DATES:
        raise ValueError(
            _("At most %(count)d closed dates can be listed.")
            % {"count": MAX_CLOSED_DATES}
        )
    return sorted(days)


def describe_moment(moment: datetime) -> str:
    """Return a moment in words for visitors, such as "Monday 7 December at
    09:00", in the moment's own time zone."""
    return _("%(weekday)s %(day)d %(month)s at %(time)s") % {
        "weekday": _(WEEKDAY_NAMES[moment.weekday()]),
        "day": moment.day,
        "month": _(MONTH_NAMES[moment.month - 1]),
        "time": moment.strftime("%H:%M"),
    }
