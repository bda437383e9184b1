"""`sopkit serve`'s live loop alone, on a pre-filled inbox: the rate it applies a backlog.

`make bench-serve-loop` builds, in a temporary directory, the SQLite store `sopkit serve`
would (the shop playbook of bench_serve.py: every purchase makes a thank-you delivered to a
jsonl file), appends 2,000 profiles and lets the loop apply them (not timed), then appends
--events purchases (100,000 by default) to the inbox, and times the served loop (the
`ServedLoop` of `sopkit serve`, with the options `serve` defaults to: history kept,
`--batch 200`) from its start until it has applied every record, committed the decisions
and delivered the thank-yous. No HTTP: only the loop's own rate under a backlog.

A/B: `--src DIR` (repeatable) measures the sopkit source tree in DIR instead of this
checkout (a copy of another commit, e.g. `git archive main | tar -x -C /tmp/base`); the
trees are measured in turns, `--rounds` times each, on the same machine, so a shared
machine's load falls on both alike. Each measurement runs in a fresh process.

Results: benchmarks/serve-loop-results.json and .md, with the load average before and after.
`--profile FILE` writes the cProfile of one run (this checkout) instead.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import inspect
import json
import os
import platform
import pstats
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_serve import PLAYBOOK  # noqa: E402  (the benchmarks folder is not a package)


def purchases(n: int, customers: int, seed: int, at: dt.datetime) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        ts = (at + dt.timedelta(microseconds=i)).isoformat(timespec="milliseconds")
        out.append({"customer_id": f"c{rng.randrange(customers)}", "type": "purchase",
                    "ts": ts, "amount": f"{rng.randint(5, 300)}.00"})
    return out


def serve_default(option: str) -> Any:
    """The default of one of `sopkit serve`'s options in the sopkit measured."""
    from sopkit._cli.serve import serve

    return inspect.signature(serve).parameters[option].default


def measure(events: int, customers: int, engine: str, profile: Path | None) -> dict[str, Any]:
    """One run in this process, on the sopkit that `import sopkit` finds."""
    import sopkit
    from sopkit._live.dispatch import Dispatcher, expiry
    from sopkit._live.inbox import Entry, Inbox
    from sopkit._live.loop import LiveRun, build_channels
    from sopkit._live.openstore import open_store
    from sopkit._playbook.load import load
    from sopkit._serve import service
    from sopkit._serve.service import FlushedQuarantine, LoopOptions, ServedLoop

    with tempfile.TemporaryDirectory(prefix="sopkit-bench-loop-") as name:
        tmp = Path(name)
        sent = tmp / "sent.jsonl"
        book = tmp / "shop.toml"
        book.write_text(PLAYBOOK.replace("SENT", str(sent)), encoding="utf-8")
        loaded = load(book)
        url = str(tmp / "bench.db")
        store = open_store(url)

        def clock() -> int:
            return int(time.time())

        live = LiveRun(loaded, store, engine=engine)
        live.send_from = clock() - 60
        channels = build_channels(loaded, os.environ)
        dispatcher = Dispatcher(store, channels, worker="bench", lease_seconds=60,
                                batch=getattr(service, "DISPATCH_ROWS", 100),
                                wall=clock, screens=(expiry, live.screen_consent))
        jail = FlushedQuarantine(tmp / "quarantine.jsonl", masked=True, append=True)
        inbox = Inbox(url)
        options = LoopOptions(clock=clock, lateness=60, batch=serve_default("batch"), tick=1.0,
                              max_future=300, max_inbox=10**9, history=True, keep=400 * 86400)
        now = dt.datetime.now(dt.UTC)

        def fill(records: list[dict[str, Any]]) -> None:
            for start in range(0, len(records), 1000):
                inbox.append([Entry("events", r) for r in records[start:start + 1000]],
                             clock(), live.offset, 10**9)

        cpus: list[float] = []

        def run_loop() -> float:
            loop = ServedLoop(live, dispatcher, inbox, jail, options)
            loop.shutdown = True  # apply what the inbox holds, then stop
            began, cpu = time.perf_counter(), time.process_time()
            loop._main()  # on this thread: the profiler sees it
            took = time.perf_counter() - began
            cpus.append(time.process_time() - cpu)
            if loop.error is not None:
                raise loop.error
            return took

        fill([{"customer_id": f"c{i}", "type": "profile",
               "ts": now.isoformat(timespec="milliseconds"), "name": f"顾客{i}",
               "phone": f"1380000{i % 10000:04d}"} for i in range(customers)])
        run_loop()
        fill(purchases(events, customers, 7, now + dt.timedelta(milliseconds=1)))
        delivered_before = sent.read_text(encoding="utf-8").count("\n") if sent.exists() else 0
        profiler = cProfile.Profile() if profile else None
        if profiler:
            profiler.enable()
        took = run_loop()
        if profiler:
            profiler.disable()
            assert profile is not None
            with profile.open("w", encoding="utf-8") as out:
                pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(60)
                out.write("\n\n")
                pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(40)
        delivered = sent.read_text(encoding="utf-8").count("\n") - delivered_before
        commits = live.store.get_meta("input.line")
        inbox.close()
        jail.close()
        store.close()
        for channel in channels.values():
            close = getattr(channel, "close", None)
            if close is not None:
                close()
        if delivered != events:
            raise SystemExit(f"{delivered} thank-yous delivered for {events} purchases")
        return {"src": str(Path(sopkit.__file__).resolve().parent.parent), "engine": engine,
                "events": events, "seconds": round(took, 3),
                "events_per_s": round(events / took, 1), "cpu_seconds": round(cpus[-1], 3),
                "position": commits}


