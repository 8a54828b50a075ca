"""A dashboard socket checks its cookie's signature once and its age on each frame."""

from __future__ import annotations

import asyncio
import time

import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from relay.auth import Signer
from relay.settings import Settings
from tests.relayserver import RelayServer, volunteer

SECRET = "test-secret-key-" + "x" * 32
MAX_AGE = Settings(secret_key=SECRET).session_max_age_seconds


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def signed_seconds_ago(session_id: str, seconds: float) -> str:
    """Return a session cookie as the relay signs it, dated ``seconds`` ago."""

    class EarlierSigner(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time() - seconds)

    serializer = URLSafeTimedSerializer(
        SECRET, salt="vso-session", signer=EarlierSigner
    )
    return serializer.dumps(session_id)


def test_fresh_cookie_expires_after_max_age() -> None:
    signer = Signer(Settings(secret_key=SECRET))
    before = time.time()

    expires_at = signer.session_expires_at(signer.sign_session("s-1"))

    assert before - 1 + MAX_AGE <= expires_at <= time.time() + MAX_AGE


def test_bad_cookie_expiry_is_zero() -> None:
    signer = Signer(Settings(secret_key=SECRET))
    forged = URLSafeTimedSerializer(
        "another-secret-key-" + "y" * 32, salt="vso-session"
    )
    cases = [
        ("no cookie", None),
        ("empty", ""),
        ("forged", forged.dumps("s-1")),
        ("tampered", signer.sign_session("s-1")[:-2] + "xx"),
        ("expired", signed_seconds_ago("s-1", MAX_AGE + 10)),
        ("not a string", URLSafeTimedSerializer(SECRET, salt="vso-session").dumps(7)),
        ("garbage", "not.a.cookie"),
    ]

    for label, cookie in cases:
        assert signer.session_expires_at(cookie) == 0.0, label


@pytest.mark.anyio
async def test_socket_closes_when_cookie_expires(relay: RelayServer) -> None:
    assert relay.demo_password is not None
    cookie = await relay.sign_in("demo", relay.demo_password)
    session_id = Signer(Settings(secret_key=SECRET)).unsign_session(cookie)
    assert session_id is not None
    # The same session, signed so that it has three seconds left.
    ageing = signed_seconds_ago(session_id, MAX_AGE - 3)
    dashboard = await volunteer(relay, ageing)

    await dashboard.send({"type": "ping"})
    await dashboard.expect("pong")
    await asyncio.sleep(4.5)
    await dashboard.send({"type": "ping"})
    code = await dashboard.close_code()

    assert code == 4001
