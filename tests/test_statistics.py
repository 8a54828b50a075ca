"""Statistics over a generated month, checked against counts made in the test.

The month is March 2026 in Malta, which moves to summer time on 29 March at
01:00 UTC, as London does. Conversations go through the real store API (create, assign,
hand back, end, case notes, post-chat answers) with a fixed seed. The expected
numbers come from the generated list with plain Python and a hand-written rule
for Malta's UTC offset, not from the code under test.
"""

from __future__ import annotations

import csv
import io
import math
import random
import statistics
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from relay.casestore import CaseStore
from relay.coverage import opening_windows
from relay.crypto import DataCipher, new_key_text
from relay.hours import Schedule, parse_closed_dates, parse_day_hours
from relay.statistics import (
    DateRange,
    RangeError,
    Report,
    Table,
    load_report,
    table_csv,
)
from relay.store import Store

pytestmark = pytest.mark.anyio

SEED = 20260301
ZONE = ZoneInfo("Europe/Malta")
MONTH = DateRange(date(2026, 3, 1), date(2026, 3, 31))
SUMMER_TIME_FROM = datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
NOW = datetime(2026, 4, 2, 12, 0, tzinfo=UTC)
# Each site's weekly hours as the admin form takes them, Monday first, and
# its closed dates. The sites overlap on weekdays, so coverage must count
# their union once. NGO Two opens from midnight to 03:00 on Sundays, across
# the hour that the switch to summer time skips on 29 March. The London
# site's late evening is the early morning of Malta's next day.
SITE_HOURS = {
    "NGO One": (
        "Europe/Malta",
        ("09:00-17:00",) * 5 + ("10:00-14:00", ""),
        "2026-03-19",
    ),
    "NGO Two": (
        "Europe/Malta",
        ("16:00-19:00",) * 5 + ("", "00:00-03:00, 08:00-20:00"),
        "",
    ),
    "NGO London": ("Europe/London", ("23:30-24:00",) * 7, "2026-03-10"),
}
CHANNELS = ("chat", "chat", "chat", "message", "email")
SITES = (("ngo-one", "NGO One"), ("ngo-two", "NGO Two"))
# Instants around the month's edges and the change to summer time, as
# (UTC time, local day the test expects), so each edge case is present.
EDGE_STARTS = (
    (datetime(2026, 2, 28, 22, 30, tzinfo=UTC), date(2026, 2, 28)),
    (datetime(2026, 2, 28, 23, 10, tzinfo=UTC), date(2026, 3, 1)),
    (datetime(2026, 3, 28, 23, 30, tzinfo=UTC), date(2026, 3, 29)),
    (datetime(2026, 3, 29, 0, 59, 59, tzinfo=UTC), date(2026, 3, 29)),
    (datetime(2026, 3, 29, 1, 0, tzinfo=UTC), date(2026, 3, 29)),
    (datetime(2026, 3, 29, 21, 59, tzinfo=UTC), date(2026, 3, 29)),
    (datetime(2026, 3, 29, 22, 0, tzinfo=UTC), date(2026, 3, 30)),
    (datetime(2026, 3, 31, 21, 59, tzinfo=UTC), date(2026, 3, 31)),
    (datetime(2026, 3, 31, 22, 0, tzinfo=UTC), date(2026, 4, 1)),
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def malta_local(moment: datetime) -> datetime:
    """Return Malta's wall-clock time of a UTC instant, without zoneinfo."""
    hours = 1 if moment < SUMMER_TIME_FROM else 2
    return (moment + timedelta(hours=hours)).replace(tzinfo=None)


def malta_utc(wall: datetime) -> datetime:
    """Return the UTC instant of a Malta wall-clock time in March 2026."""
    hours = 1 if wall < datetime(2026, 3, 29, 2, 0) else 2
    return (wall - timedelta(hours=hours)).replace(tzinfo=UTC)


def london_local(moment: datetime) -> datetime:
    """Return London's wall-clock time of a UTC instant, without zoneinfo."""
    hours = 0 if moment < SUMMER_TIME_FROM else 1
    return (moment + timedelta(hours=hours)).replace(tzinfo=None)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")


@dataclass
class Generated:
    """One generated conversation and what the test expects of it."""

    id: str
    site: str
    channel: str
    started: datetime
    wait: int | None = None
    total: int | None = None
    labels: set[str] = field(default_factory=set)
    helped: bool | None = None
    rating: int | None = None
    message: str = ""
    note: str = ""

    @property
    def day(self) -> date:
        return malta_local(self.started).date()

    @property
    def missed(self) -> bool:
        return self.total is not None and self.wait is None


@dataclass
class Month:
    conversations: list[Generated]
    intervals: list[tuple[datetime, datetime]]
    retired: str


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(
        tmp_path / "vso.sqlite3", DataCipher.from_text(new_key_text())
    )
    try:
        yield opened
    finally:
        await opened.close()


async def generate_month(store: Store) -> Month:
    """Store a month of conversations, notes, answers and available time."""
    rng = random.Random(SEED)
    cases = CaseStore(store)
    site_ids = {}
    for key, name in SITES:
        site_ids[name] = (await store.add_site(key, name, [], "https://e.test/")).id
    volunteer_ids = [
        (await store.add_volunteer(f"v{n}", f"V{n}", "x", 3)).id for n in range(3)
    ]
    labels = await cases.list_labels()
    categories = [label for label in labels if label.kind == "category"]
    referrals = [label for label in labels if label.kind == "referral"]
    month_start = malta_utc(datetime(2026, 3, 1))
    month_seconds = int((malta_utc(datetime(2026, 4, 1)) - month_start).total_seconds())
    starts = [start for start, _ in EDGE_STARTS] + [
        month_start + timedelta(seconds=rng.randrange(month_seconds))
        for _ in range(420)
    ]
    generated = []
    for number, started in enumerate(starts):
        item = Generated(
            id=f"c{number:04d}",
            site=rng.choice(SITES)[1],
            channel=rng.choice(CHANNELS),
            started=started,
        )
        generated.append(item)
        await store.create_conversation(
            item.id,
            site_ids[item.site],
            f"hash-{number}",
            at=iso(started),
            channel=item.channel,
        )
        outcome = rng.random()
        if outcome < 0.05:
            continue  # still waiting at the end of the month
        if outcome < 0.2:
            item.total = rng.randrange(5, 1800)
            reason = rng.choice(("visitor", "abandoned"))
            await store.end_conversation(
                item.id,
                "abandoned" if reason == "abandoned" else "ended",
                reason,
                at=iso(started + timedelta(seconds=item.total)),
            )
            continue
        item.wait = rng.choice((0, rng.randrange(1, 60), rng.randrange(60, 2400)))
        volunteer = rng.choice(volunteer_ids)
        answered = iso(started + timedelta(seconds=item.wait))
        await store.assign_conversation(item.id, volunteer, at=answered)
        if rng.random() < 0.1:
            # Handed back and answered again: the first answer sets the wait.
            await store.requeue_conversations([item.id])
            later = started + timedelta(seconds=item.wait + rng.randrange(5, 300))
            await store.assign_conversation(item.id, volunteer, at=iso(later))
        item.message = f"message-text-{number}"
        await store.add_message(item.id, "visitor", f"m{number}", item.message)
        if outcome < 0.25:
            continue  # still active at the end of the month
        item.total = item.wait + rng.randrange(30, 5400)
        await store.end_conversation(
            item.id,
            "ended",
            rng.choice(("volunteer", "visitor", "blocked")),
            at=iso(started + timedelta(seconds=item.total)),
        )
        if rng.random() < 0.75:
            chosen = rng.sample(categories, rng.randrange(1, 4)) + rng.sample(
                referrals, rng.randrange(0, 3)
            )
            item.labels = {label.name for label in chosen}
            item.note = f"note-text-{number}"
            saved = await cases.save_case_note(
                item.id, volunteer, item.note, frozenset(label.id for label in chosen)
            )
            assert saved
    for item in generated:
        if item.total is not None and rng.random() < 0.45:
            item.helped = rng.choice((None, True, False))
            item.rating = (
                rng.choice((None, 1, 2, 3, 4, 5))
                if item.helped
                else (rng.randrange(1, 6))
            )
            assert await cases.record_feedback(item.id, item.helped, item.rating)
    # Retiring a label keeps it in the statistics of notes that chose it.
    retired = next(label for label in categories if label.name == "Trafficking")
    await cases.set_label_retired(retired.id, True)

    intervals = []
    for day_offset in range(-1, 32):
        day_start = month_start + timedelta(days=day_offset)
        for _ in range(rng.randrange(0, 4)):
            start = day_start + timedelta(minutes=rng.randrange(0, 24 * 60))
            end = start + timedelta(minutes=rng.randrange(20, 600))
            volunteer = rng.choice(volunteer_ids)
            await cases.open_availability(volunteer, at=iso(start))
            await cases.close_availability(volunteer, at=iso(end))
            intervals.append((start, end))
    # One volunteer is still available: the interval ends at "now".
    still_open = datetime(2026, 3, 31, 20, 0, tzinfo=UTC)
    await cases.open_availability(volunteer_ids[0], at=iso(still_open))
    intervals.append((still_open, NOW))
    return Month(generated, intervals, retired.name)


async def month_report(store: Store, now: datetime = NOW) -> Report:
    sites = await store.list_sites()
    return await load_report(
        store,
        date_range=MONTH,
        zone=ZONE,
        schedules=[await store.get_site_schedule(site.id) for site in sites],
        now=now,
    )


def schedule_of(zone: str, days: tuple[str, ...], closed: str) -> Schedule:
    """Build a schedule from the admin form's texts, through relay.hours."""
    intervals = [
        interval
        for weekday, text in enumerate(days)
        for interval in parse_day_hours(weekday, text)
    ]
    return Schedule(zone, tuple(intervals), tuple(parse_closed_dates(closed)))


async def set_month_hours(store: Store) -> None:
    """Give every site its ``SITE_HOURS``; the London site is added here."""
    await store.add_site("ngo-london", "NGO London", [], "https://l.test/")
    for site in await store.list_sites():
        await store.set_site_schedule(site.id, schedule_of(*SITE_HOURS[site.name]))


def open_at(site: str, moment: datetime) -> bool:
    """Return whether a site of ``SITE_HOURS`` is open at a UTC minute.

    The wall clock comes from the hand-written offsets; the hours are read
    from the texts with plain string splitting, not with relay.hours.
    """
    zone, days, closed = SITE_HOURS[site]
    wall = london_local(moment) if zone == "Europe/London" else malta_local(moment)
    if wall.date().isoformat() in closed.split():
        return False
    minute = wall.hour * 60 + wall.minute
    for part in days[wall.weekday()].split(","):
        if not part.strip():
            continue
        opens, closes = part.strip().split("-")
        first = int(opens[:2]) * 60 + int(opens[3:])
        last = int(closes[:2]) * 60 + int(closes[3:])
        if first <= minute < last:
            return True
    return False


def expected_coverage(
    month: Month, now: datetime
) -> tuple[dict[date, tuple[int, int]], int, int]:
    """Count open and covered minutes per Malta day, one UTC minute at a time."""
    covered_minutes = set()
    for start, end in month.intervals:
        minute = start
        while minute < min(end, now):
            covered_minutes.add(minute)
            minute += timedelta(minutes=1)
    per_day: dict[date, tuple[int, int]] = {}
    for day in MONTH.days():
        open_count = covered_count = 0
        minute = malta_utc(datetime(day.year, day.month, day.day))
        while malta_local(minute).date() == day and minute < now:
            if any(open_at(site, minute) for site in SITE_HOURS):
                open_count += 1
                covered_count += minute in covered_minutes
            minute += timedelta(minutes=1)
        per_day[day] = (open_count, covered_count)
    total_open = sum(item[0] for item in per_day.values())
    total_covered = sum(item[1] for item in per_day.values())
    return per_day, total_open, total_covered


def percent(part: int, whole: int) -> object:
    return "" if not whole else round(100 * part / whole, 1)


def in_month(month: Month) -> list[Generated]:
    return [c for c in month.conversations if MONTH.first <= c.day <= MONTH.last]


def nearest_rank_90(values: list[int]) -> float:
    ordered = sorted(values)
    return float(ordered[math.ceil(0.9 * len(ordered)) - 1])


def as_dict(table: Table) -> dict[str, object]:
    return {str(row[0]): row[1] for row in table.rows}


async def test_generated_month_daily_counts(store: Store) -> None:
    month = await generate_month(store)
    report = await month_report(store)

    expected = Counter((c.day, c.site, c.channel) for c in in_month(month))
    missed = Counter((c.day, c.site, c.channel) for c in in_month(month) if c.missed)
    rows = [
        (day.isoformat(), site, channel, count, missed[(day, site, channel)])
        for (day, site, channel), count in sorted(expected.items())
    ]
    assert report.tables["daily"].rows == rows
    assert len(report.daily_totals) == 31
    totals = Counter(c.day for c in in_month(month))
    assert [bar.value for bar in report.daily_totals] == [
        totals[day] for day in MONTH.days()
    ]


async def test_generated_month_dst_edges(store: Store) -> None:
    month = await generate_month(store)
    report = await month_report(store)

    for started, local_day in EDGE_STARTS:
        assert malta_local(started).date() == local_day
    per_day = Counter(c.day for c in in_month(month))
    by_bar = {bar.label: bar.value for bar in report.daily_totals}
    for day in (date(2026, 3, 1), date(2026, 3, 29), date(2026, 3, 30)):
        assert by_bar[day.isoformat()] == per_day[day]
    assert "2026-02-28" not in by_bar
    assert "2026-04-01" not in by_bar


async def test_generated_month_weekly_counts(store: Store) -> None:
    month = await generate_month(store)
    report = await month_report(store)

    def monday(day: date) -> date:
        return day - timedelta(days=day.weekday())

    expected = Counter((monday(c.day), c.site, c.channel) for c in in_month(month))
    missed = Counter(
        (monday(c.day), c.site, c.channel) for c in in_month(month) if c.missed
    )
    rows = [
        (day.isoformat(), site, channel, count, missed[(day, site, channel)])
        for (day, site, channel), count in sorted(expected.items())
    ]
    assert report.tables["weekly"].rows == rows
    assert sum(bar.value for bar in report.weekly_totals) == len(in_month(month))


async def test_generated_month_waits_durations(store: Store) -> None:
    month = await generate_month(store)
    report = await month_report(store)
    summary = as_dict(report.tables["summary"])
    items = in_month(month)
    waits = [c.wait for c in items if c.wait is not None]
    durations = [
        c.total - c.wait for c in items if c.total is not None and c.wait is not None
    ]

    assert summary["conversations"] == len(items)
    assert summary["closed conversations"] == sum(c.total is not None for c in items)
    assert summary["answered conversations"] == len(waits)
    assert summary["missed conversations"] == sum(c.missed for c in items)
    assert summary["median wait (seconds)"] == round(statistics.median(waits), 1)
    assert summary["90th percentile wait (seconds)"] == nearest_rank_90(waits)
    assert summary["median duration (seconds)"] == round(
        statistics.median(durations), 1
    )
    assert summary["90th percentile duration (seconds)"] == nearest_rank_90(durations)


async def test_generated_month_by_channel(store: Store) -> None:
    month = await generate_month(store)
    report = await month_report(store)
    rows = {str(row[0]): row for row in report.tables["channels"].rows}

    assert set(rows) == {"chat", "message", "email"}
    for channel in ("chat", "message", "email"):
        items = [c for c in in_month(month) if c.channel == channel]
        waits = [c.wait for c in items if c.wait is not None]
        durations = [
            c.total - c.wait
            for c in items
            if c.total is not None and c.wait is not None
        ]
        row = rows[channel]
        assert row[1] == len(items), channel
        assert row[2] == len(waits), channel
        assert row[3] == sum(c.missed for c in items), channel
        assert row[4] == round(statistics.median(waits), 1), channel
        assert row[5] == nearest_rank_90(waits), channel
        assert row[6] == round(statistics.median(durations), 1), channel
        assert row[7] == nearest_rank_90(durations), channel


async def test_generated_month_labels(store: Store) -> None:
    month = await generate_month(store)
    report = await month_report(store)
    counts = Counter(name for c in in_month(month) for name in c.labels)

    categories = as_dict(report.tables["categories"])
    referrals = as_dict(report.tables["referrals"])
    retired_name = f"{month.retired} (retired)"
    assert categories.get(retired_name, 0) == counts[month.retired]
    assert month.retired not in categories
    for name in ("Theft or burglary", "Domestic violence", "Other"):
        assert categories[name] == counts[name]
    for name in ("Police", "Legal aid", "Victim Support Agency"):
        assert referrals[name] == counts[name]
    assert sum(categories.values()) + sum(referrals.values()) == sum(  # type: ignore[arg-type]
        counts.values()
    )


async def test_generated_month_feedback(store: Store) -> None:
    month = await generate_month(store)
    report = await month_report(store)
    feedback = as_dict(report.tables["feedback"])
    items = in_month(month)

    answered = [c for c in items if c.helped is not None or c.rating is not None]
    assert feedback["answered the question"] == len(answered)
    assert feedback["got the help they needed: yes"] == sum(
        c.helped is True for c in items
    )
    assert feedback["got the help they needed: no"] == sum(
        c.helped is False for c in items
    )
    for rating in range(1, 6):
        assert feedback[f"rating {rating} of 5"] == sum(
            c.rating == rating for c in items
        )


async def test_generated_month_coverage(store: Store) -> None:
    month = await generate_month(store)
    await set_month_hours(store)
    report = await month_report(store)
    per_day, total_open, total_covered = expected_coverage(month, NOW)

    rows = {str(row[0]): row for row in report.tables["coverage"].rows}
    for day, (open_count, covered_count) in per_day.items():
        row = rows[day.isoformat()]
        assert row[1:] == (
            open_count,
            covered_count,
            percent(covered_count, open_count),
        ), day
    assert report.tables["coverage"].rows[-1] == (
        "whole range",
        total_open,
        total_covered,
        percent(total_covered, total_open),
    )
    # Sunday 29 March: NGO Two's 00:00-03:00 lasts two hours, the London
    # site adds 00:30-01:00 at its start, and 08:00-20:00 is twelve hours.
    assert per_day[date(2026, 3, 29)][0] == (2 + 12) * 60
    # Thursday 19 March: NGO One is closed, NGO Two's 16:00-19:00 is open.
    assert per_day[date(2026, 3, 19)][0] == 3 * 60 + 30
    # The London site's closed 10 March is Malta's early 11 March.
    assert per_day[date(2026, 3, 11)][0] == 10 * 60
    assert per_day[date(2026, 3, 12)][0] == 10 * 60 + 30


async def test_generated_month_coverage_until_now(store: Store) -> None:
    month = await generate_month(store)
    await set_month_hours(store)
    now = datetime(2026, 3, 20, 13, 7, tzinfo=UTC)
    report = await month_report(store, now)
    per_day, total_open, total_covered = expected_coverage(month, now)

    rows = {str(row[0]): row for row in report.tables["coverage"].rows}
    for day, (open_count, covered_count) in per_day.items():
        assert rows[day.isoformat()][1:3] == (open_count, covered_count), day
    # Friday 20 March opened at 09:00 local, 08:00 UTC, and "now" is 13:07 UTC.
    assert per_day[date(2026, 3, 20)][0] == 5 * 60 + 7 + 30
    assert per_day[date(2026, 3, 21)] == (0, 0)
    assert rows["2026-03-21"][3] == ""
    assert report.tables["coverage"].rows[-1][1:3] == (total_open, total_covered)


async def test_coverage_sites_without_hours_open_all_day(store: Store) -> None:
    month = await generate_month(store)
    report = await month_report(store)

    rows = {str(row[0]): row for row in report.tables["coverage"].rows}
    assert rows["2026-03-28"][1] == 24 * 60
    assert rows["2026-03-29"][1] == 23 * 60
    assert rows["2026-03-30"][1] == 24 * 60
    covered = set()
    for start, end in month.intervals:
        minute = start
        while minute < end:
            covered.add(minute)
            minute += timedelta(minutes=1)
    first = malta_utc(datetime(2026, 3, 29))
    assert rows["2026-03-29"][2] == sum(
        first + timedelta(minutes=n) in covered for n in range(23 * 60)
    )


def test_opening_windows_union_and_edges() -> None:
    sunday = date(2026, 3, 29)
    malta = schedule_of(*SITE_HOURS["NGO Two"])
    closed = schedule_of("Europe/Malta", ("09:00-17:00",) * 7, "2026-03-29")
    whole_day = (
        datetime(2026, 3, 28, 23, 0, tzinfo=UTC),
        datetime(2026, 3, 29, 22, 0, tzinfo=UTC),
    )

    assert opening_windows(sunday, ZONE, []) == []
    assert opening_windows(sunday, ZONE, [closed]) == []
    assert opening_windows(sunday, ZONE, [None, malta]) == [whole_day]
    assert opening_windows(sunday, ZONE, [malta, malta, closed]) == [
        (whole_day[0], datetime(2026, 3, 29, 1, 0, tzinfo=UTC)),
        (
            datetime(2026, 3, 29, 6, 0, tzinfo=UTC),
            datetime(2026, 3, 29, 18, 0, tzinfo=UTC),
        ),
    ]
    # Tokyo's Monday morning is Malta's Sunday evening, clipped to the day.
    tokyo = schedule_of("Asia/Tokyo", ("06:00-12:00",) + ("",) * 6, "")
    assert opening_windows(sunday, ZONE, [tokyo]) == [
        (datetime(2026, 3, 29, 21, 0, tzinfo=UTC), whole_day[1])
    ]


async def test_purge_keeps_statistics(store: Store, tmp_path: Path) -> None:
    month = await generate_month(store)
    before = await month_report(store)

    deleted = await store.purge_closed_before(iso(NOW + timedelta(days=1)))
    after = await month_report(store)

    closed = [c for c in month.conversations if c.total is not None]
    assert deleted == len(closed)
    assert after.tables == before.tables
    cases = CaseStore(store)
    for item in closed[:20]:
        assert await store.get_conversation(item.id) is None
        note = await cases.get_case_note(item.id)
        assert note.note == ""
        assert await store.messages_after(item.id, 0) == []
    # Nothing left links a statistics row to a deleted conversation.
    rows = await store._fetchall(
        "SELECT conversation_id FROM conversation_statistics"
        " WHERE conversation_id IS NOT NULL"
    )
    open_ids = {c.id for c in month.conversations if c.total is None}
    assert {row[0] for row in rows} == open_ids
    columns = await store._fetchall("PRAGMA table_info(conversation_statistics)")
    assert [column["name"] for column in columns] == [
        "id",
        "conversation_id",
        "site_id",
        "channel",
        "started_at",
        "wait_seconds",
        "total_seconds",
        "end_reason",
        "feedback_given",
        "helped",
        "rating",
    ]


async def test_case_note_encrypted_at_rest(store: Store, tmp_path: Path) -> None:
    month = await generate_month(store)
    noted = next(c for c in month.conversations if c.note)
    cases = CaseStore(store)

    assert (await cases.get_case_note(noted.id)).note == noted.note
    # The database file and its write-ahead log hold every committed write.
    raw = b"".join(path.read_bytes() for path in tmp_path.glob("vso.sqlite3*"))
    assert len(raw) > 100_000
    assert noted.note.encode() not in raw
    assert b"note-text-" not in raw
    assert b"message-text-" not in raw


async def test_feedback_twice_rejected(store: Store) -> None:
    month = await generate_month(store)
    cases = CaseStore(store)
    answered = next(
        c for c in month.conversations if c.helped is not None or c.rating is not None
    )
    unanswered_open = next(c for c in month.conversations if c.total is None)

    assert not await cases.record_feedback(answered.id, True, 5)
    assert not await cases.record_feedback(unanswered_open.id, True, 5)
    assert not await cases.record_feedback("no-such-id", True, 5)
    with pytest.raises(ValueError):
        await cases.record_feedback(answered.id, None, 6)


def test_range_reversed_rejected() -> None:
    with pytest.raises(RangeError, match="before the start date"):
        DateRange.parse("2026-03-31", "2026-03-01")


def test_range_too_long_rejected() -> None:
    with pytest.raises(RangeError, match="at most 366"):
        DateRange.parse("2024-01-01", "2026-01-01")


@pytest.mark.parametrize("text", ["", "2026-13-01", "yesterday", "2026-02-30"])
def test_range_malformed_rejected(text: str) -> None:
    with pytest.raises(RangeError, match="invalid"):
        DateRange.parse(text, "2026-03-01")


@pytest.mark.parametrize(
    ("first", "last"),
    [
        ("0001-01-01", "0001-01-02"),
        ("9999-12-30", "9999-12-31"),
        ("1999-12-31", "2000-01-01"),
    ],
)
def test_range_far_dates_rejected(first: str, last: str) -> None:
    with pytest.raises(RangeError, match="out of range"):
        DateRange.parse(first, last)


def test_range_dst_day_lengths() -> None:
    start, end = DateRange.parse("2026-03-29", "2026-03-29").utc_bounds(ZONE)
    autumn = DateRange.parse("2026-10-25", "2026-10-25").utc_bounds(ZONE)

    assert end - start == timedelta(hours=23)
    assert autumn[1] - autumn[0] == timedelta(hours=25)


def test_csv_quoting_and_formulas() -> None:
    table = Table(
        "t",
        "T",
        ("label", "count"),
        [
            ('=HYPERLINK("http://x")', 1),
            ("+1", 2),
            ("-2+3", -4),
            ("@SUM(A1)", 0),
            ('Comma, "quoted"\nand a new line', 5),
            ("plain", 1.5),
        ],
    )

    text = table_csv(table)
    rows = list(csv.reader(io.StringIO(text, newline="")))

    assert text.endswith("\r\n")
    assert rows[0] == ["label", "count"]
    assert rows[1] == ['\'=HYPERLINK("http://x")', "1"]
    assert rows[2] == ["'+1", "2"]
    assert rows[3] == ["'-2+3", "-4"]
    assert rows[4] == ["'@SUM(A1)", "0"]
    assert rows[5] == ['Comma, "quoted"\nand a new line', "5"]
    assert rows[6] == ["plain", "1.5"]
