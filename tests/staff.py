"""Staff accounts for tests: add them with the real ``vso`` command and sign
them in through the real forms, second factor included."""

from __future__ import annotations

import html
import re

import httpx
import pyotp

from tests.relayserver import RelayServer

STAFF_PASSWORD = "blue-kettle-morning-42"


def csrf_of(page: httpx.Response) -> str:
    """Return the first CSRF token in a page."""
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    if match is None:
        raise AssertionError(f"no CSRF token in the page:\n{page.text[:2000]}")
    return html.unescape(match.group(1))


def add_staff(relay: RelayServer, username: str, role: str) -> None:
    """Add an account of ``role`` with ``STAFF_PASSWORD``; admins through
    ``vso admin add``."""
    if role == "admin":
        command = ["admin", "add", username]
    else:
        command = ["volunteer", "add", username, "--role", role]
    result = relay.cli(
        *command,
        "--display-name",
        username.capitalize(),
        "--password-stdin",
        stdin=STAFF_PASSWORD + "\n",
    )
    if result.returncode != 0:
        raise AssertionError(f"adding {username} failed: {result.stderr}")


async def sign_in(
    client: httpx.AsyncClient, username: str, password: str = STAFF_PASSWORD
) -> str | None:
    """Sign in through the forms, enrolling TOTP when asked to.

    Returns the TOTP secret when one was enrolled. The client keeps the
    session cookie.
    """
    page = await client.get("/dashboard")
    answer = await client.post(
        "/dashboard/login",
        data={"username": username, "password": password, "csrf_token": csrf_of(page)},
    )
    if answer.status_code == 303:
        return None
    if answer.status_code != 200:
        raise AssertionError(f"sign-in of {username} failed: {answer.status_code}")
    match = re.search(r'<code class="totp-secret">([A-Z2-7]+)</code>', answer.text)
    if match is None:
        raise AssertionError(f"no TOTP enrolment for {username}")
    secret = match.group(1)
    done = await client.post(
        "/dashboard/login/code",
        data={"code": pyotp.TOTP(secret).now(), "csrf_token": csrf_of(answer)},
    )
    if done.status_code != 200 or client.cookies.get("vso_session") is None:
        raise AssertionError(f"second factor of {username} failed: {done.status_code}")
    return secret


async def staff_client(
    relay: RelayServer, username: str, role: str
) -> httpx.AsyncClient:
    """Return an unopened client signed in as a new account of ``role``.

    Use it with ``async with`` or close it after.
    """
    add_staff(relay, username, role)
    async with httpx.AsyncClient(base_url=relay.base_url) as signing_in:
        await sign_in(signing_in, username)
        cookie = signing_in.cookies.get("vso_session")
    if cookie is None:
        raise AssertionError(f"signing in {username} set no session cookie")
    client = httpx.AsyncClient(base_url=relay.base_url)
    client.cookies.set("vso_session", cookie)
    return client


async def supervisor_cookie(relay: RelayServer, username: str = "sofia") -> str:
    """Add a supervisor (display name: the username capitalised), sign them in
    and return their session cookie's value."""
    async with await staff_client(relay, username, "supervisor") as client:
        cookie = client.cookies.get("vso_session")
    if cookie is None:
        raise AssertionError(f"signing in {username} set no session cookie")
    return cookie
