"""Volunteer sign-in and sign-out through the real forms: CSRF tokens, cookie
flags, cross-site checks and what an old session cookie still opens."""

from __future__ import annotations

import re

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.relayserver import RelayServer

pytestmark = pytest.mark.anyio

WRONG_CREDENTIALS = "The username or password is wrong."


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def csrf_token_in(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match is not None, "the page has no CSRF token"
    return match.group(1)


def is_sign_in_page(html: str) -> bool:
    return 'action="/dashboard/login"' in html


def is_dashboard_page(html: str) -> bool:
    return 'action="/dashboard/logout"' in html


def set_cookie_header(response: httpx.Response, name: str) -> str | None:
    """Return the ``Set-Cookie`` header that sets ``name``, or None."""
    for header in response.headers.get_list("set-cookie"):
        if header.startswith(f"{name}="):
            return header
    return None


def alert_text(html: str) -> str | None:
    match = re.search(r'role="alert">([^<]*)<', html)
    return match.group(1).strip() if match else None


def password(relay: RelayServer) -> str:
    assert relay.demo_password is not None
    return relay.demo_password


def tampered(cookie: str) -> str:
    """Change one character inside the signed payload of a session cookie.

    The payload's middle is used because the signature's last base64 character
    carries padding bits, so changing it may leave the signature valid.
    """
    replacement = "A" if cookie[5] != "A" else "B"
    return cookie[:5] + replacement + cookie[6:]


async def post_login(
    client: httpx.AsyncClient,
    username: str,
    password: str,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """Load the sign-in page with ``client``, then post the form from it."""
    page = await client.get("/dashboard")
    return await client.post(
        "/dashboard/login",
        data={
            "username": username,
            "password": password,
            "csrf_token": csrf_token_in(page.text),
        },
        headers=headers,
    )


def session_client(relay: RelayServer, cookie: str) -> httpx.AsyncClient:
    """Return a client that sends the session cookie ``cookie``."""
    return httpx.AsyncClient(
        base_url=relay.base_url, headers={"Cookie": f"vso_session={cookie}"}
    )


async def socket_status(relay: RelayServer, cookie: str) -> int:
    """Return 101 when the dashboard socket opens with ``cookie``, else the status."""
    try:
        connection = await connect(
            f"{relay.ws_url}/dashboard/ws",
            origin=relay.base_url,  # type: ignore[arg-type]
            additional_headers={"Cookie": f"vso_session={cookie}"},
        )
    except InvalidStatus as error:
        return error.response.status_code
    await connection.close()
    return 101


async def sign_out(relay: RelayServer, cookie: str) -> httpx.Response:
    async with session_client(relay, cookie) as client:
        page = await client.get("/dashboard")
        return await client.post(
            "/dashboard/logout", data={"csrf_token": csrf_token_in(page.text)}
        )


# Sign-in


async def test_sign_in_page_has_csrf_token(relay: RelayServer) -> None:
    async with httpx.AsyncClient(base_url=relay.base_url) as client:
        response = await client.get("/dashboard")

    assert response.status_code == 200
    assert is_sign_in_page(response.text)
    assert len(csrf_token_in(response.text)) >= 20
    assert set_cookie_header(response, "vso_login") is not None


async def test_sign_in_sets_session_cookie(relay: RelayServer) -> None:
    async with httpx.AsyncClient(base_url=relay.base_url) as client:
        response = await post_login(client, "demo", password(relay))
        dashboard = await client.get("/dashboard")
    cookie = set_cookie_header(response, "vso_session")

    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard"
    assert cookie is not None
    assert "httponly" in cookie.lower()
    assert "samesite=strict" in cookie.lower()
    assert "path=/" in cookie.lower()
    assert is_dashboard_page(dashboard.text)


async def test_sign_in_wrong_password_401(relay: RelayServer) -> None:
    async with httpx.AsyncClient(base_url=relay.base_url) as client:
        response = await post_login(client, "demo", "not-the-password-at-all")

    assert response.status_code == 401
    assert alert_text(response.text) == WRONG_CREDENTIALS
    assert set_cookie_header(response, "vso_session") is None


async def test_sign_in_unknown_user_same_401(relay: RelayServer) -> None:
    async with httpx.AsyncClient(base_url=relay.base_url) as client:
        unknown = await post_login(client, "nobody", "not-the-password-at-all")
        wrong = await post_login(client, "demo", "not-the-password-at-all")

    assert unknown.status_code == 401
    assert alert_text(unknown.text) == alert_text(wrong.text)
    assert set_cookie_header(unknown, "vso_session") is None


async def test_sign_in_without_csrf_token_400(relay: RelayServer) -> None:
    async with httpx.AsyncClient(base_url=relay.base_url) as client:
        await client.get("/dashboard")
        response = await client.post(
            "/dashboard/login", data={"username": "demo", "password": password(relay)}
        )

    assert response.status_code == 400
    assert set_cookie_header(response, "vso_session") is None


async def test_sign_in_token_of_other_nonce_400(relay: RelayServer) -> None:
    async with (
        httpx.AsyncClient(base_url=relay.base_url) as first,
        httpx.AsyncClient(base_url=relay.base_url) as second,
    ):
        first_page = await first.get("/dashboard")
        await second.get("/dashboard")
        # The second client's nonce cookie with the first client's token.
        response = await second.post(
            "/dashboard/login",
            data={
                "username": "demo",
                "password": password(relay),
                "csrf_token": csrf_token_in(first_page.text),
            },
        )

    assert response.status_code == 400
    assert set_cookie_header(response, "vso_session") is None


async def test_sign_in_cross_site_fetch_403(relay: RelayServer) -> None:
    for fetch_site in ("cross-site", "same-site"):
        async with httpx.AsyncClient(base_url=relay.base_url) as client:
            response = await post_login(
                client, "demo", password(relay), headers={"Sec-Fetch-Site": fetch_site}
            )

        assert response.status_code == 403, fetch_site
        assert set_cookie_header(response, "vso_session") is None, fetch_site


async def test_sign_in_foreign_origin_403(relay: RelayServer) -> None:
    async with httpx.AsyncClient(base_url=relay.base_url) as client:
        response = await post_login(
            client, "demo", password(relay), headers={"Origin": "http://evil.example"}
        )

    assert response.status_code == 403
    assert set_cookie_header(response, "vso_session") is None


async def test_sign_in_own_origin_accepted(relay: RelayServer) -> None:
    async with httpx.AsyncClient(base_url=relay.base_url) as client:
        response = await post_login(
            client,
            "demo",
            password(relay),
            headers={"Origin": relay.base_url, "Sec-Fetch-Site": "same-origin"},
        )

    assert response.status_code == 303


# Sign-out and old cookies


async def test_sign_out_old_cookie_shows_sign_in(relay: RelayServer) -> None:
    cookie = await relay.sign_in("demo", password(relay))

    response = await sign_out(relay, cookie)
    async with session_client(relay, cookie) as client:
        page = await client.get("/dashboard")

    assert response.status_code == 303
    assert page.status_code == 200
    assert is_sign_in_page(page.text)


async def test_sign_out_old_cookie_socket_rejected(relay: RelayServer) -> None:
    cookie = await relay.sign_in("demo", password(relay))

    await sign_out(relay, cookie)
    status = await socket_status(relay, cookie)

    assert status == 403


async def test_sign_out_without_csrf_400_session_kept(relay: RelayServer) -> None:
    cookie = await relay.sign_in("demo", password(relay))

    async with session_client(relay, cookie) as client:
        response = await client.post("/dashboard/logout", data={})
        page = await client.get("/dashboard")
    status = await socket_status(relay, cookie)

    assert response.status_code == 400
    assert is_dashboard_page(page.text)
    assert status == 101


async def test_sign_out_foreign_origin_400(relay: RelayServer) -> None:
    cookie = await relay.sign_in("demo", password(relay))

    async with session_client(relay, cookie) as client:
        page = await client.get("/dashboard")
        response = await client.post(
            "/dashboard/logout",
            data={"csrf_token": csrf_token_in(page.text)},
            headers={"Origin": "http://evil.example"},
        )
        after = await client.get("/dashboard")

    assert response.status_code == 400
    assert is_dashboard_page(after.text)


async def test_tampered_cookie_shows_sign_in(relay: RelayServer) -> None:
    cookie = await relay.sign_in("demo", password(relay))
    async with session_client(relay, tampered(cookie)) as client:
        page = await client.get("/dashboard")

    assert page.status_code == 200
    assert is_sign_in_page(page.text)


async def test_session_endpoint_signed_in(relay: RelayServer) -> None:
    assert relay.demo_password is not None
    cookie = await relay.sign_in("demo", relay.demo_password)

    async with session_client(relay, cookie) as client:
        response = await client.get("/dashboard/session")

    assert response.json() == {"signed_in": True}
    assert response.headers["cache-control"] == "no-store"


async def test_session_endpoint_after_sign_out(relay: RelayServer) -> None:
    assert relay.demo_password is not None
    cookie = await relay.sign_in("demo", relay.demo_password)
    await sign_out(relay, cookie)

    async with session_client(relay, cookie) as client:
        response = await client.get("/dashboard/session")

    assert response.json() == {"signed_in": False}
