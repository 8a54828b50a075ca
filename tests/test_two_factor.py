"""Two-factor sign-in over real HTTP: enrolment for supervisors, TOTP codes and
recovery codes, each usable once; and session idle expiry in the store."""

from __future__ import annotations

import asyncio
import html
import re
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import httpx
import pyotp
import pytest

from relay.crypto import DataCipher, new_key_text
from relay.store import Store
from tests.relayserver import RelayServer

pytestmark = pytest.mark.anyio

PASSWORD = "supervisor-password-1"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def csrf(page: httpx.Response) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match is not None, page.text
    return html.unescape(match.group(1))


async def password_step(
    client: httpx.AsyncClient, username: str = "sofia"
) -> httpx.Response:
    page = await client.get("/dashboard")
    return await client.post(
        "/dashboard/login",
        data={"username": username, "password": PASSWORD, "csrf_token": csrf(page)},
    )


async def send_code(
    client: httpx.AsyncClient, page: httpx.Response, code: str
) -> httpx.Response:
    return await client.post(
        "/dashboard/login/code", data={"code": code, "csrf_token": csrf(page)}
    )


def add_supervisor(relay: RelayServer) -> None:
    """Add supervisor "sofia", who must enrol at her first sign-in."""
    result = relay.cli(
        "volunteer",
        "add",
        "sofia",
        "--display-name",
        "Sofia",
        "--role",
        "supervisor",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert result.returncode == 0, result.stderr


def secret_of(page: httpx.Response) -> str:
    match = re.search(r'<code class="totp-secret">([A-Z2-7]+)</code>', page.text)
    assert match is not None, page.text
    return match.group(1)


async def enrolled(
    relay: RelayServer, client: httpx.AsyncClient
) -> tuple[str, list[str]]:
    """Add supervisor "sofia", enrol her; return her secret and recovery codes."""
    add_supervisor(relay)
    page = await password_step(client)
    secret = secret_of(page)
    done = await send_code(client, page, pyotp.TOTP(secret).now())
    codes = re.findall(r"<li><code>([a-z0-9-]+)</code></li>", done.text)
    client.cookies.clear()
    return secret, codes


async def test_supervisor_sign_in_starts_enrolment(relay: RelayServer) -> None:
    add_supervisor(relay)
    async with httpx.AsyncClient(base_url=relay.base_url) as client:
        page = await password_step(client)

        assert page.status_code == 200
        assert "Set up two-factor sign-in" in page.text
        assert "<svg" in page.text
        assert client.cookies.get("vso_session") is None


async def test_enrolment_shows_recovery_codes(relay: RelayServer) -> None:
    async with httpx.AsyncClient(base_url=relay.base_url) as client:
        add_supervisor(relay)
        page = await password_step(client)
        done = await send_code(client, page, pyotp.TOTP(secret_of(page)).now())
        dashboard = await client.get("/dashboard")

    assert done.status_code == 200
    assert len(re.findall(r"<li><code>", done.text)) == 10
    assert 'id="available"' in dashboard.text


async def test_enrolment_wrong_code_401(relay: RelayServer) -> None:
    async with httpx.AsyncClient(base_url=relay.base_url) as client:
        add_supervisor(relay)
        page = await password_step(client)
        secret = secret_of(page)
        wrong = "000000" if pyotp.TOTP(secret).now() != "000000" else "111111"
        response = await send_code(client, page, wrong)

    assert response.status_code == 401
    assert "That code is not valid" in response.text
    assert client.cookies.get("vso_session") is None


async def test_sign_in_with_totp_code(relay: RelayServer) -> None:
    async with httpx.AsyncClient(base_url=relay.base_url) as client:
        secret, _ = await enrolled(relay, client)
        page = await password_step(client)
        totp = pyotp.TOTP(secret)
        # The enrolment used the current step, so the next one signs in.
        code = totp.at(time.time(), counter_offset=1)
        response = await send_code(client, page, code)

    assert "Enter the 6-digit code" in page.text
    assert response.status_code == 303


async def test_totp_code_used_twice_rejected(relay: RelayServer) -> None:
    async with httpx.AsyncClient(base_url=relay.base_url) as client:
        secret, _ = await enrolled(relay, client)
        page = await password_step(client)
        replay = await send_code(client, page, pyotp.TOTP(secret).now())

    assert replay.status_code == 401


async def test_recovery_code_works_once(relay: RelayServer) -> None:
    async with httpx.AsyncClient(base_url=relay.base_url) as client:
        _, codes = await enrolled(relay, client)
        page = await password_step(client)
        first = await send_code(client, page, codes[0].upper())
        client.cookies.clear()
        page = await password_step(client)
        second = await send_code(client, page, codes[0])

    assert first.status_code == 303
    assert second.status_code == 401


async def test_code_form_cross_site_403(relay: RelayServer) -> None:
    async with httpx.AsyncClient(base_url=relay.base_url) as client:
        secret, _ = await enrolled(relay, client)
        page = await password_step(client)
        response = await client.post(
            "/dashboard/login/code",
            data={"code": pyotp.TOTP(secret).now(), "csrf_token": csrf(page)},
            headers={"Sec-Fetch-Site": "cross-site"},
        )

    assert response.status_code == 403


async def test_code_form_without_pending_sign_in_400(relay: RelayServer) -> None:
    async with httpx.AsyncClient(base_url=relay.base_url) as client:
        page = await client.get("/dashboard")
        response = await send_code(client, page, "123456")

    assert response.status_code == 400


async def test_totp_secret_encrypted_at_rest(relay: RelayServer) -> None:
    async with httpx.AsyncClient(base_url=relay.base_url) as client:
        secret, _ = await enrolled(relay, client)
    with sqlite3.connect(relay.database) as db:
        stored = db.execute(
            "SELECT totp_secret FROM volunteers WHERE username = 'sofia'"
        ).fetchone()[0]

    assert stored.startswith("vso1:")
    assert secret not in stored


async def test_session_idle_expired(tmp_path: Path) -> None:
    store = await Store.open(
        tmp_path / "db.sqlite3", DataCipher.from_text(new_key_text())
    )
    try:
        volunteer = await store.add_volunteer("vera", "Vera", "hash", 2)
        await store.create_session("s-1", volunteer.id)
        live = await store.get_session_volunteer("s-1", idle_seconds=60)
        expired = await store.get_session_volunteer("s-1", idle_seconds=-60)
        gone = await store.get_session_volunteer("s-1")
    finally:
        await store.close()

    assert live is not None
    assert expired is None
    assert gone is None


async def test_session_seen_written_once_a_step(tmp_path: Path) -> None:
    """A check marks the session seen only when the last mark is a step old."""
    path = tmp_path / "db.sqlite3"
    store = await Store.open(path, DataCipher.from_text(new_key_text()))

    def seen_at() -> str:
        with closing(sqlite3.connect(path)) as db:
            return str(
                db.execute(
                    "SELECT last_seen_at FROM sessions WHERE id = 's-1'"
                ).fetchone()[0]
            )

    try:
        volunteer = await store.add_volunteer("vera", "Vera", "hash", 2)
        await store.create_session("s-1", volunteer.id)
        created = seen_at()
        await asyncio.sleep(0.01)
        await store.get_session_volunteer("s-1", idle_seconds=3600)
        after_recent_check = seen_at()
        # With one second of idle time allowed, the step is a tenth of it.
        await asyncio.sleep(0.15)
        await store.get_session_volunteer("s-1", idle_seconds=1)
        after_step = seen_at()
        # Checked every 0.15 s for 1.5 s, a session with 1 s of idle time
        # stays live only if the checks keep marking it seen.
        live_checks = []
        for _ in range(10):
            await asyncio.sleep(0.15)
            volunteer_seen = await store.get_session_volunteer("s-1", idle_seconds=1)
            live_checks.append(volunteer_seen is not None)
    finally:
        await store.close()

    assert after_recent_check == created
    assert after_step > created
    assert all(live_checks)


async def test_rotated_key_still_opens_totp_secret(tmp_path: Path) -> None:
    old_key, new_key = new_key_text(), new_key_text()
    path = tmp_path / "db.sqlite3"
    store = await Store.open(path, DataCipher.from_text(old_key))
    volunteer = await store.add_volunteer("vera", "Vera", "hash", 2, "admin")
    await store.set_totp(volunteer.id, "JBSWY3DPEHPK3PXP", [])
    await store.close()
    store = await Store.open(path, DataCipher.from_text(f"{new_key} {old_key}"))
    resealed = await store.reseal_totp_secrets()
    await store.close()

    store = await Store.open(path, DataCipher.from_text(new_key))
    try:
        secret = await store.get_totp_secret(volunteer.id)
    finally:
        await store.close()

    assert resealed == 1
    assert secret == "JBSWY3DPEHPK3PXP"
