"""`sopkit serve` under load: accepted events per second, latency, and the lag to a decision.

`make bench-serve` starts a real `sopkit serve` (an SQLite store in a temporary directory,
the shop playbook of docs/http.md with a jsonl channel, an admin key) on 127.0.0.1 and
drives it from this process with concurrent keep-alive HTTP/1.1 connections (asyncio
streams: a client much cheaper than the server, so that the 2 cores go to the server):

1. single: C connections each POST one event per request to /v1/events, back to back;
   accepted events/s (202s), p50/p99 latency of a request.
2. batch: C connections POST arrays of 100 events; accepted events/s, latency.
3. drain: after each phase, how long the live loop takes to apply what was accepted (the
   loop's own rate: applying, committing the decisions, delivering to the jsonl file).
4. lag: requests of one event sent at a fixed rate (half the most the service sustained in
   phase 1: the lower of its accepted rate and its loop's rate; or --lag-rate), open loop;
   for each, the time from its 202 to the moment GET /readyz reports the loop's committed
   position at or past its `last_seq` (decisions and outbox rows committed in the same
   transaction), polled every 10 ms.

Each event is a purchase by one of --customers customers, all with a profile (so every
purchase makes a delivered thank-you); times are the wall clock (`serve` runs on the
system clock). Results: benchmarks/serve-results.json and .md, with the load average
before and after (the machine may be shared).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
KEY = "bench-admin-key-01"
# batch_applied_events_per_s: the batch target held to what the service sustains (the loop
# applying and delivering them), not only to what the inbox accepts while it fills
TARGETS = {"single_req_per_s": 1000, "single_p99_ms": 50, "batch_events_per_s": 10_000,
           "batch_applied_events_per_s": 10_000, "lag_p99_s": 2.0}
PLAYBOOK = """
[playbook]
name = "shop"
timezone = "Asia/Shanghai"

[profile]
name = "string"
phone = "string"

[events.purchase]
amount = "decimal"

[metrics]
purchases = { kind = "count", event = "purchase" }

[channels.out]
type = "jsonl"
path = "SENT"

[templates.thanks]
text = "{{ profile.name }}，感谢第 {{ purchases }} 次购买！"

