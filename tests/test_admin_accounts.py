"""Accounts over real HTTP: invitations, deactivation, roles and the audit log."""

from __future__ import annotations

import asyncio
import re
import sqlite3

import httpx
import pytest

from relay.protocol import CLOSE_SIGNED_OUT
from tests.relayserver import RelayServer, available_volunteer, started_visitor
from tests.staff import STAFF_PASSWORD, add_staff, csrf_of, sign_in, staff_client

pytestmark = pytest.mark.anyio

NEW_PASSWORD = "lantern-orchard-velvet-7"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def invite(admin: httpx.AsyncClient, role: str = "volunteer") -> str:
    """Create an invitation as ``admin``; return the link's path."""
    page = await admin.get("/dashboard/admin/accounts")
    shown = await admin.post(
        "/dashboard/admin/invitations", data={"role": role, "csrf_token": csrf_of(page)}
    )
    assert shown.status_code == 200
    match = re.search(r"http://[^/]+(/dashboard/invite/[A-Za-z0-9_-]{43})", shown.text)
    assert match is not None, shown.text
    return match.group(1)


async def accept(
    client: httpx.AsyncClient,
    path: str,
    username: str = "nina",
    display_name: str = "Nina",
    password: str = NEW_PASSWORD,
    repeat: str | None = None,
) -> httpx.Response:
    page = await client.get(path)
    assert page.status_code == 200
    return await client.post(
        path,
        data={
            "username": username,
            "display_name": display_name,
            "password": password,
            "repeat": password if repeat is None else repeat,
            "csrf_token": csrf_of(page),
        },
    )


def audit_rows(relay: RelayServer) -> list[sqlite3.Row]:
    with sqlite3.connect(relay.database) as db:
        db.row_factory = sqlite3.Row
        return list(db.execute("SELECT * FROM audit_log ORDER BY id"))


async def test_invitation_creates_account(relay: RelayServer) -> None:
    admin = await staff_client(relay, "ada", "admin")
    path = await invite(admin, "supervisor")
    async with httpx.AsyncClient(base_url=relay.base_url) as guest:
        done = await accept(guest, path)
        assert done.status_code == 200
        assert "Your account is ready, Nina." in done.text
        # Supervisors enrol a second factor at their first sign-in.
        assert await sign_in(guest, "nina", NEW_PASSWORD) is not None
    accounts = await admin.get("/dashboard/admin/accounts")
    assert "nina" in accounts.text
    assert "No pending invitations." in accounts.text
    await admin.aclose()


async def test_invitation_token_stored_as_hash(relay: RelayServer) -> None:
    admin = await staff_client(relay, "ada", "admin")
    path = await invite(admin)
    token = path.rsplit("/", 1)[1]
    await admin.aclose()
    relay.stop()
    assert token.encode() not in relay.database.read_bytes()
    assert token not in relay.log()


async def test_used_invitation_refused(relay: RelayServer) -> None:
    admin = await staff_client(relay, "ada", "admin")
    path = await invite(admin)
    async with httpx.AsyncClient(base_url=relay.base_url) as guest:
        assert (await accept(guest, path)).status_code == 200
        again = await guest.get(path)
    assert again.status_code == 404
    assert "does not work" in again.text
    await admin.aclose()


async def test_expired_invitation_refused(relay: RelayServer) -> None:
    admin = await staff_client(relay, "ada", "admin")
    path = await invite(admin)
    with sqlite3.connect(relay.database) as db:
        db.execute("UPDATE invitations SET expires_at = '2000-01-01T00:00:00.000Z'")
    async with httpx.AsyncClient(base_url=relay.base_url) as guest:
        page = await guest.get(path)
    assert page.status_code == 404
    assert 'name="password"' not in page.text
    await admin.aclose()


async def test_revoked_invitation_refused(relay: RelayServer) -> None:
    admin = await staff_client(relay, "ada", "admin")
    path = await invite(admin)
    async with httpx.AsyncClient(base_url=relay.base_url) as guest:
        form = await guest.get(path)
        accounts = await admin.get("/dashboard/admin/accounts")
        revoked = await admin.post(
            "/dashboard/admin/invitations/1/revoke",
            data={"csrf_token": csrf_of(accounts)},
        )
        assert revoked.status_code == 303
        late = await guest.post(
            path,
            data={
                "username": "nina",
                "display_name": "Nina",
                "password": NEW_PASSWORD,
                "repeat": NEW_PASSWORD,
                "csrf_token": csrf_of(form),
            },
        )
    assert late.status_code == 410
    assert "nina" not in (await admin.get("/dashboard/admin/accounts")).text
    await admin.aclose()


