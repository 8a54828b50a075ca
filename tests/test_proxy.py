"""The relay behind Debian's nginx, configured with the blocks of
``docs/deploy.md``: TLS, WebSockets, and idle chats that outlive nginx's read
timeout thanks to the relay's pings."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.relayserver import RelayServer, free_port

pytestmark = pytest.mark.anyio

DEPLOY_DOC = Path(__file__).resolve().parent.parent / "docs" / "deploy.md"
# Short, so that the tests stay fast; the documented value is nginx's 60 s.
PROXY_TIMEOUT_SECONDS = 2
NGINX_START_TIMEOUT = 10.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def documented_nginx_config() -> str:
    """Return the first ``nginx`` code block of docs/deploy.md."""
    text = DEPLOY_DOC.read_text(encoding="utf-8")
    match = re.search(r"```nginx\n(.*?)```", text, flags=re.DOTALL)
    assert match is not None, "docs/deploy.md has no nginx configuration"
    return match.group(1)


def nginx_config(relay_port: int, port: int, directory: Path) -> str:
    """Return an nginx.conf made of the documented blocks, on loopback ports.

    The TLS server block is kept whole except its listen lines, certificate
    paths and the proxy timeouts; the redirect from port 80 is left out.
    """
    documented = documented_nginx_config()
    map_block = re.search(r"^map .*?^\}", documented, re.DOTALL | re.MULTILINE)
    servers = re.findall(r"^server \{.*?^\}", documented, re.DOTALL | re.MULTILINE)
    tls_server = next(server for server in servers if "ssl_certificate" in server)
    assert map_block is not None
    tls_server = re.sub(r"\n    listen \[::\]:443[^\n]*", "", tls_server)
    tls_server = re.sub(
        r"listen 443 ssl http2;", f"listen 127.0.0.1:{port} ssl http2;", tls_server
    )
    tls_server = re.sub(
        r"ssl_certificate [^;]+;", f"ssl_certificate {directory}/cert.pem;", tls_server
    )
    tls_server = re.sub(
        r"ssl_certificate_key [^;]+;",
        f"ssl_certificate_key {directory}/key.pem;",
        tls_server,
    )
    tls_server = re.sub(
        r"proxy_(read|send)_timeout [^;]+;",
        rf"proxy_\1_timeout {PROXY_TIMEOUT_SECONDS}s;",
        tls_server,
    )
    temp_paths = "\n".join(
        f"    {kind}_temp_path {directory}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""
daemon off;
master_process off;
worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/error.log info;
events {{ worker_connections 64; }}
http {{
{temp_paths}
    access_log off;
{map_block.group(0)}
upstream vso_relay {{ server 127.0.0.1:{relay_port}; }}
{tls_server}
}}
"""


def nginx_binary() -> str:
    path = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(path).exists():
        pytest.fail("nginx is not installed; `make test` installs Debian's nginx.")
    return path


def wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + NGINX_START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"nginx exited early:\n{log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nginx did not listen in time:\n{log.read_text()}")


@dataclass
class Proxied:
    """A relay behind nginx, reached at ``base_url`` over TLS."""

    relay: RelayServer
    base_url: str
    ws_url: str
    tls: ssl.SSLContext


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[Proxied]:
    """Start a relay pinging every second, and nginx in front of it."""
    yield from start_proxied(tmp_path, "1")


def start_proxied(directory: Path, ping_seconds: str) -> Iterator[Proxied]:
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
            "-keyout", str(directory / "key.pem"), "-out", str(directory / "cert.pem"),
            "-days", "1", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    port = free_port()
    relay = RelayServer(
        directory / "relay",
        public_url=f"https://127.0.0.1:{port}",
        ws_ping_seconds=ping_seconds,
        visitor_grace_seconds="60",
        volunteer_grace_seconds="60",
    )
    relay.directory.mkdir()
    relay.start()
    config = directory / "nginx.conf"
    config.write_text(nginx_config(relay.port, port, directory))
    log = directory / "nginx.out"
    with log.open("wb") as output:
        nginx = subprocess.Popen(
            [nginx_binary(), "-p", str(directory), "-c", str(config)],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, nginx, log)
        tls = ssl.create_default_context(cafile=str(directory / "cert.pem"))
        base_url = f"https://127.0.0.1:{port}"
        yield Proxied(relay, base_url, f"wss://127.0.0.1:{port}", tls)
    finally:
        nginx.terminate()
        nginx.wait(10)
        relay.stop()


