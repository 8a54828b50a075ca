"""``make bench``: the relay against a raw ``websockets`` relay, side by side.

For each N in ``SIZES`` and each of ``REPEATS`` rounds, both servers run one
trial each, in alternating order, each on a fresh process: the relay as
``vso serve`` starts it (SQLite on disk, every message stored before its ack)
and ``bench/raw_relay.py``. A load generator in its own process (``load.py``)
opens N visitor–volunteer pairs and measures. Ratios are relay / baseline, from
the median of the rounds. Then the relay is killed with SIGKILL under load and
the acknowledged messages are counted in its database.

Writes ``bench/results/latest.json`` and the results section of
``docs/benchmarks.md``. Everything it starts is stopped on the way out.
"""

from __future__ import annotations

import gzip
import json
import os
import platform
import queue
import re
import resource
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from page_weight import nested_imports

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
DOC = ROOT / "docs" / "benchmarks.md"
SIZES = [int(n) for n in os.environ.get("BENCH_SIZES", "100,1000,5000").split(",")]
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
KILL9_PAIRS = 100
SECRET = "bench-secret-key-" + "b" * 32
SITE = "bench"
# BENCH_PROFILE=1 records the first relay trial at 1,000 pairs with py-spy:
# the whole trial, and each of these phases (name, seconds) on its own.
# Its numbers carry the profiler's cost, so such a run writes no results.
PROFILE = PROFILING_RUN = os.environ.get("BENCH_PROFILE") == "1"
PROFILED_PHASES = (("saturate", 5), ("paced", 7))
MARK_START = "<!-- results: written by make bench -->"
MARK_END = "<!-- end of results -->"

running: list[subprocess.Popen[Any]] = []


def log(text: str) -> None:
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {text}\n")
    sys.stderr.flush()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(
    command: list[str], env: dict[str, str], log_path: Path
) -> subprocess.Popen[Any]:
    with log_path.open("ab") as output:
        process = subprocess.Popen(
            command, env=env, stdout=output, stderr=subprocess.STDOUT, cwd=ROOT
        )
    running.append(process)
    return process


def stop(process: subprocess.Popen[Any], sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process in running:
        running.remove(process)


def wait_ready(url: str, process: subprocess.Popen[Any], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited with {process.returncode} at start")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not respond within {timeout} s")


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    return int(match.group(1)) if match else 0


class Relay:
    """``vso serve`` on a copy of the seeded database."""

    def __init__(self, workdir: Path, database: Path) -> None:
        self.port = free_port()
        self.database = database
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("VSO_")},
            "VSO_PORT": str(self.port),
            "VSO_DATABASE": str(database),
            "VSO_SECRET_KEY": SECRET,
            "VSO_PUBLIC_URL": f"http://127.0.0.1:{self.port}",
            "VSO_DEMO": "false",
            "VSO_LOG_LEVEL": "info",
            "VSO_VISITOR_GRACE_SECONDS": "86400",
            "VSO_VOLUNTEER_GRACE_SECONDS": "86400",
        }
        self.log_path = workdir / "relay.log"
        self.process: subprocess.Popen[Any] | None = None

    def start(self) -> None:
        self.process = start(
            [sys.executable, "-m", "relay", "serve"], self.env, self.log_path
        )
        wait_ready(f"http://127.0.0.1:{self.port}/readyz", self.process)