async def test_simultaneous_uses_one_wins(relay: RelayServer) -> None:
    admin = await staff_client(relay, "ada", "admin")
    path = await invite(admin)
    async with (
        httpx.AsyncClient(base_url=relay.base_url) as first,
        httpx.AsyncClient(base_url=relay.base_url) as second,
    ):
        pages = await asyncio.gather(first.get(path), second.get(path))

        def post(client: httpx.AsyncClient, page: httpx.Response, name: str):  # type: ignore[no-untyped-def]
            return client.post(
                path,
                data={
                    "username": name,
                    "display_name": name.capitalize(),
                    "password": NEW_PASSWORD,
                    "repeat": NEW_PASSWORD,
                    "csrf_token": csrf_of(page),
                },
            )

        answers = await asyncio.gather(
            post(first, pages[0], "nina"), post(second, pages[1], "omar")
        )
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [200, 410]
    accounts = (await admin.get("/dashboard/admin/accounts")).text
    assert ("nina" in accounts) != ("omar" in accounts)
    await admin.aclose()


@pytest.mark.parametrize(
    ("username", "display_name", "password", "repeat", "message"),
    [
        ("nina", "Nina", "short", None, "use at least 12"),
        ("nina", "Nina", "password1234", None, "common passwords"),
        ("nina", "Nina", "qwertyuiopasdf", None, "keyboard"),
        ("nina", "Nina", "nina-the-volunteer", None, "your name"),
        ("nina", "Nina", NEW_PASSWORD, "something-else-entirely", "differ"),
        ("Nina Smith!", "Nina", NEW_PASSWORD, None, "lowercase letters"),
        ("nina", "", NEW_PASSWORD, None, "display name must have"),
        ("nina", "Ni\u202ena", NEW_PASSWORD, None, "control or format"),
    ],
)
async def test_invitation_form_rejects_bad_fields(
    relay: RelayServer,
    username: str,
    display_name: str,
    password: str,
    repeat: str | None,
    message: str,
) -> None:
    admin = await staff_client(relay, "ada", "admin")
    path = await invite(admin)
    async with httpx.AsyncClient(base_url=relay.base_url) as guest:
        answer = await accept(guest, path, username, display_name, password, repeat)
        assert answer.status_code == 400
        assert message in answer.text
        assert password not in answer.text
        # The invitation stays usable after a rejected form.
        assert (await accept(guest, path)).status_code == 200
    await admin.aclose()


async def test_invitation_taken_username_keeps_link(relay: RelayServer) -> None:
    admin = await staff_client(relay, "ada", "admin")
    path = await invite(admin)
    async with httpx.AsyncClient(base_url=relay.base_url) as guest:
        taken = await accept(guest, path, username="ada")
        assert taken.status_code == 400
        assert "taken" in taken.text
        assert (await accept(guest, path)).status_code == 200
    await admin.aclose()


async def test_invitation_hostile_display_name_escaped(relay: RelayServer) -> None:
    admin = await staff_client(relay, "ada", "admin")
    path = await invite(admin)
    hostile = "<img src=x onerror=alert(1)>"
    async with httpx.AsyncClient(base_url=relay.base_url) as guest:
        done = await accept(guest, path, display_name=hostile)
    assert done.status_code == 200
    assert hostile not in done.text
    accounts = await admin.get("/dashboard/admin/accounts")
    assert hostile not in accounts.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in accounts.text
    await admin.aclose()


async def test_invitation_cross_site_post_403(relay: RelayServer) -> None:
    admin = await staff_client(relay, "ada", "admin")
    path = await invite(admin)
    async with httpx.AsyncClient(base_url=relay.base_url) as guest:
        page = await guest.get(path)
        answer = await guest.post(
            path,
            data={
                "username": "nina",
                "display_name": "Nina",
                "password": NEW_PASSWORD,
                "repeat": NEW_PASSWORD,
                "csrf_token": csrf_of(page),
            },
            headers={"sec-fetch-site": "cross-site"},
        )
        assert answer.status_code == 403
        assert (await guest.get(path)).status_code == 200
    await admin.aclose()