def child(src: Path, events: int, customers: int, engine: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    done = subprocess.run([sys.executable, __file__, "--one", "--events", str(events),
                           "--customers", str(customers), "--engine", engine],
                          env=env, cwd=src, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"the run of {src} failed:\n{done.stderr}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def markdown(r: dict[str, Any]) -> str:
    rows = []
    for engine, by_src in r["summary"].items():
        for label, s in by_src.items():
            rows.append(f"| {engine} | {label} | {', '.join(f'{x:,.0f}' for x in s['runs'])} "
                        f"| {s['median']:,.0f} | "
                        f"{', '.join(f'{x:,.0f}' for x in s.get('cpu_us_per_event', []))} |")
    return f"""# sopkit serve: the live loop alone on a pre-filled inbox

{r['created']}, {r['machine']}, {r['events']:,} purchases by {r['customers']:,} customers
in the inbox (each a thank-you delivered to a jsonl file), SQLite store, `serve`'s default
options; trees measured in turns, {r['rounds']} rounds; load average before
{r['load_before']}, after {r['load_after']} (`make bench-serve-loop`,
benchmarks/bench_serve_loop.py; raw data: serve-loop-results.json).

| engine | tree | events/s, each run | median | loop CPU µs an event, each run |
|---|---|---|---|---|
{chr(10).join(rows)}

Trees: {'; '.join(f'`{k}`: {v}' for k, v in r['trees'].items())}. Events/s is the wall
clock from the loop's start until every record is applied, committed and delivered; the CPU
time is the loop process's own (what it costs whatever else runs on the machine).
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--engines", default="durable,native")
    parser.add_argument("--engine", default="durable", help=argparse.SUPPRESS)
    parser.add_argument("--src", type=Path, action="append", default=[],
                        help="another sopkit source tree to measure beside this checkout")
    parser.add_argument("--label", action="append", default=[],
                        help="a name for each --src in the results (default: its path)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--profile", type=Path, default=None)
    parser.add_argument("--results", type=Path,
                        default=ROOT / "benchmarks" / "serve-loop-results.json")
    args = parser.parse_args(argv)
    if args.one or args.profile:
        print(json.dumps(measure(args.events, args.customers, args.engine, args.profile)))
        return 0
    trees = {"this checkout": ROOT}
    for i, src in enumerate(args.src):
        trees[args.label[i] if i < len(args.label) else str(src)] = src.resolve()
    load_before = [round(x, 2) for x in os.getloadavg()]
    runs: dict[str, dict[str, list[float]]] = {}
    cpu: dict[str, dict[str, list[float]]] = {}  # the loop's CPU microseconds an event
    for _ in range(args.rounds):
        for engine in args.engines.split(","):
            for label, src in trees.items():
                got = child(src, args.events, args.customers, engine)
                print(f"{engine} {label}: {got['events_per_s']:,.0f} events/s", flush=True)
                runs.setdefault(engine, {}).setdefault(label, []).append(got["events_per_s"])
                cpu.setdefault(engine, {}).setdefault(label, []).append(
                    round(got["cpu_seconds"] / args.events * 1e6, 1))
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True, check=False).stdout.strip()
    results = {
        "created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
                   f"{platform.python_version()}",
        "commit": commit, "events": args.events, "customers": args.customers,
        "rounds": args.rounds, "load_before": load_before,
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "trees": {label: str(src) for label, src in trees.items()},
        "summary": {engine: {label: {"runs": values, "median": statistics.median(values),
                                     "cpu_us_per_event": cpu[engine][label]}
                             for label, values in by_src.items()}
                    for engine, by_src in runs.items()},
    }
    args.results.write_text(json.dumps(results, ensure_ascii=False, indent=1) + "\n",
                            encoding="utf-8")
    args.results.with_suffix(".md").write_text(markdown(results), encoding="utf-8")
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
