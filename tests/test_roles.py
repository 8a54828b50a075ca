"""Roles on every route and socket, against a real relay.

``POLICY`` declares each route of the app with the least role that may use it.
The matrix test walks the app's routes, so a new route without an entry fails
until it is declared here. Every role below the least one is then tried. It
must get the one 403 response, or the redirect to the sign-in page for a GET
while signed out, which names nothing and changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from starlette.routing import Mount, Route, WebSocketRoute
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from relay.app import create_app
from relay.settings import Settings
from tests.relayserver import (
    RelayServer,
    available_volunteer,
    started_visitor,
    volunteer,
)
from tests.staff import STAFF_PASSWORD, csrf_of, staff_client

pytestmark = pytest.mark.anyio

ROLES = ("anonymous", "volunteer", "supervisor", "admin")
FORBIDDEN_TEXT = "You do not have access to this page."

# Every route of the app with the least role that may use it. "MOUNT" is a
# static file directory and "WS" a WebSocket.
POLICY: dict[tuple[str, str], str] = {
    ("GET", "/"): "public",
    ("GET", "/healthz"): "public",
    ("GET", "/readyz"): "public",
    # Allowed by network address (VSO_METRICS_ALLOW), not by role.
    ("GET", "/metrics"): "public",
    ("GET", "/favicon.ico"): "public",
    ("MOUNT", "/static"): "public",
    ("GET", "/chat"): "public",
    ("GET", "/safety"): "public",
    ("POST", "/chat/delete"): "public",
    ("POST", "/chat/nojs/start"): "public",
    ("POST", "/chat/nojs/send"): "public",
    ("POST", "/chat/nojs/end"): "public",
    ("GET", "/chat/nojs/transcript"): "public",
    ("POST", "/chat/session"): "public",
    ("WS", "/chat/ws"): "public",
    ("GET", "/widget/loader.js"): "public",
    ("GET", "/widget/site.css"): "public",
    ("GET", "/demo"): "public",
    ("MOUNT", "/widget/static"): "public",
    # The sign-in page when signed out, the dashboard when signed in.
    ("GET", "/dashboard"): "public",
    ("POST", "/dashboard/login"): "public",
    ("POST", "/dashboard/logout"): "public",
    ("POST", "/dashboard/login/code"): "public",
    ("GET", "/dashboard/session"): "public",
    ("GET", "/dashboard/invite/{token}"): "public",
    ("POST", "/dashboard/invite/{token}"): "public",
    ("MOUNT", "/dashboard/static"): "public",
    ("GET", "/dashboard/two-factor"): "volunteer",
    ("WS", "/dashboard/ws"): "volunteer",
    ("GET", "/dashboard/admin"): "admin",
    ("GET", "/dashboard/admin/accounts"): "admin",
    ("POST", "/dashboard/admin/accounts/{id}/active"): "admin",
    ("POST", "/dashboard/admin/accounts/{id}/role"): "admin",
    ("POST", "/dashboard/admin/invitations"): "admin",
    ("POST", "/dashboard/admin/invitations/{id}/revoke"): "admin",
    ("GET", "/dashboard/admin/audit"): "admin",
    ("GET", "/dashboard/admin/sites"): "admin",
    ("POST", "/dashboard/admin/sites"): "admin",
    ("GET", "/dashboard/admin/sites/new"): "admin",
    ("GET", "/dashboard/admin/sites/{id}"): "admin",
    ("POST", "/dashboard/admin/sites/{id}"): "admin",
    ("GET", "/dashboard/admin/sites/{id}/embed"): "admin",
    ("GET", "/dashboard/admin/sites/{id}/preview"): "admin",
    ("GET", "/info"): "public",
    ("GET", "/info/services"): "public",
    ("GET", "/info/{slug:str}"): "public",
    ("GET", "/message"): "public",
    ("POST", "/message"): "public",
    ("POST", "/chat/nojs/leave"): "public",
    ("POST", "/chat/feedback"): "public",
    # A reply code, not a role, opens these.
    ("GET", "/replies"): "public",
    ("POST", "/replies"): "public",
    ("POST", "/replies/send"): "public",
    ("POST", "/replies/delete"): "public",
    ("GET", "/dashboard/inbox"): "volunteer",
    ("GET", "/dashboard/inbox/{conversation_id}"): "volunteer",
    ("POST", "/dashboard/inbox/{conversation_id}/claim"): "volunteer",
    ("POST", "/dashboard/inbox/{conversation_id}/reply"): "volunteer",
    ("POST", "/dashboard/inbox/{conversation_id}/release"): "volunteer",
    ("POST", "/dashboard/inbox/{conversation_id}/close"): "volunteer",
    ("POST", "/dashboard/inbox/{conversation_id}/block"): "volunteer",
    ("GET", "/dashboard/mail/{conversation_id}"): "volunteer",
    ("GET", "/dashboard/notes"): "volunteer",
    ("GET", "/dashboard/notes/{conversation:str}"): "volunteer",
    ("POST", "/dashboard/notes/{conversation:str}"): "volunteer",
    ("GET", "/dashboard/resources/search"): "volunteer",
    ("GET", "/dashboard/supervision"): "supervisor",
    ("GET", "/dashboard/statistics"): "supervisor",
    ("GET", "/dashboard/statistics/{table:str}.csv"): "supervisor",
    ("GET", "/dashboard/labels"): "admin",
    ("POST", "/dashboard/labels"): "admin",
    ("GET", "/dashboard/content"): "admin",
    ("GET", "/dashboard/replies"): "admin",
    ("POST", "/dashboard/replies"): "admin",
    ("GET", "/dashboard/replies/{id:int}"): "admin",
    ("POST", "/dashboard/replies/{id:int}"): "admin",
    ("POST", "/dashboard/replies/{id:int}/delete"): "admin",
    ("GET", "/dashboard/hours"): "admin",
    ("GET", "/dashboard/sites/{site_id:int}/hours"): "admin",
    ("POST", "/dashboard/sites/{site_id:int}/hours"): "admin",
}

# Pages of things the matrix test does not create. The role check comes
# first, so lower roles still get 403; the least role is told "not found", or
# 403 where an unknown conversation and another volunteer's must look alike.
MISSING_TARGETS = frozenset(
    {
        "/dashboard/inbox/{conversation_id}",
        "/dashboard/mail/{conversation_id}",
        "/dashboard/notes/{conversation:str}",
        "/dashboard/replies/{id:int}",
    }
)

# Form fields a forbidden post carries, so that only the role can stop it.
POST_FIELDS: dict[str, dict[str, str]] = {
    "/dashboard/admin/accounts/{id}/active": {"active": "0"},
    "/dashboard/admin/accounts/{id}/role": {"role": "admin"},
    "/dashboard/admin/invitations": {"role": "admin"},
    "/dashboard/admin/sites": {
        "name": "Taken over",
        "origins": "https://evil.example",
        "exit_url": "https://www.example.org/",
    },
    "/dashboard/admin/sites/{id}": {
        "name": "Taken over",
        "origins": "https://evil.example",
        "exit_url": "https://www.example.org/",
    },
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def app_routes() -> Iterator[tuple[str, str]]:
    """Yield (method, path) for every route of the app, as ``POLICY`` keys them."""
    app = create_app(Settings())
    for route in app.routes:
        if isinstance(route, Mount):
            yield "MOUNT", route.path
        elif isinstance(route, WebSocketRoute):
            yield "WS", route.path
        elif isinstance(route, Route):
            for method in sorted((route.methods or set()) - {"HEAD"}):
                yield method, route.path


def test_every_route_has_a_policy() -> None:
    undeclared = sorted(set(app_routes()) - POLICY.keys())
    assert not undeclared, (
        "These routes have no least role: add them to POLICY in"
        f" tests/test_roles.py: {undeclared}"
    )


def test_policy_lists_only_existing_routes() -> None:
    stale = sorted(POLICY.keys() - set(app_routes()))
    assert not stale, f"POLICY in tests/test_roles.py names missing routes: {stale}"


def test_admin_paths_need_admin() -> None:
    for (method, path), role in POLICY.items():
        if path.startswith("/dashboard/admin"):
            assert role == "admin", f"{method} {path} is declared {role}"


def _concrete(path: str, ids: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)(?::\w+)?\}", lambda match: ids[match.group(1)], path)


async def _try(
    client: httpx.AsyncClient, method: str, path: str, csrf: str | None
) -> httpx.Response:
    if method == "GET":
        return await client.get(path)
    fields = dict(POST_FIELDS.get(path, {}))
    if csrf is not None:
        fields["csrf_token"] = csrf
    return await client.request(
        method,
        path,
        data=fields,
        headers={"sec-fetch-site": "same-origin"},
    )


async def test_forbidden_pairs_get_403(relay: RelayServer) -> None:
    clients: dict[str, httpx.AsyncClient] = {
        "anonymous": httpx.AsyncClient(base_url=relay.base_url),
        "volunteer": await staff_client(relay, "vera", "volunteer"),
        "supervisor": await staff_client(relay, "sam", "supervisor"),
        "admin": await staff_client(relay, "ada", "admin"),
    }
    try:
        csrf = {
            role: csrf_of(await client.get("/dashboard"))
            for role, client in clients.items()
            if role != "anonymous"
        }
        admin = clients["admin"]
        invited = await admin.post(
            "/dashboard/admin/invitations",
            data={"role": "volunteer", "csrf_token": csrf["admin"]},
        )
        assert invited.status_code == 200
        # Real targets: the demo volunteer (1), the demo site (1), invitation 1.
        # A conversation id that exists nowhere: the role check comes first, so
        # lower roles get 403, and the least role gets "not found".
        ids = {
            "id": "1",
            "token": "x" * 43,
            "site_id": "1",
            "table": "daily",
            "slug": "rights",
            "conversation_id": "c" * 22,
            "conversation": "c" * 22,
        }
        failures = []
        checked = 0
        for (method, template), least in POLICY.items():
            if method not in ("GET", "POST") or least == "public":
                continue
            path = _concrete(template, ids)
            for role in ROLES[: ROLES.index(least)]:
                response = await _try(clients[role], method, path, csrf.get(role))
                checked += 1
                problem = _forbidden_problem(role, method, response)
                if problem:
                    failures.append(f"{role} {method} {template}: {problem}")
            if method == "GET":
                allowed = await clients[least].get(path)
                served = (
                    allowed.status_code == 200
                    or (
                        allowed.status_code == 303
                        and allowed.headers.get("location") != "/dashboard"
                    )
                    or (
                        allowed.status_code in (403, 404)
                        and template in MISSING_TARGETS
                    )
                )
                if not served:
                    failures.append(
                        f"{least} GET {template}: status {allowed.status_code}"
                    )
        assert not failures, "\n".join(failures)
        assert checked > 30

        # Nothing a forbidden post tried has happened.
        accounts = await admin.get("/dashboard/admin/accounts")
        sites = await admin.get("/dashboard/admin/sites")
        assert "Taken over" not in sites.text
        assert "evil.example" not in sites.text
        assert accounts.text.count('value="admin" selected') == 1
        assert "/dashboard/admin/invitations/1/revoke" in accounts.text
    finally:
        for client in clients.values():
            await client.aclose()


def _forbidden_problem(role: str, method: str, response: httpx.Response) -> str:
    """Return what is wrong with the response to a forbidden request, or ""."""
    if role == "anonymous" and method == "GET":
        if response.status_code != 303:
            return f"status {response.status_code}, expected 303"
        if response.headers.get("location") != "/dashboard":
            return f"redirect to {response.headers.get('location')}"
        if response.content:
            return f"body {response.text[:80]!r}"
        return ""
    if response.status_code != 403:
        return f"status {response.status_code}, expected 403"
    if response.text != FORBIDDEN_TEXT:
        return f"body {response.text[:80]!r}"
    if "set-cookie" in response.headers:
        return "sets a cookie"
    if response.headers.get("cache-control") != "no-store":
        return "may be cached"
    return ""


async def _handshake_status(relay: RelayServer, headers: dict[str, str]) -> int:
    """Open a dashboard socket; return 101 when accepted, else the HTTP status."""
    try:
        async with connect(
            f"{relay.ws_url}/dashboard/ws",
            origin=relay.base_url,  # type: ignore[arg-type]
            additional_headers=headers,
        ):
            return 101
    except InvalidStatus as error:
        return error.response.status_code


async def test_dashboard_socket_without_session_403(relay: RelayServer) -> None:
    assert await _handshake_status(relay, {}) == 403


async def test_dashboard_socket_forged_session_403(relay: RelayServer) -> None:
    forged = {"Cookie": "vso_session=forged.value.here"}
    assert await _handshake_status(relay, forged) == 403


async def test_dashboard_socket_with_session_accepted(relay: RelayServer) -> None:
    cookie = await relay.sign_in("demo", relay.demo_password or "")
    assert await _handshake_status(relay, {"Cookie": f"vso_session={cookie}"}) == 101


async def test_volunteer_socket_cannot_touch_others_chat(
    relay: RelayServer,
) -> None:
    relay.add_volunteer("vera", "Vera", STAFF_PASSWORD)
    owner = await available_volunteer(
        relay, await relay.sign_in("demo", relay.demo_password or "")
    )
    other = await volunteer(relay, await relay.sign_in("vera", STAFF_PASSWORD))
    visitor_client, started = await started_visitor(relay)
    conversation = started["conversation"]
    await owner.send({"type": "accept", "conversation": conversation})
    await owner.expect("assigned", conversation=conversation)
    await visitor_client.expect("assigned")

    attempts = [
        (
            {
                "type": "send",
                "conversation": conversation,
                "client_id": "intruder-1",
                "body": "written by the wrong volunteer",
            },
            "forbidden",
        ),
        ({"type": "end", "conversation": conversation}, "forbidden"),
        ({"type": "block", "conversation": conversation}, "forbidden"),
        # Vera is not available, and the chat is taken anyway.
        ({"type": "accept", "conversation": conversation}, "not_available"),
    ]
    for attempt, code in attempts:
        await other.send(attempt)
        error = await other.expect("error")
        assert error["code"] == code
        assert "written by" not in str(error)

    await visitor_client.expect_silence("message", 0.5)
    await visitor_client.expect_silence("ended", 0.1)
    await owner.send(
        {
            "type": "send",
            "conversation": conversation,
            "client_id": "owner-1",
            "body": "still here",
        }
    )
    delivered = await visitor_client.expect("message")
    assert delivered["body"] == "still here"
    await other.expect_silence("message", 0.5)
    for client in (owner, other, visitor_client):
        await client.close()
