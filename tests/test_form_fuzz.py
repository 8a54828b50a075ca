"""Property-based fuzzing of the relay's forms over real HTTP. Whatever a form
post contains, the relay returns a page, never a server error, and creates no
session."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.relayserver import RelayServer

FIELD_NAMES = st.sampled_from(
    ["username", "password", "csrf_token", "code", "token", "confirm", "website", "x"]
)
FIELD_VALUES = st.text(max_size=200) | st.sampled_from(["yes", "", "a" * 43])
FORMS = st.dictionaries(FIELD_NAMES, FIELD_VALUES, max_size=6)
PATHS = st.sampled_from(
    [
        "/dashboard/login",
        "/dashboard/login/code",
        "/dashboard/logout",
        "/chat/delete?site=demo",
        "/chat/delete?site=nope",
    ]
)
FETCH_SITES = st.sampled_from([None, "same-origin", "cross-site", "none"])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayServer]:
    relay = RelayServer(tmp_path_factory.mktemp("fuzz"))
    relay.start()
    try:
        yield relay
    finally:
        relay.stop()


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(path=PATHS, form=FORMS, fetch_site=FETCH_SITES)
def test_form_post_never_server_error(
    server: RelayServer, path: str, form: dict[str, str], fetch_site: str | None
) -> None:
    headers = {"Sec-Fetch-Site": fetch_site} if fetch_site else {}

    response = httpx.post(
        f"{server.base_url}{path}", data=form, headers=headers, timeout=10
    )

    assert response.status_code < 500
    assert "vso_session" not in response.headers.get("set-cookie", "")


@settings(max_examples=50, deadline=None)
@given(body=st.binary(max_size=2000))
def test_form_raw_body_never_server_error(server: RelayServer, body: bytes) -> None:
    response = httpx.post(
        f"{server.base_url}/chat/delete?site=demo",
        content=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=10,
    )

    assert response.status_code < 500
