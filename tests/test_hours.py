"""Opening hours in a named zone, across both daylight-saving switches of 2026.

Malta switches on Sunday 29 March 2026 at 02:00 CET (01:00 UTC) to CEST, and
back on Sunday 25 October 2026 at 03:00 CEST (01:00 UTC) to CET. Every test
passes its own "now"; none reads the real clock.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from relay.crypto import DataCipher, new_key_text
from relay.hours import (
    Interval,
    Schedule,
    check_time_zone,
    describe_moment,
    format_day_hours,
    is_open,
    local_to_utc,
    next_opening,
    openings_on,
    parse_closed_dates,
    parse_day_hours,
)
from relay.store import Store

MALTA = "Europe/Malta"
NINE_TO_FIVE = tuple(Interval(day, 9 * 60, 17 * 60) for day in range(7))


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_hours_open_inside_winter_hours() -> None:
    schedule = Schedule(MALTA, NINE_TO_FIVE)

    assert is_open(schedule, utc("2026-03-27T08:00"))
    assert not is_open(schedule, utc("2026-03-27T07:59"))
    assert is_open(schedule, utc("2026-03-27T15:59"))
    assert not is_open(schedule, utc("2026-03-27T16:00"))


def test_hours_spring_switch_moves_utc_opening() -> None:
    schedule = Schedule(MALTA, NINE_TO_FIVE)

    saturday = openings_on(schedule, date(2026, 3, 28))
    sunday = openings_on(schedule, date(2026, 3, 29))

    assert saturday == [(utc("2026-03-28T08:00"), utc("2026-03-28T16:00"))]
    assert sunday == [(utc("2026-03-29T07:00"), utc("2026-03-29T15:00"))]
    assert is_open(schedule, utc("2026-03-29T07:30"))
    assert not is_open(schedule, utc("2026-03-28T07:30"))
    assert not is_open(schedule, utc("2026-03-29T15:00"))


def test_hours_autumn_switch_moves_utc_opening() -> None:
    schedule = Schedule(MALTA, NINE_TO_FIVE)

    saturday = openings_on(schedule, date(2026, 10, 24))
    sunday = openings_on(schedule, date(2026, 10, 25))

    assert saturday == [(utc("2026-10-24T07:00"), utc("2026-10-24T15:00"))]
    assert sunday == [(utc("2026-10-25T08:00"), utc("2026-10-25T16:00"))]
    assert not is_open(schedule, utc("2026-10-25T07:30"))
    assert is_open(schedule, utc("2026-10-24T07:30"))


def test_hours_skipped_hour_opens_at_switch() -> None:
    sunday = 6
    schedule = Schedule(MALTA, (Interval(sunday, 2 * 60 + 30, 4 * 60),))

    start = local_to_utc(date(2026, 3, 29), 2 * 60 + 30, schedule.zone)

    assert start == utc("2026-03-29T01:00")
    assert not is_open(schedule, utc("2026-03-29T00:59"))
    assert is_open(schedule, utc("2026-03-29T01:00"))
    assert not is_open(schedule, utc("2026-03-29T02:00"))


def test_hours_repeated_hour_counts_twice() -> None:
    sunday = 6
    schedule = Schedule(MALTA, (Interval(sunday, 2 * 60, 3 * 60),))

    [(start, end)] = openings_on(schedule, date(2026, 10, 25))

    # 02:00 CEST is 00:00 UTC; the clock reads 03:00 only once, at 02:00 UTC.
    assert start == utc("2026-10-25T00:00")
    assert end == utc("2026-10-25T02:00")
    assert is_open(schedule, utc("2026-10-25T00:30"))
    assert is_open(schedule, utc("2026-10-25T01:30"))
    assert not is_open(schedule, utc("2026-10-25T02:00"))


def test_hours_next_opening_after_weekend_switch() -> None:
    weekdays = tuple(Interval(day, 9 * 60, 17 * 60) for day in range(5))
    schedule = Schedule(MALTA, weekdays)

    friday_evening = utc("2026-03-27T18:00")
    opening = next_opening(schedule, friday_evening)

    assert opening is not None
    assert opening == utc("2026-03-30T07:00")
    assert opening.utcoffset() is not None
    assert opening.strftime("%H:%M") == "09:00"
    assert describe_moment(opening) == "Monday 30 March at 09:00"


def test_hours_closed_date_skipped() -> None:
    weekdays = tuple(Interval(day, 9 * 60, 17 * 60) for day in range(5))
    schedule = Schedule(MALTA, weekdays, (date(2026, 3, 30),))

    opening = next_opening(schedule, utc("2026-03-27T18:00"))

    assert not is_open(schedule, utc("2026-03-30T10:00"))
    assert opening == utc("2026-03-31T07:00")


def test_hours_no_schedule_always_open() -> None:
    assert is_open(None, utc("2026-12-25T03:00"))
    assert next_opening(None, utc("2026-12-25T03:00")) is None


def test_hours_empty_schedule_never_opens() -> None:
    schedule = Schedule(MALTA)

    assert not is_open(schedule, utc("2026-06-01T10:00"))
    assert next_opening(schedule, utc("2026-06-01T10:00")) is None


def test_hours_next_opening_none_while_open() -> None:
    schedule = Schedule(MALTA, NINE_TO_FIVE)

    assert next_opening(schedule, utc("2026-06-01T10:00")) is None


def test_hours_other_zone() -> None:
    schedule = Schedule("America/New_York", NINE_TO_FIVE)

    # 14 March 2026 is still EST (UTC-5); the switch is on 8 March in the US.
    assert is_open(schedule, utc("2026-03-14T14:00"))
    assert not is_open(schedule, utc("2026-03-14T12:30"))


def test_hours_parse_day_ranges() -> None:
    intervals = parse_day_hours(2, " 17:00-24:00, 09:00 - 13:00 ")

    assert intervals == [Interval(2, 540, 780), Interval(2, 1020, 1440)]
    assert format_day_hours(Schedule(MALTA, tuple(intervals)), 2) == (
        "09:00-13:00, 17:00-24:00"
    )
    assert parse_day_hours(0, "") == []


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("9-5", "not a time range"),
        ("09:00", "not a time range"),
        ("25:00-26:00", "not a valid time"),
        ("09:75-10:00", "not a valid time"),
        ("24:30-24:45", "not a valid time"),
        ("17:00-09:00", "ends before it starts"),
        ("09:00-12:00, 11:00-13:00", "overlap"),
        ("<script>alert(1)</script>", "not a time range"),
    ],
)
def test_hours_parse_invalid_ranges(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        parse_day_hours(0, text)


def test_hours_parse_closed_dates() -> None:
    days = parse_closed_dates("2026-12-25\n2026-01-01, 2026-12-25")

    assert days == [date(2026, 1, 1), date(2026, 12, 25)]
    with pytest.raises(ValueError, match="not a date"):
        parse_closed_dates("2026-02-30")
    with pytest.raises(ValueError, match="not a date"):
        parse_closed_dates("25/12/2026")


def test_hours_time_zone_checked() -> None:
    assert check_time_zone(" Europe/Malta ") == MALTA
    with pytest.raises(ValueError, match="not a known time zone"):
        check_time_zone("Mars/Olympus")
    with pytest.raises(ValueError, match="not a known time zone"):
        check_time_zone("../../etc/passwd")


def test_interval_rejects_inverted_times() -> None:
    with pytest.raises(ValueError, match="start before it ends"):
        Interval(0, 600, 600)
    with pytest.raises(ValueError, match="weekday"):
        Interval(7, 0, 60)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_hours_store_round_trip(tmp_path: Path, anyio_backend: str) -> None:
    store = await Store.open(
        tmp_path / "db.sqlite3", DataCipher.from_text(new_key_text())
    )
    try:
        site = await store.add_site("k", "Site", [], "https://www.google.com/")
        before = await store.get_site_schedule(site.id)
        schedule = Schedule(
            "Europe/Malta",
            (Interval(0, 540, 780), Interval(0, 840, 1020), Interval(5, 600, 720)),
            (date(2026, 12, 25), date(2026, 12, 26)),
        )
        await store.set_site_schedule(site.id, schedule)
        stored = await store.get_site_schedule(site.id)
        await store.set_site_schedule(site.id, None)
        cleared = await store.get_site_schedule(site.id)
    finally:
        await store.close()

    assert before is None
    assert stored == schedule
    assert cleared is None
