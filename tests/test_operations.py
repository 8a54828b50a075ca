"""What an operator sees: liveness and readiness probes, Prometheus metrics and
JSON logs, from a real ``vso serve``."""

from __future__ import annotations

import asyncio
import fnmatch
import json
import re
from pathlib import Path, PurePosixPath

import httpx
import pytest

from tests.relayserver import RelayServer, visitor
from tests.test_faults import BUSY_TIMEOUT_SECONDS, locked_database
from tests.test_relay import (
    demo_volunteer,
    open_chat,
    receive_messages,
    running_relay,
    visitor_send,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def get(
    relay: RelayServer,
    path: str,
    timeout: float = 5,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    async with httpx.AsyncClient(base_url=relay.base_url, timeout=timeout) as client:
        return await client.get(path, headers=headers)


def metric(text: str, name: str) -> float:
    """Return the value of one sample, e.g. ``vso_connections{side="visitor"}``."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"no sample {name} in:\n{text}")


# Probes


async def test_readyz_ok(relay: RelayServer) -> None:
    response = await get(relay, "/readyz")

    assert response.json() == {"status": "ok"}


async def test_readyz_locked_database_503(relay: RelayServer) -> None:
    with locked_database(relay.database):
        response = await get(relay, "/readyz", timeout=BUSY_TIMEOUT_SECONDS + 10)

    assert response.status_code == 503


async def test_healthz_alive_while_database_locked(relay: RelayServer) -> None:
    with locked_database(relay.database):
        response = await get(relay, "/healthz", timeout=2)

    assert response.status_code == 200


# Metrics


async def test_metrics_count_chat(relay: RelayServer) -> None:
    chat = await open_chat(relay, await demo_volunteer(relay))
    await chat.visitor.send(visitor_send("v-1", "Hello"))
    await receive_messages(chat.volunteer, 1)

    text = (await get(relay, "/metrics")).text

    assert metric(text, 'vso_connections{side="visitor"}') == 1
    assert metric(text, 'vso_connections{side="volunteer"}') == 1
    assert metric(text, "vso_active_conversations") == 1
    assert metric(text, "vso_waiting_visitors") == 0
    assert metric(text, 'vso_messages_relayed_total{sender="visitor"}') == 1
    assert metric(text, "vso_queue_wait_seconds_count") == 1


async def test_metrics_count_errors_by_code(relay: RelayServer) -> None:
    chat = await open_chat(relay, await demo_volunteer(relay))
    await chat.visitor.send(visitor_send("v-1", "   "))
    await chat.visitor.expect("error", client_id="v-1")

    text = (await get(relay, "/metrics")).text

    assert metric(text, 'vso_errors_total{code="empty_message"}') == 1


async def test_metrics_count_storage_failed_start(relay: RelayServer) -> None:
    await demo_volunteer(relay)
    client = await visitor(relay)

    with locked_database(relay.database):
        await client.send({"type": "start"})
        error = await client.expect("error", timeout=BUSY_TIMEOUT_SECONDS + 10)
    text = (await get(relay, "/metrics")).text

    assert error["code"] == "storage_failed"
    assert metric(text, 'vso_errors_total{code="storage_failed"}') == 1


async def test_metrics_carry_no_ids_or_text(relay: RelayServer) -> None:
    chat = await open_chat(relay, await demo_volunteer(relay))
    await chat.visitor.send(visitor_send("v-secret-id", "private words"))
    await receive_messages(chat.volunteer, 1)

    text = (await get(relay, "/metrics")).text

    assert chat.conversation not in text
    assert "v-secret-id" not in text
    assert "private words" not in text


async def test_metrics_address_not_allowed_404(tmp_path: Path) -> None:
    async with running_relay(tmp_path, metrics_allow="10.0.0.0/8") as relay:
        response = await get(relay, "/metrics")

    assert response.status_code == 404


async def test_metrics_address_allowed_by_network(tmp_path: Path) -> None:
    async with running_relay(tmp_path, metrics_allow="127.0.0.0/8") as relay:
        response = await get(relay, "/metrics")

    assert response.status_code == 200


async def test_metrics_forwarded_visitor_404(tmp_path: Path) -> None:
    # A reverse proxy on an allowed address forwards visitors' requests too, so
    # the visitor's address decides, as it does for the rate limits.
    async with running_relay(tmp_path, trusted_proxies="127.0.0.1") as relay:
        forwarded = await get(
            relay, "/metrics", headers={"x-forwarded-for": "203.0.113.9"}
        )
        direct = await get(relay, "/metrics")

    assert forwarded.status_code == 404
    assert direct.status_code == 200


# Logs


def json_lines(log: str) -> list[dict[str, object]]:
    """Return the log's JSON lines; ``vso serve`` also prints the demo sign-in."""
    return [json.loads(line) for line in log.splitlines() if line.startswith("{")]


async def test_json_logs_one_object_per_line(tmp_path: Path) -> None:
    async with running_relay(tmp_path, log_format="json") as relay:
        await open_chat(relay, await demo_volunteer(relay))
    entries = json_lines(relay.log())
    messages = [str(entry["message"]) for entry in entries]

    assert all(
        set(entry) >= {"time", "level", "logger", "message"} for entry in entries
    )
    assert any(message.startswith("relay started") for message in messages)
    assert any(re.fullmatch(r"visitor socket \w{8} opened.*", m) for m in messages)
    assert "relay stopped" in messages


async def test_json_logs_omit_addresses(tmp_path: Path) -> None:
    async with running_relay(tmp_path, log_format="json") as relay:
        await open_chat(relay, await demo_volunteer(relay))
    log = relay.log()

    assert re.search(rf"127\.0\.0\.1:(?!{relay.port}\b)\d+", log) is None


# A restored database


async def test_serve_without_data_key_fails(tmp_path: Path) -> None:
    # A backup restored on a new server without the data_key file beside it.
    async with running_relay(tmp_path) as relay:
        chat = await open_chat(relay, await demo_volunteer(relay))
        await chat.visitor.send(visitor_send("v-1", "Before the move."))
        await chat.visitor.expect("ack", client_id="v-1")
    (tmp_path / "data_key").unlink()

    try:
        with pytest.raises(RuntimeError, match="the relay exited early") as error:
            await asyncio.to_thread(relay.start)
    finally:
        await asyncio.to_thread(relay.stop)

    assert "was sealed with data key" in str(error.value)
    assert "VSO_DATA_KEY" in str(error.value)


# The Docker image

PROJECT = Path(__file__).resolve().parent.parent
# Files a checkout contains after ``make run``: the demo database, the keys that
# the relay generated beside it, and the virtual environment.
LOCAL_STATE = [
    "var/vso.sqlite3",
    "var/vso.sqlite3-wal",
    "var/secret_key",
    "var/data_key",
    ".venv/pyvenv.cfg",
    ".git/config",
]


def docker_excludes(path: str, patterns: list[str]) -> bool:
    """Return True when a ``.dockerignore`` pattern matches ``path`` or a parent.

    In Docker's patterns ``*`` does not match ``/``, but in ``fnmatch`` it does,
    which makes no difference for the paths checked here.
    """
    candidates = [path, *(str(parent) for parent in PurePosixPath(path).parents)]
    return any(
        fnmatch.fnmatch(candidate, pattern.strip("/"))
        for pattern in patterns
        for candidate in candidates
        if candidate != "."
    )


@pytest.mark.parametrize("path", LOCAL_STATE)
def test_docker_context_excludes_local_state(path: str) -> None:
    ignore = PROJECT / ".dockerignore"
    assert ignore.is_file(), "the documented Dockerfile copies the whole checkout"
    patterns = [
        line.strip()
        for line in ignore.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    assert docker_excludes(path, patterns)
