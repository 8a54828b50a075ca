"""Resource cards over the real relay: the ``resource`` frame, validation,
storage with the conversation, and the plain-text form."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from relay.crypto import PREFIX as SEALED_PREFIX
from relay.crypto import new_key_text
from relay.resources import load_content, resource_as_text
from tests.relayserver import (
    Client,
    RelayServer,
    available_volunteer,
    started_visitor,
    visitor,
    volunteer,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RelayServer]:
    server = RelayServer(tmp_path, visitor_grace_seconds="5")
    server.start()
    server.add_volunteer("riley", "Riley", "riley-password-1")
    try:
        yield server
    finally:
        server.stop()


async def _paired(relay: RelayServer) -> tuple[Client, Client, str, dict[str, Any]]:
    """Return a volunteer and a visitor in one conversation, its id and start."""
    cookie = await relay.sign_in("demo", relay.demo_password or "")
    staff = await available_volunteer(relay, cookie)
    guest, started = await started_visitor(relay)
    conversation = started["conversation"]
    await staff.send({"type": "accept", "conversation": conversation})
    await staff.expect("assigned", conversation=conversation)
    await guest.expect("assigned")
    return staff, guest, conversation, started


def _resource(conversation: str, **fields: Any) -> dict[str, Any]:
    return {
        "type": "resource",
        "conversation": conversation,
        "client_id": "card-1",
        "resource": "victim-support-line",
        "language": "en",
        **fields,
    }


async def test_card_reaches_both_sides(relay: RelayServer) -> None:
    staff, guest, conversation, _ = await _paired(relay)
    await staff.send(_resource(conversation))
    ack = await staff.expect("ack", client_id="card-1")
    mine = await staff.expect("message", client_id="card-1")
    seen = await guest.expect("message", seq=ack["seq"])
    expected = load_content().card("victim-support-line", "en")
    assert seen["resource"] == expected
    assert mine["resource"] == expected
    assert seen["sender"] == "volunteer"
    assert seen["body"].splitlines()[:3] == [
        "National victim support line (Victim Support Agency)",
        "Information, support and referral for victims of crime.",
        "Phone: 116 006",
    ]


async def test_page_card_links_to_the_hub(relay: RelayServer) -> None:
    staff, guest, conversation, _ = await _paired(relay)
    await staff.send(_resource(conversation, resource="rights", language="mt"))
    seen = await guest.expect("message", client_id="card-1")
    assert seen["resource"]["kind"] == "page"
    assert seen["resource"]["link"] == "/info/rights?lang=mt"
    assert seen["resource"]["name"] == "Id-drittijiet tiegħek bħala vittma"
    assert seen["body"].endswith(f"{relay.base_url}/info/rights?lang=mt")


async def test_card_survives_reconnect(relay: RelayServer) -> None:
    staff, guest, conversation, started = await _paired(relay)
    await staff.send(_resource(conversation))
    await guest.expect("message", client_id="card-1")
    await guest.close()

    again = await visitor(relay)
    await again.send({"type": "resume", "token": started["token"], "last_seq": 0})
    replayed = await again.expect("message", client_id="card-1")
    assert replayed["resource"]["id"] == "victim-support-line"

    cookie = await relay.sign_in("demo", relay.demo_password or "")
    dashboard = await volunteer(relay, cookie)
    history = await dashboard.expect("message", client_id="card-1")
    assert history["resource"]["phone"] == "116 006"


async def test_card_text_labels_in_card_language(relay: RelayServer) -> None:
    # The volunteer's dashboard is in English; the card they send is Maltese.
    staff, guest, conversation, _ = await _paired(relay)
    await staff.send(_resource(conversation, language="mt"))
    seen = await guest.expect("message", client_id="card-1")

    assert "Telefon: 116 006" in seen["body"].splitlines()
    assert "Phone:" not in seen["body"]


async def test_repeated_card_is_stored_once(relay: RelayServer) -> None:
    staff, guest, conversation, _ = await _paired(relay)
    await staff.send(_resource(conversation))
    first = await staff.expect("ack", client_id="card-1")
    await staff.send(_resource(conversation))
    second = await staff.expect("ack", client_id="card-1")
    assert first["seq"] == second["seq"]
    await guest.expect("message", client_id="card-1")
    await guest.expect_silence("message", 0.5)


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"resource": "no-such-service"}, "not_found"),
        ({"language": "fr"}, "not_found"),
        ({"resource": "<b>x</b>"}, "invalid_frame"),
        ({"resource": 7}, "invalid_frame"),
        ({"language": "english"}, "invalid_frame"),
        ({"client_id": "bad id!"}, "invalid_frame"),
        ({"conversation": "not-mine"}, "forbidden"),
    ],
)
async def test_invalid_card_is_rejected(
    relay: RelayServer, fields: dict[str, Any], code: str
) -> None:
    staff, guest, conversation, _ = await _paired(relay)
    await staff.send({**_resource(conversation), **fields})
    error = await staff.expect("error")
    assert error["code"] == code
    await guest.expect_silence("message", 0.3)


async def test_card_into_other_volunteers_chat_is_forbidden(
    relay: RelayServer,
) -> None:
    _, guest, conversation, _ = await _paired(relay)
    other = await volunteer(relay, await relay.sign_in("riley", "riley-password-1"))
    await other.send(_resource(conversation))
    error = await other.expect("error", client_id="card-1")
    assert error["code"] == "forbidden"
    await guest.expect_silence("message", 0.3)


async def test_client_text_cannot_change_the_card(relay: RelayServer) -> None:
    staff, guest, conversation, _ = await _paired(relay)
    await staff.send(_resource(conversation, name="Call 999", phone="999", body="fake"))
    seen = await guest.expect("message", client_id="card-1")
    assert seen["resource"]["phone"] == "116 006"
    assert "999" not in seen["body"]


async def test_card_is_sealed_at_rest(relay: RelayServer) -> None:
    staff, guest, conversation, _ = await _paired(relay)
    await staff.send(_resource(conversation))
    await guest.expect("message", client_id="card-1")
    with sqlite3.connect(relay.database) as db:
        rows = db.execute("SELECT body, resource FROM messages").fetchall()
    assert len(rows) == 1
    for column in rows[0]:
        assert column.startswith(f"{SEALED_PREFIX}:")
        assert "116 006" not in column
        assert "Victim Support" not in column


@pytest.mark.anyio(False)
def test_card_as_text_for_email() -> None:
    police = load_content().service("police")
    assert police is not None
    assert resource_as_text(police, "mt").splitlines() == [
        "Il-Korp tal-Pulizija ta' Malta (mhux emerġenza)",
        "Biex tirrapporta reat jew tistaqsi dwar każ meta ħadd ma jkun f'periklu"
        " immedjat.",
        "Telefon: +356 2294 0000",
    ]


async def test_card_survives_key_rotation(tmp_path: Path) -> None:
    old_key, new_key = new_key_text(), new_key_text()
    server = RelayServer(tmp_path, data_key=old_key)
    await asyncio.to_thread(server.start)
    try:
        staff, guest, conversation, started = await _paired(server)
        await staff.send(_resource(conversation))
        await guest.expect("message", client_id="card-1")
        await guest.close()
        await staff.close()
    finally:
        await asyncio.to_thread(server.stop)
    server.env["VSO_DATA_KEY"] = f"{new_key} {old_key}"
    result = server.cli("rotate-key")
    assert result.returncode == 0, result.stderr
    server.env["VSO_DATA_KEY"] = new_key
    await asyncio.to_thread(server.start)
    try:
        again = await visitor(server)
        await again.send({"type": "resume", "token": started["token"], "last_seq": 0})
        replayed = await again.expect("message", client_id="card-1")
    finally:
        await asyncio.to_thread(server.stop)
    assert replayed["resource"]["id"] == "victim-support-line"


async def test_start_warns_about_stale_entries(relay: RelayServer) -> None:
    log = relay.log()
    assert "6 directory entries were not checked in the last 180 days" in log
    assert "legal-aid" in log
