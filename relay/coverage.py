"""Coverage of the sites' opening hours by volunteers' available time.

The opening hours are the sites' own (``relay.hours``). A minute of a local
day is open when at least one site is open in it. A site without hours is
open all day, as the chat treats it, and a site's closed date is closed.
Each site's hours are wall-clock times in its own zone, so an opening
window's UTC length changes on the days when daylight saving time starts or
ends. Nothing here reads the store or the clock, so callers pass the
schedules and ``now``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from relay.hours import Schedule, openings_on

Window = tuple[datetime, datetime]


def local_midnight(day: date, zone: ZoneInfo) -> datetime:
    """Return the UTC instant when ``day`` starts in ``zone``."""
    return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)


def merge_intervals(intervals: Iterable[Window]) -> list[Window]:
    """Return the union of intervals as sorted, non-overlapping intervals."""
    merged: list[Window] = []
    for start, end in sorted(intervals):
        if end <= start:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def opening_windows(
    day: date, zone: ZoneInfo, schedules: Sequence[Schedule | None]
) -> list[Window]:
    """Return the UTC intervals of a local day in ``zone`` when any site is open.

    ``schedules`` contains one entry per site, and None is a site open at all
    hours. A site in another zone can open on its previous or next date
    within this day, so those dates' openings count too, clipped to the day.
    """
    day_start = local_midnight(day, zone)
    day_end = local_midnight(day + timedelta(days=1), zone)
    windows: list[Window] = []
    for schedule in schedules:
        if schedule is None:
            windows.append((day_start, day_end))
            continue
        for offset in (-1, 0, 1):
            for start, end in openings_on(schedule, day + timedelta(days=offset)):
                windows.append((max(start, day_start), min(end, day_end)))
    return merge_intervals(windows)


def coverage_by_day(
    days: Sequence[date],
    zone: ZoneInfo,
    availability: Iterable[Window],
    schedules: Sequence[Schedule | None],
    now: datetime,
) -> list[tuple[date, float, float]]:
    """Return (day, open seconds, covered seconds) for each local day.

    A second is covered when at least one volunteer was available in it. Time
    after ``now`` is neither open nor covered yet.
    """
    available = merge_intervals(availability)
    result = []
    for day in days:
        open_seconds = 0.0
        covered_seconds = 0.0
        for start, end in opening_windows(day, zone, schedules):
            end = min(end, now)
            if end <= start:
                continue
            open_seconds += (end - start).total_seconds()
            for free_start, free_end in available:
                overlap = min(end, free_end) - max(start, free_start)
                if overlap > timedelta(0):
                    covered_seconds += overlap.total_seconds()
        result.append((day, open_seconds, covered_seconds))
    return result
