"""Tests of ``relay.ratelimit`` with a controlled clock and calendar day."""

from __future__ import annotations

import pytest

from relay.protocol import ProtocolError
from relay.ratelimit import Guard, RateLimiter, client_address


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.day = "2026-12-04"

    def __call__(self) -> float:
        return self.now


def test_rate_limiter_allows_burst_then_refuses() -> None:
    clock = Clock()
    limiter = RateLimiter(burst=3, per_seconds=10, clock=clock)

    allowed = [limiter.allow("k") for _ in range(4)]

    assert allowed == [True, True, True, False]


def test_rate_limiter_refills_over_time() -> None:
    clock = Clock()
    limiter = RateLimiter(burst=1, per_seconds=10, clock=clock)
    limiter.allow("k")

    clock.now += 10

    assert limiter.allow("k")


def test_rate_limiter_keys_independent() -> None:
    limiter = RateLimiter(burst=1, per_seconds=10, clock=Clock())
    limiter.allow("a")

    assert limiter.allow("b")


def test_rate_limiter_forgets_oldest_beyond_max_keys() -> None:
    limiter = RateLimiter(burst=1, per_seconds=10, max_keys=2, clock=Clock())
    for key in ("a", "b", "c"):
        limiter.allow(key)

    assert limiter.allow("a")


def make_guard(clock: Clock, **limits: int) -> Guard:
    return Guard(block_seconds=60, clock=clock, day=lambda: clock.day, **limits)


def test_address_key_hides_address() -> None:
    guard = make_guard(Clock())

    key = guard.address_key("203.0.113.7")

    assert "203" not in key
    assert len(key) == 32
    assert guard.address_key("203.0.113.7") == key


def test_address_key_changes_with_day() -> None:
    clock = Clock()
    guard = make_guard(clock)
    today = guard.address_key("203.0.113.7")

    clock.day = "2026-12-05"

    assert guard.address_key("203.0.113.7") != today


def test_start_limit_per_address_key() -> None:
    guard = make_guard(Clock(), starts_burst=2)
    key = guard.address_key("203.0.113.7")
    guard.check_start(key)
    guard.check_start(key)

    with pytest.raises(ProtocolError) as raised:
        guard.check_start(key)

    assert raised.value.code == "rate_limited"
    assert raised.value.help is not None


def test_block_refuses_then_expires() -> None:
    clock = Clock()
    guard = make_guard(clock)
    key = guard.address_key("203.0.113.7")
    guard.started("c1", key)
    guard.block("c1")

    with pytest.raises(ProtocolError) as raised:
        guard.check_start(key)
    clock.now += 61
    guard.check_start(key)

    assert raised.value.code == "blocked"


def test_block_other_address_unaffected() -> None:
    guard = make_guard(Clock())
    guard.started("c1", guard.address_key("203.0.113.7"))
    guard.block("c1")

    guard.check_start(guard.address_key("198.51.100.2"))


def test_block_forgotten_next_day() -> None:
    clock = Clock()
    guard = make_guard(clock)
    guard.started("c1", guard.address_key("203.0.113.7"))
    guard.block("c1")

    clock.day = "2026-12-05"

    guard.check_start(guard.address_key("203.0.113.7"))


def test_block_unknown_conversation_false() -> None:
    assert make_guard(Clock()).block("never-started") is False


def test_message_limit_names_client_id() -> None:
    guard = make_guard(Clock(), messages_burst=1)
    guard.check_message("c1", "m-1")

    with pytest.raises(ProtocolError) as raised:
        guard.check_message("c1", "m-2")

    assert raised.value.client_id == "m-2"


def test_client_address_from_trusted_proxy() -> None:
    address = client_address(
        "127.0.0.1", "198.51.100.9, 203.0.113.7", frozenset({"127.0.0.1"})
    )

    assert address == "203.0.113.7"


def test_client_address_untrusted_peer_ignores_header() -> None:
    address = client_address("192.0.2.1", "203.0.113.7", frozenset({"127.0.0.1"}))

    assert address == "192.0.2.1"


def test_client_address_trusted_proxy_without_header() -> None:
    assert client_address("127.0.0.1", None, frozenset({"127.0.0.1"})) == "127.0.0.1"
