"""A real relay for tests: ``vso serve`` in a subprocess on a free loopback port,
with its own SQLite file, plus WebSocket clients for both sides."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

VSO = [sys.executable, "-m", "relay"]
START_TIMEOUT = 20.0
FRAME_TIMEOUT = 5.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RelayServer:
    """One relay process with its own database under ``directory``."""

    def __init__(self, directory: Path, **settings: str) -> None:
        self.directory = directory
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        self.database = directory / "vso.sqlite3"
        self.log_path = directory / "relay.log"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("VSO_")},
            "VSO_PORT": str(self.port),
            "VSO_DATABASE": str(self.database),
            "VSO_SECRET_KEY": "test-secret-key-" + "x" * 32,
            "VSO_DEMO": "true",
            "VSO_LOG_LEVEL": "debug",
            **{f"VSO_{name.upper()}": value for name, value in settings.items()},
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.demo_password: str | None = None

    def cli(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        """Run ``vso`` with this server's settings and return its result."""
        return subprocess.run(
            [*VSO, *args],
            input=stdin,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def add_volunteer(
        self, username: str, display_name: str, password: str, capacity: int = 2
    ) -> None:
        result = self.cli(
            "volunteer",
            "add",
            username,
            "--display-name",
            display_name,
            "--capacity",
            str(capacity),
            "--password-stdin",
            stdin=password + "\n",
        )
        if result.returncode != 0:
            raise RuntimeError(f"vso volunteer add failed: {result.stderr}")

    def start(self) -> None:
        """Start ``vso serve`` and wait until ``/readyz`` returns 200."""
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [*VSO, "serve"], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the relay exited early:\n{self.log()}")
            try:
                if httpx.get(f"{self.base_url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        else:
            raise RuntimeError(f"the relay did not start in time:\n{self.log()}")
        match = re.search(r"password:\s+(\S+)", self.log())
        if match and self.demo_password is None:
            self.demo_password = match.group(1)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        """Send ``sig`` and wait for the process; return its exit code."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise

    def log(self) -> str:
        return (
            self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        )

    async def sign_in(self, username: str, password: str) -> str:
        """Sign in through the real form; return the session cookie's value."""
        async with httpx.AsyncClient(base_url=self.base_url) as client:
            page = await client.get("/dashboard")
            match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
            if match is None:
                raise RuntimeError("the sign-in page has no CSRF token")
            response = await client.post(
                "/dashboard/login",
                data={
                    "username": username,
                    "password": password,
                    "csrf_token": match.group(1),
                },
            )
            if response.status_code != 303:
                raise RuntimeError(f"sign-in failed with {response.status_code}")
            cookie = client.cookies.get("vso_session")
            if cookie is None:
                raise RuntimeError("sign-in set no session cookie")
            return cookie


class Client:
    """A WebSocket client that buffers frames so tests can wait for one type."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.frames: list[dict[str, Any]] = []

    async def send(self, frame: dict[str, Any] | str) -> None:
        await self.connection.send(
            frame if isinstance(frame, str) else json.dumps(frame)
        )

    async def receive(self, timeout: float = FRAME_TIMEOUT) -> dict[str, Any]:
        text = await asyncio.wait_for(self.connection.recv(), timeout)
        frame: dict[str, Any] = json.loads(text)
        return frame

    async def expect(
        self, frame_type: str, timeout: float = FRAME_TIMEOUT, **fields: Any
    ) -> dict[str, Any]:
        """Return the first frame of ``frame_type`` with these fields.

        Frames of other kinds received meanwhile stay in ``frames`` for later
        checks; raises ``TimeoutError`` when none arrives in time.
        """
        return await self.expect_where(
            lambda frame: _matches(frame, frame_type, fields), timeout
        )

    async def expect_where(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        timeout: float = FRAME_TIMEOUT,
    ) -> dict[str, Any]:
        """Return the first frame for which ``predicate`` is true.

        Like ``expect``, but for conditions other than one type with equal fields,
        such as "an ``assigned`` or an ``error`` for this conversation".
        """
        for index, frame in enumerate(self.frames):
            if predicate(frame):
                return self.frames.pop(index)
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise TimeoutError(
                    f"timed out waiting for a matching frame; received {self.frames}"
                )
            frame = await self.receive(remaining)
            if predicate(frame):
                return frame
            self.frames.append(frame)

    async def close_code(self, timeout: float = FRAME_TIMEOUT) -> int | None:
        """Wait until the relay closes the socket and return the close code.

        Frames received meanwhile stay in ``frames``. Reading them also lets the
        close frame through when the client's receive buffer is full.
        """
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            while True:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    raise TimeoutError(
                        "timed out waiting for the socket to close;"
                        f" received {self.frames}"
                    )
                self.frames.append(await self.receive(remaining))
        except ConnectionClosed:
            return self.connection.close_code

    async def expect_silence(self, frame_type: str, seconds: float) -> None:
        """Fail if a frame of ``frame_type`` arrives within ``seconds``."""
        try:
            frame = await self.expect(frame_type, timeout=seconds)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected {frame_type!r} frame: {frame}")

    async def close(self) -> None:
        await self.connection.close()


def _matches(frame: dict[str, Any], frame_type: str, fields: dict[str, Any]) -> bool:
    return frame.get("type") == frame_type and all(
        frame.get(key) == value for key, value in fields.items()
    )


async def visitor(
    server: RelayServer, site: str = "demo", origin: str | None = None
) -> Client:
    """Open a visitor socket and consume its first ``status`` frame."""
    connection = await connect(
        f"{server.ws_url}/chat/ws?site={site}",
        origin=origin or server.base_url,  # type: ignore[arg-type]
    )
    client = Client(connection)
    await client.expect("status")
    return client


async def volunteer(server: RelayServer, cookie: str, hello: bool = True) -> Client:
    """Open a dashboard socket with a session cookie and send ``hello``."""
    connection = await connect(
        f"{server.ws_url}/dashboard/ws",
        origin=server.base_url,  # type: ignore[arg-type]
        additional_headers={"Cookie": f"vso_session={cookie}"},
    )
    client = Client(connection)
    if hello:
        await client.send({"type": "hello", "last_seq": {}})
        await client.expect("state")
        await client.expect("queue")
    return client


async def available_volunteer(server: RelayServer, cookie: str) -> Client:
    client = await volunteer(server, cookie)
    await client.send({"type": "availability", "available": True})
    await client.expect("availability", available=True)
    return client


async def started_visitor(server: RelayServer) -> tuple[Client, dict[str, Any]]:
    """Open a visitor socket, start a chat and return it with the ``started`` frame."""
    client = await visitor(server)
    await client.send({"type": "start"})
    started = await client.expect("started")
    await client.expect("queued")
    return client, started


def kill(server: RelayServer) -> None:
    """Kill the relay with SIGKILL, as a crash would."""
    server.stop(signal.SIGKILL)
