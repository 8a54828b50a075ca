"""Property-based fuzzing of the case-note, label and post-chat forms over real
HTTP: whatever a post contains, the relay returns a page, never a server error."""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.relayserver import RelayServer
from tests.test_casework_browser import staff_cookie
from tests.test_relay import demo_volunteer, open_chat

TEXT = st.text(max_size=300) | st.sampled_from(["", "=1+1", "<b>x</b>", "a" * 90])
LABEL_VALUES = st.lists(
    st.sampled_from(["1", "2", "10", "0", "-1", "x", "99999999999", ""]), max_size=5
)


@dataclass
class Setup:
    relay: RelayServer
    cookie: str
    csrf_token: str
    conversation: str
    token: str


async def ended_conversation(relay: RelayServer) -> tuple[str, str]:
    volunteer = await demo_volunteer(relay)
    chat = await open_chat(relay, volunteer)
    await volunteer.send({"type": "end", "conversation": chat.conversation})
    await volunteer.expect("ended", conversation=chat.conversation)
    await volunteer.close()
    await chat.visitor.close()
    return chat.conversation, chat.token


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    relay = RelayServer(tmp_path_factory.mktemp("casework-fuzz"))
    relay.start()
    try:
        conversation, token = asyncio.run(ended_conversation(relay))
        cookie = staff_cookie(relay, "ada", "admin")
        page = httpx.get(
            f"{relay.base_url}/dashboard/labels", cookies={"vso_session": cookie}
        )
        match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert match is not None, page.text
        yield Setup(relay, cookie, html.unescape(match.group(1)), conversation, token)
    finally:
        relay.stop()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    action=st.sampled_from(["add", "rename", "retire", "restore", "", "drop"]),
    kind=st.sampled_from(["category", "referral", "", "other"]),
    name=TEXT,
    label=st.sampled_from(["1", "2", "0", "x", "", "99999999999"]),
)
def test_label_form_never_server_error(
    setup: Setup, action: str, kind: str, name: str, label: str
) -> None:
    response = httpx.post(
        f"{setup.relay.base_url}/dashboard/labels",
        data={
            "csrf_token": setup.csrf_token,
            "action": action,
            "kind": kind,
            "name": name,
            "label": label,
        },
        cookies={"vso_session": setup.cookie},
        timeout=10,
    )

    assert response.status_code < 500


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(note=TEXT, labels=LABEL_VALUES)
def test_note_form_never_server_error(
    setup: Setup, note: str, labels: list[str]
) -> None:
    response = httpx.post(
        f"{setup.relay.base_url}/dashboard/notes/{setup.conversation}",
        data={"csrf_token": setup.csrf_token, "note": note, "label": labels},
        cookies={"vso_session": setup.cookie},
        timeout=10,
    )

    assert response.status_code < 500


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    helped=TEXT,
    rating=st.sampled_from(["", "1", "5", "0", "6", "x"]) | TEXT,
    use_token=st.booleans(),
)
def test_feedback_form_never_server_error(
    setup: Setup, helped: str, rating: str, use_token: bool
) -> None:
    response = httpx.post(
        f"{setup.relay.base_url}/chat/feedback?site=demo",
        data={
            "chat_token": setup.token if use_token else helped[:60],
            "helped": helped,
            "rating": rating,
        },
        timeout=10,
    )

    assert response.status_code < 500


@settings(max_examples=30, deadline=None)
@given(body=st.binary(max_size=2000))
def test_feedback_raw_body_never_server_error(setup: Setup, body: bytes) -> None:
    response = httpx.post(
        f"{setup.relay.base_url}/chat/feedback?site=demo",
        content=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=10,
    )

    assert response.status_code < 500


DATES = st.dates().map(date.isoformat) | st.text(max_size=40)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(first=DATES, last=DATES, export=st.booleans())
def test_statistics_range_never_server_error(
    setup: Setup, first: str, last: str, export: bool
) -> None:
    path = "/dashboard/statistics/summary.csv" if export else "/dashboard/statistics"
    response = httpx.get(
        f"{setup.relay.base_url}{path}",
        params={"from": first, "to": last},
        cookies={"vso_session": setup.cookie},
        timeout=30,
    )

    assert response.status_code in (200, 400)
