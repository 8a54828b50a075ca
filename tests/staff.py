"""Staff accounts for tests: supervisors sign in with a password and TOTP."""

from __future__ import annotations

import html
import re

import httpx
import pyotp

from tests.relayserver import RelayServer

SUPERVISOR_PASSWORD = "supervisor-password-1"


def _csrf(page: httpx.Response) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    if match is None:
        raise RuntimeError(f"the page has no CSRF token: {page.text[:200]}")
    return html.unescape(match.group(1))


def add_staff(
    relay: RelayServer, username: str, display_name: str, role: str = "supervisor"
) -> None:
    """Add a staff account with ``SUPERVISOR_PASSWORD`` through ``vso``."""
    result = relay.cli(
        "volunteer",
        "add",
        username,
        "--display-name",
        display_name,
        "--role",
        role,
        "--password-stdin",
        stdin=SUPERVISOR_PASSWORD + "\n",
    )
    if result.returncode != 0:
        raise RuntimeError(f"vso volunteer add failed: {result.stderr}")


async def sign_in_enrolling(relay: RelayServer, username: str) -> str:
    """Sign in a supervisor or admin for the first time, enrolling TOTP.

    Returns the session cookie's value.
    """
    async with httpx.AsyncClient(base_url=relay.base_url) as client:
        page = await client.get("/dashboard")
        step = await client.post(
            "/dashboard/login",
            data={
                "username": username,
                "password": SUPERVISOR_PASSWORD,
                "csrf_token": _csrf(page),
            },
        )
        match = re.search(r'<code class="totp-secret">([A-Z2-7]+)</code>', step.text)
        if match is None:
            raise RuntimeError(f"no enrolment page for {username}: {step.status_code}")
        done = await client.post(
            "/dashboard/login/code",
            data={
                "code": pyotp.TOTP(match.group(1)).now(),
                "csrf_token": _csrf(step),
            },
        )
        if done.status_code != 200:
            raise RuntimeError(f"enrolment failed with {done.status_code}")
        cookie = client.cookies.get("vso_session")
        if cookie is None:
            raise RuntimeError("enrolment set no session cookie")
        return cookie


async def supervisor_cookie(
    relay: RelayServer, username: str = "sofia", display_name: str = "Sofia"
) -> str:
    """Add a supervisor, sign them in and return their session cookie."""
    add_staff(relay, username, display_name)
    return await sign_in_enrolling(relay, username)