async def test_invitation_bad_tokens_404(relay: RelayServer) -> None:
    async with httpx.AsyncClient(base_url=relay.base_url) as guest:
        for token in ("x" * 43, "short", "x" * 500, "%3Cscript%3E"):
            page = await guest.get(f"/dashboard/invite/{token}")
            assert page.status_code == 404
            assert "<script>" not in page.text


async def test_deactivation_closes_socket_and_requeues(relay: RelayServer) -> None:
    admin = await staff_client(relay, "ada", "admin")
    cookie = await relay.sign_in("demo", relay.demo_password or "")
    dashboard = await available_volunteer(relay, cookie)
    visitor, started = await started_visitor(relay)
    conversation = started["conversation"]
    await dashboard.send({"type": "accept", "conversation": conversation})
    await dashboard.expect("assigned", conversation=conversation)
    await visitor.expect("assigned")

    page = await admin.get("/dashboard/admin/accounts")
    answer = await admin.post(
        "/dashboard/admin/accounts/1/active",
        data={"active": "0", "csrf_token": csrf_of(page)},
    )
    assert answer.status_code == 303
    assert await dashboard.close_code() == CLOSE_SIGNED_OUT
    await visitor.expect("requeued")
    async with httpx.AsyncClient(base_url=relay.base_url) as old:
        old.cookies.set("vso_session", cookie)
        assert 'id="available"' not in (await old.get("/dashboard")).text
    with pytest.raises(RuntimeError):
        await relay.sign_in("demo", relay.demo_password or "")

    page = await admin.get("/dashboard/admin/accounts")
    answer = await admin.post(
        "/dashboard/admin/accounts/1/active",
        data={"active": "1", "csrf_token": csrf_of(page)},
    )
    assert answer.status_code == 303
    assert await relay.sign_in("demo", relay.demo_password or "")
    await visitor.close()
    await admin.aclose()


async def test_last_admin_cannot_leave(relay: RelayServer) -> None:
    admin = await staff_client(relay, "ada", "admin")
    page = await admin.get("/dashboard/admin/accounts")
    own_id = re.search(r'id="account-(\d+)">\s*<td>ada', page.text)
    assert own_id is not None
    account = own_id.group(1)
    for action, fields in (
        ("active", {"active": "0"}),
        ("role", {"role": "supervisor"}),
    ):
        answer = await admin.post(
            f"/dashboard/admin/accounts/{account}/{action}",
            data={**fields, "csrf_token": csrf_of(page)},
        )
        assert answer.status_code == 400
        assert "last active admin" in answer.text
    assert (await admin.get("/dashboard/admin/accounts")).status_code == 200

    add_staff(relay, "bea", "admin")
    answer = await admin.post(
        f"/dashboard/admin/accounts/{account}/role",
        data={"role": "supervisor", "csrf_token": csrf_of(page)},
    )
    assert answer.status_code == 303
    assert (await admin.get("/dashboard/admin/accounts")).status_code == 403
    await admin.aclose()


async def test_role_change_takes_effect(relay: RelayServer) -> None:
    admin = await staff_client(relay, "ada", "admin")
    async with httpx.AsyncClient(base_url=relay.base_url) as demo:
        await sign_in(demo, "demo", relay.demo_password or "")
        assert (await demo.get("/dashboard/admin/sites")).status_code == 403
        page = await admin.get("/dashboard/admin/accounts")
        answer = await admin.post(
            "/dashboard/admin/accounts/1/role",
            data={"role": "admin", "csrf_token": csrf_of(page)},
        )
        assert answer.status_code == 303
        assert (await demo.get("/dashboard/admin/sites")).status_code == 200
    await admin.aclose()


