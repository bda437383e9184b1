"""`sopkit serve` beside its limit: the same load on both, in turns, in one run.

`make bench-serve-limit` runs bench_serve.py's phases (single events, batches of 100, each
with the loop's drain; no lag phase) against, in turns:

- `sopkit serve` (the shop playbook, an SQLite store, the jsonl channel);
- the limit (benchmarks/serve_limit.py): the same endpoints and the same durable work
  written by hand with no sopkit, the loop a thread of the server's process, as in `serve`;
- the limit with its loop in a process of its own (what a second process would add).

`--rounds` times each (2 by default), each server fresh, so a shared machine's load falls on
all alike; the .md quotes medians and the ratio of `serve` to the limit. Results:
benchmarks/serve-limit-results.json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_serve as bs  # noqa: E402  (a sibling script, not a package)

SERVERS = ("sopkit serve", "limit", "limit, loop in its own process")
FIGURES = {"single_req_per_s": ("single", "accepted_requests_per_s"),
           "single_p99_ms": ("single", "p99_ms"),
           "batch_events_per_s": ("batch", "accepted_events_per_s"),
           "batch_applied_events_per_s": ("batch", "loop_events_per_s")}


def command(server: str, tmp: Path, port: int) -> list[str] | None:
    """The server's command line (None: `sopkit serve`, as bench_serve.py starts it)."""
    if server == "sopkit serve":
        return None
    return [sys.executable, str(ROOT / "benchmarks" / "serve_limit.py"), "--store",
            str(tmp / "bench.db"), "--sent", str(tmp / "sent.jsonl"), "--port", str(port),
            *(["--loop-process"] if "process" in server else [])]


async def phases(port: int, args: argparse.Namespace) -> dict[str, Any]:
    """bench_serve.py's closed-loop phases, each with its drain."""
    seq = await bs.profiles(port, args.customers)
    await bs.drain(port, seq, args.customers)
    single = await bs.closed_loop(port, args.clients, args.seconds, 1, args.customers, 1)
    bs.with_drain(single, await bs.drain(port, single["last_seq"],
                                         single["statuses"].get("202", 0)))
    batch = await bs.closed_loop(port, max(2, args.clients // 4), args.seconds, 100,
                                 args.customers, 2)
    bs.with_drain(batch, await bs.drain(port, batch["last_seq"],
                                        100 * batch["statuses"].get("202", 0)))
    return {"single": single, "batch": batch}


def figures(measured: dict[str, Any]) -> dict[str, float]:
    out = {}
    for name, (phase, key) in FIGURES.items():
        source = measured[phase]["drain"] if key == "loop_events_per_s" else measured[phase]
        out[name] = float(source[key])
    return out


def run(server: str, args: argparse.Namespace) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="sopkit-bench-serve-limit-") as tmp:
        port = bs.free_port()
        proc = bs.start_server(Path(tmp), port, args.engine, command(server, Path(tmp), port))
        try:
            measured = asyncio.run(phases(port, args))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=300)
        delivered = (Path(tmp) / "sent.jsonl").read_text(encoding="utf-8").count("\n")
        jailed = Path(tmp) / "quarantine.jsonl"
        quarantined = jailed.read_text(encoding="utf-8") if jailed.exists() else ""
        log = (Path(tmp) / "serve.log").read_text(encoding="utf-8", errors="replace")
    accepted = sum(measured[p]["statuses"].get("202", 0) * (100 if p == "batch" else 1)
                   for p in ("single", "batch"))
    if delivered != accepted:  # every accepted purchase makes one delivered thank-you
        raise SystemExit(f"{server}: {accepted} purchases accepted, {delivered} delivered; "
                         f"quarantined: {quarantined[:2000]}; log: {log[-2000:]}")
    return figures(measured)


def markdown(r: dict[str, Any]) -> str:
    med = r["medians"]
    head = "| figure | " + " | ".join(SERVERS) + " | serve / limit |\n" + \
        "|---" * (len(SERVERS) + 2) + "|"
    rows = []
    for name in FIGURES:
        values = [med[s][name] for s in SERVERS]
        ratio = values[0] / values[1] if values[1] else float("nan")
        rows.append(f"| {name} | " + " | ".join(f"{v:,.1f}" for v in values) +
                    f" | {ratio:.2f} |")
    each = "\n".join(f"- {s}: " + "; ".join(
        f"{name} " + ", ".join(f"{run[name]:,.1f}" for run in r["runs"][s])
        for name in FIGURES) for s in SERVERS)
    return f"""# `sopkit serve` beside its limit

{r['created']}, {r['machine']}, sopkit {r['commit'][:10]}, engine `{r['engine']}`,
{r['customers']:,} customers, {r['seconds']} s per phase, {r['rounds']} rounds, the servers
in turns; load average before {r['load_before']}, after {r['load_after']}
(`make bench-serve-limit`, benchmarks/bench_serve_limit.py; raw data:
serve-limit-results.json).

Medians over the rounds (the load of bench_serve.py: 16 connections sending single
events, then 4 sending batches of 100; "applied" is the loop's rate over a phase and its
drain, every thank-you delivered to the jsonl file and counted):

{head}
{chr(10).join(rows)}

Each run:
{each}

The limit (benchmarks/serve_limit.py) does the durable work `serve` must (the inbox
committed before the `202`, decisions and outbox rows committed with the loop's position,
the messages appended to the file and synced, the rows marked delivered) with none of
sopkit's generality. A figure of `serve` below its limit is sopkit's own cost; the limit's
figure is what this machine gives one Python process under this load.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--engine", default="durable", choices=("durable", "native"))
    parser.add_argument("--results", type=Path,
                        default=ROOT / "benchmarks" / "serve-limit-results.json")
    args = parser.parse_args(argv)
    load_before = [round(x, 2) for x in os.getloadavg()]
    runs: dict[str, list[dict[str, float]]] = {s: [] for s in SERVERS}
    for round_ in range(args.rounds):
        for server in SERVERS:
            runs[server].append(run(server, args))
            print(f"round {round_ + 1}, {server}: {runs[server][-1]}", file=sys.stderr)
    medians = {s: {name: statistics.median(run[name] for run in runs[s]) for name in FIGURES}
               for s in SERVERS}
    results = {
        **bs.stamp(), "engine": args.engine, "customers": args.customers,
        "seconds": args.seconds, "rounds": args.rounds, "load_before": load_before,
        "load_after": [round(x, 2) for x in os.getloadavg()], "runs": runs,
        "medians": medians,
    }
    bs.write(results, args.results, markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
