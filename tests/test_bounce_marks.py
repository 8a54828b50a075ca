"""The dashboard's mark on a bounced reply: a reason for each status class."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dashboard.bounces import bounce_mark, bounce_reason
from relay import i18n
from relay.mailstore import Delivery

SENT = "2026-12-05T09:00:00.000Z"
BOUNCED = "2026-12-05T09:00:06.000Z"


@pytest.fixture(autouse=True)
def english() -> Iterator[None]:
    """Start in English, and leave English active for the tests that follow."""
    i18n.activate("en")
    yield
    i18n.activate("en")


@pytest.mark.parametrize(
    ("status", "action", "reason"),
    [
        ("5.1.1", "failed", "The e-mail address does not exist."),
        ("5.1.10", None, "The e-mail address does not exist."),
        ("5.2.2", "failed", "The recipient's mailbox is full."),
        ("4.2.2", "delayed", "A temporary problem delayed it."),
        ("4.4.1", None, "A temporary problem delayed it."),
        (None, "delayed", "A temporary problem delayed it."),
        (
            "4.4.7",
            "failed",
            "The mail servers gave up after a temporary problem lasted too long.",
        ),
        ("5.7.1", "failed", "The receiving mail server refused it with status 5.7.1."),
        (None, "failed", "The receiving mail server gave no reason."),
        (None, None, "The receiving mail server gave no reason."),
    ],
)
def test_bounce_reason_by_status(
    status: str | None, action: str | None, reason: str
) -> None:
    assert bounce_reason(status, action).startswith(reason)


def test_bounce_mark_titles() -> None:
    failed = Delivery(SENT, 1, False, BOUNCED, "5.1.1", "failed")
    delayed = Delivery(SENT, 1, False, BOUNCED, "4.4.1", "delayed")
    mark = bounce_mark(failed)
    assert mark is not None
    assert mark.title == "Not delivered"
    assert mark.bounced_at == BOUNCED
    delayed_mark = bounce_mark(delayed)
    assert delayed_mark is not None
    assert delayed_mark.title == "Not delivered yet"


def test_bounce_mark_absent_without_bounce() -> None:
    assert bounce_mark(None) is None
    assert bounce_mark(Delivery(SENT, 1, False)) is None


def test_bounce_reason_in_maltese() -> None:
    i18n.activate("mt")
    assert bounce_reason("5.1.1", "failed") == "L-indirizz tal-e-mail ma jeżistix."
    assert bounce_reason("5.7.1", "failed") == (
        "Is-server tal-e-mail li jirċievi rrifjutaha bl-istatus 5.7.1."
    )
    mark = bounce_mark(Delivery(SENT, 1, False, BOUNCED, "5.2.2", "failed"))
    assert mark is not None
    assert mark.title == "Ma twasslitx"