async def test_unknown_account_404(relay: RelayServer) -> None:
    admin = await staff_client(relay, "ada", "admin")
    page = await admin.get("/dashboard/admin/accounts")
    for path in ("999/active", "abc/active", "999/role", "-1/role"):
        answer = await admin.post(
            f"/dashboard/admin/accounts/{path}",
            data={"active": "0", "role": "admin", "csrf_token": csrf_of(page)},
        )
        assert answer.status_code == 404
    await admin.aclose()


async def test_admin_actions_are_audited(relay: RelayServer) -> None:
    admin = await staff_client(relay, "ada", "admin")
    path = await invite(admin)
    page = await admin.get("/dashboard/admin/accounts")
    token = csrf_of(page)
    await admin.post(
        "/dashboard/admin/invitations/1/revoke", data={"csrf_token": token}
    )
    await admin.post(
        "/dashboard/admin/accounts/1/role",
        data={"role": "supervisor", "csrf_token": token},
    )
    await admin.post(
        "/dashboard/admin/accounts/1/active", data={"active": "0", "csrf_token": token}
    )
    await admin.post(
        "/dashboard/admin/accounts/1/active", data={"active": "1", "csrf_token": token}
    )
    greeting = "Secret greeting text 12345"
    await admin.post(
        "/dashboard/admin/sites/1",
        data={
            "name": "Renamed site",
            "origins": "https://www.example.org",
            "greeting": greeting,
            "exit_url": "https://www.example.org/",
            "csrf_token": token,
        },
    )
    rows = audit_rows(relay)
    actions = [(row["action"], row["target_kind"], row["target_id"]) for row in rows]
    assert actions == [
        ("invitation.create", "invitation", "1"),
        ("invitation.revoke", "invitation", "1"),
        ("account.role.supervisor", "volunteer", "1"),
        ("account.deactivate", "volunteer", "1"),
        ("account.reactivate", "volunteer", "1"),
        ("site.update", "site", "1"),
    ]
    assert {row["actor_name"] for row in rows} == {"Ada"}
    assert all(row["created_at"].endswith("Z") for row in rows)
    text = " ".join(" ".join(str(value) for value in tuple(row)) for row in rows)
    for secret in (greeting, STAFF_PASSWORD, path.rsplit("/", 1)[1], "Renamed"):
        assert secret not in text

    shown = await admin.get("/dashboard/admin/audit?action=account.deactivate")
    assert shown.status_code == 200
    assert shown.text.count("<tr>") == 2
    assert "account.deactivate" in shown.text
    await admin.aclose()


async def test_audit_page_pages(relay: RelayServer) -> None:
    admin = await staff_client(relay, "ada", "admin")
    page = await admin.get("/dashboard/admin/accounts")
    for _ in range(55):
        await admin.post(
            "/dashboard/admin/invitations",
            data={"role": "volunteer", "csrf_token": csrf_of(page)},
        )
    first = await admin.get("/dashboard/admin/audit")
    assert first.text.count("invitation.create</td>") == 50
    older = re.search(r'href="/dashboard/admin/audit\?before=(\d+)"', first.text)
    assert older is not None
    second = await admin.get(f"/dashboard/admin/audit?before={older.group(1)}")
    assert second.text.count("invitation.create</td>") == 5
    assert "before=" not in second.text
    for query in (
        "before=abc",
        "before=-5",
        "action=%3Cscript%3E",
        "before=" + "9" * 40,
    ):
        odd = await admin.get(f"/dashboard/admin/audit?{query}")
        assert odd.status_code == 200
        assert "<script>" not in odd.text
    await admin.aclose()


async def test_deactivated_admin_invitations_revoked(relay: RelayServer) -> None:
    admin = await staff_client(relay, "ada", "admin")
    path = await invite(admin)
    other = await staff_client(relay, "bea", "admin")
    page = await other.get("/dashboard/admin/accounts")
    account = re.search(r'id="account-(\d+)">\s*<td>ada', page.text)
    assert account is not None
    answer = await other.post(
        f"/dashboard/admin/accounts/{account.group(1)}/active",
        data={"active": "0", "csrf_token": csrf_of(page)},
    )
    assert answer.status_code == 303
    async with httpx.AsyncClient(base_url=relay.base_url) as guest:
        assert (await guest.get(path)).status_code == 404
    assert (await admin.get("/dashboard/admin/accounts")).status_code == 303
    await admin.aclose()
    await other.aclose()