class Raw:
    """``bench/raw_relay.py``."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.log_path = workdir / "raw.log"
        self.process: subprocess.Popen[Any] | None = None

    def start(self) -> None:
        self.process = start(
            [sys.executable, str(BENCH / "raw_relay.py"), str(self.port)],
            dict(os.environ),
            self.log_path,
        )
        wait_ready(f"http://127.0.0.1:{self.port}/", self.process)


def read_event(
    process: subprocess.Popen[Any], name: str, timeout: float
) -> dict[str, Any]:
    """Return the next event called ``name`` the load generator prints."""
    lines: queue.Queue[str] = process.lines  # type: ignore[attr-defined]
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        try:
            line = lines.get(timeout=max(0.0, remaining))
        except queue.Empty:
            raise RuntimeError(
                f"the load generator sent no {name!r} in {timeout} s"
            ) from None
        if not line:
            raise RuntimeError(f"the load generator exited before {name!r}")
        event: dict[str, Any] = json.loads(line)
        if event["event"] == name:
            return event


def _pump(process: subprocess.Popen[Any], lines: queue.Queue[str]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        lines.put(line)
    lines.put("")


def loader(
    port: int, pairs_file: Path, n: int, workdir: Path, *extra: str
) -> subprocess.Popen[Any]:
    command = [
        sys.executable,
        str(BENCH / "load.py"),
        "--url",
        f"ws://127.0.0.1:{port}",
        "--origin",
        f"http://127.0.0.1:{port}",
        "--site",
        SITE,
        "--pairs",
        str(pairs_file),
        "--n",
        str(n),
        *extra,
    ]
    with (workdir / "load.log").open("ab") as errors:
        process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            cwd=ROOT,
        )
    running.append(process)
    process.lines = queue.Queue()  # type: ignore[attr-defined]
    threading.Thread(
        target=_pump,
        args=(process, process.lines),
        daemon=True,  # type: ignore[attr-defined]
    ).start()
    return process


def trial(
    kind: str, n: int, workdir: Path, seeded: Path, pairs_file: Path
) -> dict[str, Any]:
    if kind == "relay":
        database = workdir / "trial.sqlite3"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{database}{suffix}").unlink(missing_ok=True)
        shutil.copy(seeded, database)
        server: Relay | Raw = Relay(workdir, database)
    else:
        server = Raw(workdir)
    server.start()
    assert server.process is not None
    global PROFILE
    profiled = PROFILE and kind == "relay" and n == 1000
    if profiled:
        PROFILE = False
        profile(server.process.pid, "profile-relay-1000.txt")
    try:
        before = rss_kib(server.process.pid)
        load = loader(server.port, pairs_file, n, workdir)
        try:
            idle = read_event(load, "idle", 300)
            time.sleep(1.0)  # let the server settle before reading its memory
            after = rss_kib(server.process.pid)
            assert load.stdin is not None
            load.stdin.write("go\n")
            load.stdin.flush()
            if profiled:
                for phase, seconds in PROFILED_PHASES:
                    while read_event(load, "phase", 300)["name"] != phase:
                        pass
                    profile(
                        server.process.pid,
                        f"profile-relay-1000-{phase}.txt",
                        "--duration",
                        str(seconds),
                    )
            result = read_event(load, "result", 300)
        finally:
            stop(load, signal.SIGKILL)
    finally:
        stop(server.process)
    result.update(
        kind=kind,
        n=n,
        open_pairs_seconds=idle["open_seconds"],
        # /proc counts kibibytes; the goal is in kilobytes of 1,000 bytes.
        kb_per_idle_connection=(after - before) * 1.024 / (2 * n),
        rss_idle_kib=after,
    )
    log(
        f"{kind:5} N={n:5}: {result['messages_per_second']:8.0f} msg/s,"
        f" p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms,"
        f" {result['kb_per_idle_connection']:.1f} KB/conn,"
        f" 1000 connects {result['connect_1000_seconds']:.2f} s"
    )
    return result


def profile(pid: int, name: str, *options: str) -> None:
    """Record the relay with py-spy, each thread apart, as collapsed stacks."""
    output = RESULTS / name
    command = ["py-spy", "record", "--pid", str(pid), "--format", "raw"]
    command += ["--rate", "200", "--nonblocking", "--threads", "--output", str(output)]
    with (RESULTS / "py-spy.log").open("ab") as errors:
        process = subprocess.Popen(
            command + list(options), stdout=errors, stderr=errors
        )
    running.append(process)
    log(f"profiling the relay into {output}")


def kill9(workdir: Path, seeded: Path, pairs_file: Path) -> dict[str, int]:
    """Kill the relay with SIGKILL under load; count acked messages not stored."""
    database = workdir / "kill9.sqlite3"
    shutil.copy(seeded, database)
    relay = Relay(workdir, database)
    relay.start()
    load = loader(relay.port, pairs_file, KILL9_PAIRS, workdir, "--kill9")
    try:
        read_event(load, "loaded", 120)
        time.sleep(2.0)  # messages flow for two seconds before the crash
        assert relay.process is not None
        stop(relay.process, signal.SIGKILL)
        relay.start()
        result = read_event(load, "result", 180)
    finally:
        stop(load, signal.SIGKILL)
        if relay.process is not None:
            stop(relay.process)
    db = sqlite3.connect(database)
    try:
        stored = {
            row[0]
            for row in db.execute(
                "SELECT client_id FROM messages WHERE client_id LIKE 'k%'"
            )
        }
        # Bodies are encrypted at rest, so a resend is recognised by its
        # client_id, which the load generator keeps when it resends.
        duplicated = db.execute(
            "SELECT COUNT(*) - COUNT(DISTINCT conversation_id || ' ' || client_id)"
            " FROM messages WHERE client_id LIKE 'k%'"
        ).fetchone()[0]
    finally:
        db.close()
    acked = set(result["acked"])
    lost = len(acked - stored)
    log(f"kill -9: {len(acked)} acknowledged, {lost} lost, {duplicated} duplicated")
    return {"acked": len(acked), "lost": lost, "duplicated": duplicated}


def gzip_sizes(workdir: Path) -> dict[str, Any]:
    """Return the gzipped bytes of the loader and of the chat page with its assets.

    The assets are every script and style sheet the page links and what those
    import in turn.
    """
    directory = workdir / "demo"
    directory.mkdir()
    relay = Relay(directory, directory / "vso.sqlite3")
    relay.env["VSO_DEMO"] = "true"
    relay.start()
    try:
        base = f"http://127.0.0.1:{relay.port}"
        loader_js = httpx.get(f"{base}/widget/loader.js").content
        page = httpx.get(f"{base}/chat?site=demo").text
        assets = re.findall(r'<(?:script[^>]*src|link[^>]*href)="([^"]+)"', page)
        parts = {"/chat?site=demo": page.encode()}
        while assets:
            asset = assets.pop(0)
            if asset not in parts:
                parts[asset] = httpx.get(f"{base}{asset}").content
                assets.extend(nested_imports(parts[asset]))
    finally:
        assert relay.process is not None
        stop(relay.process)
    sizes = {name: len(gzip.compress(body, 9)) for name, body in parts.items()}
    return {
        "loader_gzip_bytes": len(gzip.compress(loader_js, 9)),
        "chat_page_gzip_bytes": sum(sizes.values()),
        "chat_page_parts": sizes,
    }


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"model name\s*:\s*(.+)", cpuinfo)
    memory = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
    return {
        "nproc": os.cpu_count(),
        "cpu": model.group(1).strip() if model else platform.processor(),
        "memory_gib": round(int(memory.group(1)) / 1024 / 1024, 1) if memory else None,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def median_of(trials: list[dict[str, Any]], kind: str, n: int, key: str) -> float:
    return statistics.median(
        t[key] for t in trials if t["kind"] == kind and t["n"] == n
    )


def summarise(trials: list[dict[str, Any]]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for n in SIZES:
        for kind in ("relay", "raw"):
            table[f"{kind}_{n}"] = {
                key: median_of(trials, kind, n, key)
                for key in (
                    "messages_per_second",
                    "p50_ms",
                    "p99_ms",
                    "kb_per_idle_connection",
                    "connect_1000_seconds",
                    "open_pairs_seconds",
                )
            }
    return table


def ratio(table: dict[str, Any], n: int, key: str) -> float | None:
    """Return relay / baseline, or None when N was not run or the baseline
    measured 0 (a machine so loaded that the baseline relayed nothing)."""
    if f"relay_{n}" not in table:
        return None
    baseline = table[f"raw_{n}"][key]
    if not baseline > 0:
        return None
    return round(table[f"relay_{n}"][key] / baseline, 4)


def write_doc(report: dict[str, Any]) -> None:
    m = report["machine"]
    table = report["medians"]
    lines = [
        MARK_START,
        "",
        f"Run of {report['finished_at']} on {m['nproc']} cores ({m['cpu']}),"
        f" {m['memory_gib']} GiB of memory, Linux {m['kernel']}, Python"
        f" {m['python']}; medians of {REPEATS} interleaved rounds, in"
        f" {report['duration_seconds']:.0f} s.",
        "",
        "| pairs | server | messages/s at saturation | p50 ms at 1/s | p99 ms at 1/s"
        " | KB per idle connection | 1,000 handshakes, s |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for n in SIZES:
        for kind, label in (("relay", "relay"), ("raw", "raw websockets")):
            row = table[f"{kind}_{n}"]
            lines.append(
                f"| {n:,} | {label} | {row['messages_per_second']:,.0f}"
                f" | {row['p50_ms']:.1f} | {row['p99_ms']:.1f}"
                f" | {row['kb_per_idle_connection']:.1f}"
                f" | {row['connect_1000_seconds']:.2f} |"
            )
    goals = report["goals"]
    lines += ["", "| goal | measured | met |", "|---|---:|---|"]
    for goal in goals.values():
        lines.append(
            f"| {goal['text']} | {goal['value']} | {'yes' if goal['met'] else 'no'} |"
        )
    lines += ["", MARK_END]
    text = (
        DOC.read_text()
        if DOC.exists()
        else f"# Benchmarks\n\n{MARK_START}\n{MARK_END}\n"
    )
    start_at = text.index(MARK_START)
    end_at = text.index(MARK_END) + len(MARK_END)
    DOC.write_text(text[:start_at] + "\n".join(lines) + text[end_at:])


def main() -> None:
    started = time.monotonic()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    RESULTS.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="vso-bench-"))
    try:
        sizes = gzip_sizes(workdir)
        log(
            f"loader {sizes['loader_gzip_bytes']} B,"
            f" chat page {sizes['chat_page_gzip_bytes']} B gzipped"
        )
        seeded = workdir / "seeded.sqlite3"
        pairs_file = workdir / "pairs.jsonl"
        log(f"seeding {max(SIZES)} pairs")
        with pairs_file.open("w") as output:
            subprocess.run(
                [
                    sys.executable,
                    str(BENCH / "seed.py"),
                    str(seeded),
                    SECRET,
                    str(max(SIZES)),
                ],
                stdout=output,
                check=True,
                cwd=ROOT,
            )
        trials = []
        for n in SIZES:
            for round_number in range(REPEATS):
                order = ("raw", "relay") if round_number % 2 == 0 else ("relay", "raw")
                for kind in order:
                    trials.append(trial(kind, n, workdir, seeded, pairs_file))
        crash = kill9(workdir, seeded, pairs_file)
        table = summarise(trials)
        report: dict[str, Any] = {
            "machine": machine(),
            "finished_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "duration_seconds": time.monotonic() - started,
            "throughput_ratio_vs_raw": ratio(table, 1000, "messages_per_second"),
            "throughput_ratio_vs_raw_5000": ratio(table, 5000, "messages_per_second"),
            "p99_latency_ratio_vs_raw": ratio(table, 1000, "p99_ms"),
            # At the most connections, where start-up allocations weigh least.
            "kb_per_idle_connection": round(
                table[f"relay_{max(SIZES)}"]["kb_per_idle_connection"], 1
            ),
            "connect_ratio_vs_raw": ratio(table, 1000, "connect_1000_seconds"),
            "loader_gzip_bytes": sizes["loader_gzip_bytes"],
            "chat_page_gzip_bytes": sizes["chat_page_gzip_bytes"],
            "chat_page_parts": sizes["chat_page_parts"],
            "lost_messages_after_kill9": crash["lost"],
            "duplicated_messages_after_kill9": crash["duplicated"],
            "acked_messages_in_kill9": crash["acked"],
            "medians": table,
            "trials": trials,
        }
        report["goals"] = goals(report)
        if PROFILING_RUN:
            log("a profiling run: results not written")
            return
        (RESULTS / "latest.json").write_text(json.dumps(report, indent=2) + "\n")
        write_doc(report)
        log(
            f"done in {report['duration_seconds']:.0f} s;"
            f" wrote {RESULTS / 'latest.json'}"
        )
    except BaseException:
        kept = RESULTS / "failed-logs"
        shutil.rmtree(kept, ignore_errors=True)
        kept.mkdir()
        for path in workdir.rglob("*.log"):
            shutil.copy(path, kept / f"{path.parent.name}-{path.name}")
        log(f"failed; the logs are in {kept}")
        raise
    finally:
        for process in list(running):
            stop(process, signal.SIGKILL)
        shutil.rmtree(workdir, ignore_errors=True)


def goals(report: dict[str, Any]) -> dict[str, Any]:
    def goal(text: str, value: Any, met: bool) -> dict[str, Any]:
        return {"text": text, "value": value, "met": bool(met)}

    def at_least(value: float | None, bound: float) -> bool:
        return value is not None and value >= bound

    def at_most(value: float | None, bound: float) -> bool:
        return value is not None and value <= bound

    r = report
    return {
        "throughput_1000": goal(
            "throughput at 1,000 pairs ≥ 0.6 × raw",
            r["throughput_ratio_vs_raw"],
            at_least(r["throughput_ratio_vs_raw"], 0.6),
        ),
        "throughput_5000": goal(
            "throughput at 5,000 pairs ≥ 0.5 × raw",
            r["throughput_ratio_vs_raw_5000"],
            at_least(r["throughput_ratio_vs_raw_5000"], 0.5),
        ),
        "p99": goal(
            "p99 latency at 1,000 pairs ≤ 3 × raw",
            r["p99_latency_ratio_vs_raw"],
            at_most(r["p99_latency_ratio_vs_raw"], 3),
        ),
        "memory": goal(
            "≤ 33 KB per idle connection",
            r["kb_per_idle_connection"],
            at_most(r["kb_per_idle_connection"], 33),
        ),
        "connect": goal(
            "1,000 handshakes ≤ 2.5 × raw",
            r["connect_ratio_vs_raw"],
            at_most(r["connect_ratio_vs_raw"], 2.5),
        ),
        "loader": goal(
            "loader ≤ 2 KB gzipped",
            r["loader_gzip_bytes"],
            r["loader_gzip_bytes"] <= 2048,
        ),
        "chat_page": goal(
            "chat page ≤ 15 KB gzipped",
            r["chat_page_gzip_bytes"],
            r["chat_page_gzip_bytes"] <= 15 * 1024,
        ),
        "kill9": goal(
            "no acknowledged message lost after kill -9",
            r["lost_messages_after_kill9"],
            r["lost_messages_after_kill9"] == 0,
        ),
    }


if __name__ == "__main__":
    main()