[[rules]]
name = "thanks"
on = "purchase"
actions = [{ type = "send", channel = "out", template = "thanks" }]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Connection:
    """One keep-alive HTTP/1.1 connection: a request, then its whole answer."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}"
                f"\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
        self.writer.write(head.encode() + body)
        status_line = await self.reader.readline()
        if not status_line:  # the server closed an idle keep-alive connection: reconnect
            self.close()
            self.writer = None
            return await self.request(method, path, body)
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        payload = await self.reader.readexactly(length)
        return int(status_line.split()[1]), payload

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def now_text() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def purchase(rng: random.Random, customers: int) -> dict[str, Any]:
    return {"customer_id": f"c{rng.randrange(customers)}", "type": "purchase",
            "ts": now_text(), "amount": f"{rng.randint(5, 300)}.00"}


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def closed_loop(port: int, clients: int, seconds: float, per_request: int,
                      customers: int, seed: int) -> dict[str, Any]:
    """`clients` connections sending back to back for `seconds`."""
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    events = 0
    last_seq = 0
    stop_at = time.perf_counter() + seconds

    async def client(number: int) -> None:
        nonlocal events, last_seq
        rng = random.Random(seed * 1000 + number)
        conn = Connection(port)
        try:
            while time.perf_counter() < stop_at:
                records: Any = [purchase(rng, customers) for _ in range(per_request)]
                body = json.dumps(records[0] if per_request == 1 else records).encode()
                began = time.perf_counter()
                status, payload = await conn.request("POST", "/v1/events", body)
                latencies.append(time.perf_counter() - began)
                statuses[str(status)] = statuses.get(str(status), 0) + 1
                if status == 202:
                    events += per_request
                    last_seq = max(last_seq, json.loads(payload)["last_seq"])
                elif status == 429:
                    await asyncio.sleep(0.2)
        finally:
            conn.close()

    began = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    took = time.perf_counter() - began
    accepted = statuses.get("202", 0)
    return {"clients": clients, "events_per_request": per_request, "seconds": round(took, 2),
            "requests": sum(statuses.values()), "statuses": statuses,
            "accepted_requests_per_s": round(accepted / took, 1),
            "accepted_events_per_s": round(events / took, 1),
            "p50_ms": round(percentile(latencies, 50) * 1000, 2),
            "p99_ms": round(percentile(latencies, 99) * 1000, 2), "last_seq": last_seq}


async def position(conn: Connection) -> int:
    status, payload = await conn.request("GET", "/readyz")
    return int(json.loads(payload)["position"]) if status == 200 else -1


async def drain(port: int, last_seq: int, accepted_events: int) -> dict[str, Any]:
    """Wait until the loop has committed `last_seq`; the time it took from now."""
    conn = Connection(port)
    began = time.perf_counter()
    try:
        while await position(conn) < last_seq:
            await asyncio.sleep(0.05)
    finally:
        conn.close()
    took = time.perf_counter() - began
    return {"seconds_after_phase": round(took, 2), "events": accepted_events}


def with_drain(phase: dict[str, Any], drained: dict[str, Any]) -> dict[str, Any]:
    """The phase with its drain and the loop's rate over it: the events accepted over the
    phase and its drain (a lower bound: the loop may have idled early in the phase)."""
    busy = phase["seconds"] + drained["seconds_after_phase"]
    drained["loop_events_per_s"] = round(drained["events"] / busy, 1) if busy else 0.0
    phase["drain"] = drained
    return phase


async def lag(port: int, rate: float, seconds: float, customers: int,
              seed: int) -> dict[str, Any]:
    """Open loop at `rate` requests/s; the lag from each 202 to its committed decision."""
    rng = random.Random(seed)
    waiting: list[tuple[int, float]] = []  # (last_seq, when the 202 came)
    lags: list[float] = []
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    sending = True
    pool = [Connection(port) for _ in range(8)]
    free: asyncio.Queue[Connection] = asyncio.Queue()
    for conn in pool:
        free.put_nowait(conn)

    async def one() -> None:
        conn = await free.get()
        try:
            body = json.dumps(purchase(rng, customers)).encode()
            began = time.perf_counter()
            status, payload = await conn.request("POST", "/v1/events", body)
            answered = time.perf_counter()
            latencies.append(answered - began)
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            if status == 202:
                waiting.append((json.loads(payload)["last_seq"], answered))
        finally:
            free.put_nowait(conn)

    async def poll() -> None:
        conn = Connection(port)
        try:
            while sending or waiting:
                at = await position(conn)
                seen = time.perf_counter()
                still = []
                for seq, answered in waiting:
                    if seq <= at:
                        lags.append(seen - answered)
                    else:
                        still.append((seq, answered))
                waiting[:] = still
                await asyncio.sleep(0.01)
        finally:
            conn.close()

    poller = asyncio.create_task(poll())
    tasks = []
    began = time.perf_counter()
    sent = 0
    while (elapsed := time.perf_counter() - began) < seconds:
        due = int(elapsed * rate) + 1
        while sent < due:
            tasks.append(asyncio.create_task(one()))
            sent += 1
        await asyncio.sleep(0.002)
    await asyncio.gather(*tasks)
    took = time.perf_counter() - began
    sending = False
    await poller
    for conn in pool:
        conn.close()
    return {"rate_requested": round(rate, 1), "seconds": round(took, 2), "requests": sent,
            "statuses": statuses, "achieved_req_per_s": round(statuses.get("202", 0) / took, 1),
            "request_p50_ms": round(percentile(latencies, 50) * 1000, 2),
            "request_p99_ms": round(percentile(latencies, 99) * 1000, 2),
            "lag_p50_s": round(percentile(lags, 50), 3),
            "lag_p99_s": round(percentile(lags, 99), 3),
            "lag_max_s": round(max(lags, default=float("nan")), 3), "lags_measured": len(lags)}


async def profiles(port: int, customers: int) -> int:
    conn = Connection(port)
    last = 0
    try:
        for start in range(0, customers, 1000):
            batch = [{"customer_id": f"c{i}", "type": "profile", "ts": now_text(),
                      "name": f"顾客{i}", "phone": f"1380000{i % 10000:04d}"}
                     for i in range(start, min(start + 1000, customers))]
            status, payload = await conn.request("POST", "/v1/events",
                                                 json.dumps(batch).encode())
            assert status == 202, payload
            last = json.loads(payload)["last_seq"]
    finally:
        conn.close()
    return last


def start_server(tmp: Path, port: int, engine: str,
                 command: list[str] | None = None) -> subprocess.Popen[bytes]:
    """`sopkit serve` (or `command`: another server of the same endpoints) on `port`."""
    playbook = tmp / "shop.toml"
    playbook.write_text(PLAYBOOK.replace("SENT", str(tmp / "sent.jsonl")), encoding="utf-8")
    command = command or [sys.executable, "-m", "sopkit", "serve", str(playbook), "--store",
                          str(tmp / "bench.db"), "--port", str(port), "--engine", engine,
                          "--quarantine", str(tmp / "quarantine.jsonl")]
    env = {**os.environ, "SOPKIT_API_KEYS": f"admin:{KEY}", "LIMIT_KEY": KEY}
    with (tmp / "serve.log").open("wb") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log)
    for _ in range(400):  # a bounded wait for the real server to listen
        if proc.poll() is not None:
            raise SystemExit(f"serve exited {proc.returncode}: "
                             f"{(tmp / 'serve.log').read_text(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("serve did not start")


async def measure(port: int, args: argparse.Namespace) -> dict[str, Any]:
    seq = await profiles(port, args.customers)
    await drain(port, seq, args.customers)
    single = await closed_loop(port, args.clients, args.seconds, 1, args.customers, 1)
    with_drain(single, await drain(port, single["last_seq"], single["statuses"].get("202", 0)))
    batch = await closed_loop(port, max(2, args.clients // 4), args.seconds, 100,
                              args.customers, 2)
    with_drain(batch, await drain(port, batch["last_seq"],
                                  100 * batch["statuses"].get("202", 0)))
    # the most the whole service sustains: what it accepts, and what its loop applies
    rate = args.lag_rate or min(single["accepted_requests_per_s"],
                                single["drain"]["loop_events_per_s"]) / 2
    lagged = await lag(port, rate, args.seconds, args.customers, 3)
    return {"single": single, "batch": batch, "lag": lagged}


def verdicts(phases: dict[str, Any]) -> dict[str, dict[str, Any]]:
    got = {"single_req_per_s": phases["single"]["accepted_requests_per_s"],
           "single_p99_ms": phases["single"]["p99_ms"],
           "batch_events_per_s": phases["batch"]["accepted_events_per_s"],
           "batch_applied_events_per_s": phases["batch"]["drain"]["loop_events_per_s"],
           "lag_p99_s": phases["lag"]["lag_p99_s"]}
    at_most = {"single_p99_ms", "lag_p99_s"}
    return {name: {"target": target, "measured": got[name],
                   "met": got[name] <= target if name in at_most else got[name] >= target}
            for name, target in TARGETS.items()}


def phase_table(single: dict[str, Any], batch: dict[str, Any]) -> str:
    head = ("| phase | clients | requests | accepted events/s | p50 ms | p99 ms | statuses | "
            "loop drain after | loop events/s |\n|---|---|---|---|---|---|---|---|---|")
    rows = [f"| {name} | {p['clients']} | {p['requests']:,} | {p['accepted_events_per_s']:,} "
            f"| {p['p50_ms']} | {p['p99_ms']} | {p['statuses']} | "
            f"{p['drain']['seconds_after_phase']} s | {p['drain']['loop_events_per_s']:,} |"
            for name, p in (("single event", single), ("batches of 100", batch))]
    return "\n".join([head, *rows])


def markdown(r: dict[str, Any]) -> str:
    s, b, lg = r["phases"]["single"], r["phases"]["batch"], r["phases"]["lag"]
    rows = "\n".join(f"| {name} | {v['target']} | {v['measured']} | "
                     f"{'yes' if v['met'] else '**no**'} |" for name, v in r["targets"].items())
    return f"""# sopkit serve under load

