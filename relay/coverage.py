"""Coverage of weekly opening hours by volunteers' available time.

Opening hours are local wall-clock times, so the UTC length of an opening
window changes on the days when daylight saving time starts or ends.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

# Weekdays as ``date.weekday()`` numbers them, Monday first.
WEEKDAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# Minutes from local midnight: (opening, closing) pairs for each weekday.
WeeklyHours = dict[int, tuple[tuple[int, int], ...]]
_HOURS_PART = re.compile(
    r"^(?P<first>[a-z]{3})(?:-(?P<last>[a-z]{3}))?\s+"
    r"(?P<open>\d{2}):(?P<open_minute>\d{2})-(?P<close>\d{2}):(?P<close_minute>\d{2})$"
)


class OpeningHoursError(ValueError):
    """A weekly opening hours text is malformed."""


def local_midnight(day: date, zone: ZoneInfo) -> datetime:
    """Return the UTC instant when ``day`` starts in ``zone``."""
    return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)


def parse_opening_hours(text: str) -> WeeklyHours:
    """Parse weekly hours such as ``mon-fri 09:00-17:00, sat 10:00-14:00``.

    Parts are separated by commas or semicolons; a day may have several parts.
    ``24:00`` closes at midnight. Raises ``OpeningHoursError`` naming the part.
    """
    hours: dict[int, list[tuple[int, int]]] = {}
    parts = [part.strip() for part in re.split(r"[,;]", text.lower()) if part.strip()]
    if not parts:
        raise OpeningHoursError("The opening hours are empty.")
    for part in parts:
        match = _HOURS_PART.match(" ".join(part.split()))
        if match is None:
            raise OpeningHoursError(
                f"The opening hours part {part!r} is invalid; write it like"
                " 'mon-fri 09:00-17:00'."
            )
        first, last = match["first"], match["last"] or match["first"]
        if first not in WEEKDAY_NAMES or last not in WEEKDAY_NAMES:
            raise OpeningHoursError(
                f"The opening hours part {part!r} has an unknown day; use"
                f" {', '.join(WEEKDAY_NAMES)}."
            )
        opening = int(match["open"]) * 60 + int(match["open_minute"])
        closing = int(match["close"]) * 60 + int(match["close_minute"])
        if int(match["open_minute"]) > 59 or int(match["close_minute"]) > 59:
            raise OpeningHoursError(
                f"The opening hours part {part!r} has minutes above 59; use 00 to 59."
            )
        if not 0 <= opening < closing <= 24 * 60:
            raise OpeningHoursError(
                f"The opening hours part {part!r} must open before it closes,"
                " between 00:00 and 24:00."
            )
        start, end = WEEKDAY_NAMES.index(first), WEEKDAY_NAMES.index(last)
        if end < start:
            raise OpeningHoursError(
                f"The opening hours part {part!r} runs backwards; write mon-fri,"
                " not fri-mon."
            )
        for weekday in range(start, end + 1):
            hours.setdefault(weekday, []).append((opening, closing))
    return {weekday: tuple(sorted(spans)) for weekday, spans in hours.items()}


def merge_intervals(
    intervals: Iterable[tuple[datetime, datetime]],
) -> list[tuple[datetime, datetime]]:
    """Return the union of intervals as sorted, non-overlapping intervals."""
    merged: list[tuple[datetime, datetime]] = []
    for start, end in sorted(intervals):
        if end <= start:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def opening_windows(
    day: date, zone: ZoneInfo, hours: WeeklyHours
) -> list[tuple[datetime, datetime]]:
    """Return the UTC intervals when the service is open on a local day."""
    windows = []
    for opening, closing in hours.get(day.weekday(), ()):
        start = _local_minute(day, opening, zone)
        end = _local_minute(day, closing, zone)
        windows.append((start, end))
    return windows


def _local_minute(day: date, minute: int, zone: ZoneInfo) -> datetime:
    if minute == 24 * 60:
        return local_midnight(day + timedelta(days=1), zone)
    wall = datetime(day.year, day.month, day.day, minute // 60, minute % 60)
    return wall.replace(tzinfo=zone).astimezone(UTC)


def coverage_by_day(
    days: Sequence[date],
    zone: ZoneInfo,
    availability: Iterable[tuple[datetime, datetime]],
    hours: WeeklyHours,
    now: datetime,
) -> list[tuple[date, float, float]]:
    """Return (day, open seconds, covered seconds) for each day.

    A second is covered when at least one volunteer was available in it. Time
    after ``now`` is neither open nor covered yet.
    """
    available = merge_intervals(availability)
    result = []
    for day in days:
        open_seconds = 0.0
        covered_seconds = 0.0
        for start, end in opening_windows(day, zone, hours):
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
