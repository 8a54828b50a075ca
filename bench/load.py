"""The load generator: visitor–volunteer pairs over real WebSockets.

It runs in its own process and drives either target the same way, printing one
JSON line per event on standard output:

1. opens N pairs (volunteer ``hello``, visitor ``resume``), prints ``idle`` and
   waits for a line on standard input, so that the caller can read the server's
   memory with only idle connections open;
2. times 1,000 more visitor handshakes (100 at a time);
3. saturation: every pair keeps one message in flight, volunteer to visitor;
4. latency: every pair sends one message a second, at random phases;
5. prints ``result`` and exits, dropping every socket.

With ``--kill9`` it instead keeps volunteers' messages flowing until the relay
dies, then reconnects, resends what was not acknowledged and prints every
acknowledged ``client_id``.

Fast loads come from volunteers: the relay limits each visitor to a burst of
60 messages and then one a second, as a person would type.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import statistics
import sys
import time
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

CONCURRENCY = 100
CONNECT_COUNT = 1000


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


class Target:
    def __init__(self, url: str, origin: str, site: str) -> None:
        self.url = url
        self.origin = origin
        self.site = site

    async def open(self, path: str, cookie: str | None = None) -> ClientConnection:
        headers = {"Cookie": f"vso_session={cookie}"} if cookie else None
        return await connect(
            f"{self.url}{path}",
            origin=self.origin,  # type: ignore[arg-type]
            additional_headers=headers,
            compression=None,
            ping_interval=None,
            open_timeout=60,
            close_timeout=1,
            max_size=64 * 1024,
        )


async def recv_type(socket: ClientConnection, frame_type: str) -> dict[str, Any]:
    while True:
        frame: dict[str, Any] = json.loads(await socket.recv())
        if frame.get("type") == frame_type:
            return frame


class Pair:
    """One volunteer socket and one visitor socket in the same conversation."""

    def __init__(self, index: int, seed: dict[str, str]) -> None:
        self.index = index
        self.seed = seed
        self.visitor: ClientConnection | None = None
        self.volunteer: ClientConnection | None = None
        self.arrived: asyncio.Event = asyncio.Event()
        self.latencies: list[float] | None = None
        self.received = 0
        self.acked: dict[str, int] = {}
        self.ack_event = asyncio.Event()
        self.track_acks = False

    async def open(self, target: Target) -> None:
        self.volunteer = await target.open("/dashboard/ws", self.seed["cookie"])
        await self.volunteer.send(
            json.dumps({"type": "hello", "last_seq": {self.seed["conversation"]: 0}})
        )
        await recv_type(self.volunteer, "state")
        await self.open_visitor(target)
        asyncio.create_task(self._read_volunteer(self.volunteer))

    async def open_visitor(self, target: Target) -> None:
        self.visitor = await target.open(f"/chat/ws?site={target.site}")
        await recv_type(self.visitor, "status")
        await self.visitor.send(json.dumps(self.resume_frame()))
        await recv_type(self.visitor, "assigned")
        asyncio.create_task(self._read_visitor(self.visitor))

    def resume_frame(self) -> dict[str, Any]:
        """Return ``resume``; only the baseline reads ``conversation``."""
        return {
            "type": "resume",
            "token": self.seed["token"],
            "last_seq": 0,
            "conversation": self.seed["conversation"],
        }

    async def _read_volunteer(self, socket: ClientConnection) -> None:
        # Parsing every frame would make the load generator the bottleneck, so
        # only the body of message frames is read, by position.
        try:
            async for text in socket:
                if not isinstance(text, str):
                    continue
                if self.track_acks and '"type":"ack"' in text:
                    frame = json.loads(text)
                    self.acked[frame["client_id"]] = frame["seq"]
                    self.ack_event.set()
                elif self.latencies is not None and '"type":"message"' in text:
                    start = text.find('"body":"t')
                    if start >= 0:
                        start += len('"body":"t')
                        sent = int(text[start : text.index(" ", start)])
                        self.latencies.append((time.perf_counter_ns() - sent) / 1e6)
        except ConnectionClosed:
            pass
        self.ack_event.set()

    async def _read_visitor(self, socket: ClientConnection) -> None:
        try:
            async for text in socket:
                if isinstance(text, str) and '"type":"message"' in text:
                    self.received += 1
                    self.arrived.set()
        except ConnectionClosed:
            pass

    async def visitor_send(self, client_id: str, body: str) -> None:
        assert self.visitor is not None
        await self.visitor.send(
            json.dumps({"type": "send", "client_id": client_id, "body": body})
        )

    async def volunteer_send(self, client_id: str, body: str) -> None:
        assert self.volunteer is not None
        frame = {
            "type": "send",
            "conversation": self.seed["conversation"],
            "client_id": client_id,
            "body": body,
        }
        await self.volunteer.send(json.dumps(frame))

    async def reopen_volunteer(self, target: Target) -> None:
        """Open a new dashboard socket for this pair and start reading it."""
        self.volunteer = await target.open("/dashboard/ws", self.seed["cookie"])
        await self.volunteer.send(
            json.dumps({"type": "hello", "last_seq": {self.seed["conversation"]: 0}})
        )
        await recv_type(self.volunteer, "state")
        asyncio.create_task(self._read_volunteer(self.volunteer))


async def gather_limited(coroutines: list[Any]) -> list[Any]:
    semaphore = asyncio.Semaphore(CONCURRENCY)

    async def limited(coroutine: Any) -> Any:
        async with semaphore:
            return await coroutine

    return await asyncio.gather(*(limited(c) for c in coroutines))


async def time_connects(target: Target) -> float:
    async def one() -> ClientConnection:
        socket = await target.open(f"/chat/ws?site={target.site}")
        await recv_type(socket, "status")
        return socket

    started = time.perf_counter()
    sockets = await gather_limited([one() for _ in range(CONNECT_COUNT)])
    elapsed = time.perf_counter() - started
    await asyncio.gather(*(s.close() for s in sockets), return_exceptions=True)
    return elapsed


async def saturate(pairs: list[Pair], seconds: float) -> float:
    warmup = 1.0
    stop_at = time.perf_counter() + warmup + seconds

    async def loop(pair: Pair) -> None:
        number = 0
        while time.perf_counter() < stop_at:
            pair.arrived.clear()
            number += 1
            await pair.volunteer_send(f"s{pair.index}-{number}", f"s{number} fast")
            try:
                await asyncio.wait_for(pair.arrived.wait(), 30)
            except TimeoutError:
                return

    tasks = [asyncio.create_task(loop(pair)) for pair in pairs]
    await asyncio.sleep(warmup)
    before = sum(pair.received for pair in pairs)
    started = time.perf_counter()
    await asyncio.sleep(seconds)
    after = sum(pair.received for pair in pairs)
    elapsed = time.perf_counter() - started
    await asyncio.gather(*tasks)
    return (after - before) / elapsed


async def paced(pairs: list[Pair], seconds: float) -> dict[str, float]:
    warmup = 1.0
    stop_at = time.perf_counter() + warmup + seconds
    record_from = time.perf_counter() + warmup

    async def loop(pair: Pair) -> None:
        await asyncio.sleep(random.random())
        number = 0
        next_at = time.perf_counter()
        while next_at < stop_at:
            if pair.latencies is None and time.perf_counter() >= record_from:
                pair.latencies = []
            number += 1
            await pair.visitor_send(
                f"l{pair.index}-{number}", f"t{time.perf_counter_ns()} latency"
            )
            next_at += 1.0
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))

    await asyncio.gather(*(loop(pair) for pair in pairs))
    await asyncio.sleep(0.5)
    latencies = sorted(x for pair in pairs for x in (pair.latencies or []))
    if not latencies:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "samples": 0}
    return {
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "samples": len(latencies),
    }


async def open_pairs(target: Target, seeds: list[dict[str, str]]) -> list[Pair]:
    pairs = [Pair(index, seed) for index, seed in enumerate(seeds)]
    started = time.perf_counter()
    await gather_limited([pair.open(target) for pair in pairs])
    emit("idle", pairs=len(pairs), open_seconds=time.perf_counter() - started)
    return pairs


async def run_load(args: argparse.Namespace, seeds: list[dict[str, str]]) -> None:
    target = Target(args.url, args.origin, args.site)
    pairs = await open_pairs(target, seeds)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    emit("phase", name="connect")
    connect_seconds = await time_connects(target)
    emit("phase", name="saturate")
    throughput = await saturate(pairs, args.throughput_seconds)
    emit("phase", name="paced")
    latency = await paced(pairs, args.latency_seconds)
    emit(
        "result",
        connect_1000_seconds=connect_seconds,
        messages_per_second=throughput,
        **latency,
    )


async def run_kill9(args: argparse.Namespace, seeds: list[dict[str, str]]) -> None:
    """Send until the relay dies; come back, resend, and report what was acked."""
    target = Target(args.url, args.origin, args.site)
    pairs = await open_pairs(target, seeds)
    for pair in pairs:
        pair.track_acks = True
    sent: dict[int, list[str]] = {pair.index: [] for pair in pairs}

    async def until_closed(pair: Pair) -> None:
        number = 0
        while True:
            number += 1
            client_id = f"k{pair.index}-{number}"
            sent[pair.index].append(client_id)
            pair.ack_event.clear()
            try:
                await pair.volunteer_send(client_id, f"kill9 {client_id}")
            except ConnectionClosed:
                return
            await pair.ack_event.wait()
            if client_id not in pair.acked:
                return

    emit("loaded")
    await asyncio.gather(*(until_closed(pair) for pair in pairs))
    emit("disconnected")

    async def come_back(pair: Pair) -> None:
        deadline = time.perf_counter() + 60
        while True:
            try:
                await pair.reopen_volunteer(target)
                break
            except (OSError, TimeoutError, InvalidStatus) as error:
                # As the dashboard does, retry a refused handshake too.
                if time.perf_counter() > deadline:
                    raise RuntimeError("the relay did not come back") from error
                await asyncio.sleep(0.2 + random.random() * 0.3)
        for client_id in sent[pair.index]:
            if client_id not in pair.acked:
                pair.ack_event.clear()
                await pair.volunteer_send(client_id, f"kill9 {client_id}")
                while client_id not in pair.acked:
                    await asyncio.wait_for(pair.ack_event.wait(), 30)
                    pair.ack_event.clear()

    await gather_limited([come_back(pair) for pair in pairs])
    emit(
        "result",
        sent=sum(len(ids) for ids in sent.values()),
        acked=sorted(cid for pair in pairs for cid in pair.acked),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--origin", required=True)
    parser.add_argument("--site", required=True)
    parser.add_argument("--pairs", required=True, help="file of seeded pairs")
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--throughput-seconds", type=float, default=4.0)
    parser.add_argument("--latency-seconds", type=float, default=6.0)
    parser.add_argument("--kill9", action="store_true")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with open(args.pairs, encoding="utf-8") as file:
        seeds = [json.loads(line) for line in file][: args.n]
    import uvloop

    uvloop.run(run_kill9(args, seeds) if args.kill9 else run_load(args, seeds))
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