{r['created']}, {r['machine']}, sopkit {r['commit'][:10]}, engine `{r['engine']}`,
{r['customers']:,} customers, {r['seconds']} s per phase{' (quick)' if r['quick'] else ''};
load average before {r['load_before']}, after {r['load_after']} (`make bench-serve`,
benchmarks/bench_serve.py; raw data: serve-results.json).

| target | wanted | measured | met |
|---|---|---|---|
{rows}

{phase_table(s, b)}

"Loop events/s": the events a phase accepted over the phase and the time the live loop took
after it to commit their decisions (and deliver the thank-yous to the jsonl file). The
batch phase's loop rate is also the target row `batch_applied_events_per_s`: accepted
events beyond it only wait in the inbox (up to `--max-inbox`, then `429`), so it is the
rate the service sustains.

Lag from the 202 to the committed decision, single events sent at {lg['rate_requested']}
requests/s (achieved {lg['achieved_req_per_s']}; request p50 {lg['request_p50_ms']} ms, p99
{lg['request_p99_ms']} ms): p50 {lg['lag_p50_s']} s, p99 {lg['lag_p99_s']} s, max
{lg['lag_max_s']} s over {lg['lags_measured']:,} requests (polled every 10 ms).

{r.get('notes', '')}
"""


def stamp() -> dict[str, str]:
    """When, on what machine and at which commit a result was measured."""
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True, check=False).stdout.strip()
    return {"created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
                       f"{platform.python_version()}", "commit": commit}


def write(results: dict[str, Any], path: Path, text: str) -> None:
    """The raw results as JSON at `path`, `text` beside it as .md and on stdout."""
    path.write_text(json.dumps(results, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    path.with_suffix(".md").write_text(text, encoding="utf-8")
    print(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 s phases (default 20 s)")
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--lag-rate", type=float, default=None,
                        help="requests/s for the lag phase (default: half of what phase 1 "
                        "sustained)")
    parser.add_argument("--engine", default="durable", choices=("durable", "native"))
    parser.add_argument("--notes", type=Path, default=None,
                        help="a Markdown file whose text ends the .md (what a profile showed)")
    parser.add_argument("--results", type=Path,
                        default=ROOT / "benchmarks" / "serve-results.json")
    args = parser.parse_args(argv)
    args.seconds = args.seconds or (5.0 if args.quick else 20.0)
    load_before = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="sopkit-bench-serve-") as tmp:
        port = free_port()
        proc = start_server(Path(tmp), port, args.engine)
        try:
            phases = asyncio.run(measure(port, args))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=300)
    results = {
        **stamp(), "engine": args.engine, "customers": args.customers,
        "seconds": args.seconds, "quick": args.quick, "load_before": load_before,
        "load_after": [round(x, 2) for x in os.getloadavg()], "phases": phases,
        "targets": verdicts(phases),
        "notes": args.notes.read_text(encoding="utf-8").strip() if args.notes else "",
    }
    write(results, args.results, markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