async def sign_in(proxied: Proxied) -> str:
    """Sign the demo volunteer in through nginx; return the session cookie."""
    async with httpx.AsyncClient(
        base_url=proxied.base_url, verify=proxied.tls
    ) as client:
        page = await client.get("/dashboard")
        match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert match is not None, "the sign-in page has no CSRF token"
        response = await client.post(
            "/dashboard/login",
            data={
                "username": "demo",
                "password": proxied.relay.demo_password or "",
                "csrf_token": match.group(1),
            },
        )
        assert response.status_code == 303, response.text
        cookie = client.cookies.get("__Host-vso_session")
        assert cookie is not None, "sign-in set no session cookie"
        return cookie


async def open_socket(
    proxied: Proxied, path: str, cookie: str | None = None
) -> ClientConnection:
    """Open a WebSocket through nginx that sends no pings of its own."""
    headers = {"Cookie": f"__Host-vso_session={cookie}"} if cookie else None
    return await connect(
        f"{proxied.ws_url}{path}",
        origin=proxied.base_url,  # type: ignore[arg-type]
        additional_headers=headers,
        ssl=proxied.tls,
        ping_interval=None,
    )


async def next_frame(
    connection: ClientConnection, frame_type: str, timeout: float = 5
) -> dict[str, Any]:
    async def read() -> dict[str, Any]:
        while True:
            frame: dict[str, Any] = json.loads(await connection.recv())
            if frame["type"] == frame_type:
                return frame

    return await asyncio.wait_for(read(), timeout)


@dataclass
class ProxiedChat:
    visitor: ClientConnection
    volunteer: ClientConnection
    conversation: str


async def open_proxied_chat(proxied: Proxied) -> ProxiedChat:
    cookie = await sign_in(proxied)
    volunteer = await open_socket(proxied, "/dashboard/ws", cookie)
    await volunteer.send(json.dumps({"type": "hello", "last_seq": {}}))
    await volunteer.send(json.dumps({"type": "availability", "available": True}))
    await next_frame(volunteer, "availability")
    visitor = await open_socket(proxied, "/chat/ws?site=demo")
    await visitor.send(json.dumps({"type": "start"}))
    started = await next_frame(visitor, "started")
    conversation = started["conversation"]
    await volunteer.send(json.dumps({"type": "accept", "conversation": conversation}))
    await next_frame(visitor, "assigned")
    return ProxiedChat(visitor, volunteer, conversation)


async def closed_within(connection: ClientConnection, seconds: float) -> bool:
    """Return True if the connection closes within ``seconds``."""
    try:
        await asyncio.wait_for(connection.wait_closed(), seconds)
    except TimeoutError:
        return False
    return True


async def test_proxy_idle_chat_outlives_read_timeout(proxied: Proxied) -> None:
    chat = await open_proxied_chat(proxied)

    closed = await closed_within(chat.visitor, PROXY_TIMEOUT_SECONDS * 3)
    await chat.visitor.send(
        json.dumps({"type": "send", "client_id": "v-1", "body": "Still there?"})
    )
    message = await next_frame(chat.volunteer, "message")

    assert closed is False
    assert message["body"] == "Still there?"


@pytest.fixture
def proxied_without_pings(tmp_path: Path) -> Iterator[Proxied]:
    yield from start_proxied(tmp_path, "3600")


async def test_proxy_idle_chat_closed_without_pings(
    proxied_without_pings: Proxied,
) -> None:
    # The counterpart of the test above: without pings nginx does close it.
    chat = await open_proxied_chat(proxied_without_pings)

    closed = await closed_within(chat.visitor, PROXY_TIMEOUT_SECONDS * 3)

    assert closed is True


async def test_proxy_hides_metrics(proxied: Proxied) -> None:
    async with httpx.AsyncClient(verify=proxied.tls) as client:
        response = await client.get(f"{proxied.base_url}/metrics")

    assert response.status_code == 404


async def test_proxy_serves_chat_page_over_tls(proxied: Proxied) -> None:
    async with httpx.AsyncClient(verify=proxied.tls) as client:
        response = await client.get(f"{proxied.base_url}/chat?site=demo")

    assert response.status_code == 200
