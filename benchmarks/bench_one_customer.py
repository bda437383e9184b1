"""One customer with very many events: the cost per event must not grow with the window.

`make bench-one-customer` (a few minutes) runs benchmarks/one-customer.toml — windowed
count, sum, avg and max_count_per_key metrics over 30 days, each read by a rule's condition
— for one customer with 10k, 100k and 1M purchases, each size in its own child process:

    rt = Runtime(playbook, engine="native")
    rt.ingest(purchase) for each purchase   # spread evenly over 20 days: all in the window,
                                            # made one by one as the loop reads them
    rt.advance(60 days later)               # every purchase leaves its window again

Purchases are seeded: an amount of 10.00 to 500.00 (2 decimals) and one of 50 SKUs. Every
event makes the runtime ask each window when it next crosses a constant of a condition, and
every departure is an eviction, so a cost that grows with the window's size shows as µs per
event growing with N. Results: benchmarks/one-customer-results.json and .md (seconds, µs per
event, peak RSS, the actions, and the per-event cost at each size over the smallest's).

`--sopkit DIR` measures another checkout's sopkit (e.g. an older commit unpacked with
`git archive`) with the same playbook and events, `--sizes` other sizes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PLAYBOOK = ROOT / "benchmarks" / "one-customer.toml"
RESULTS = ROOT / "benchmarks" / "one-customer-results.json"
START = dt.datetime(2024, 3, 1, 0, 0, 0)
SPREAD = 20 * 86_400  # seconds the purchases are spread over (the window is 30 days)
AFTER = "2024-04-30T00:00:00"  # every purchase has left its window by then
SEED = 20261204


def parse_size(text: str) -> int:
    """10k -> 10000, 1M -> 1000000, 2500 -> 2500."""
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:].lower(), 1)
    return int(text[:-1] if scale > 1 else text) * scale


def purchases(n: int) -> Iterator[dict[str, Any]]:
    """n seeded purchases by customer c1, oldest first, all within SPREAD (made as they are
    read, like a stream: a million held at once would be what the cyclic GC walks)."""
    rnd = random.Random(SEED)
    for i in range(n):
        ts = START + dt.timedelta(seconds=i * SPREAD // n)
        yield {"customer_id": "c1", "type": "purchase", "ts": ts.isoformat(),
               "amount": str(Decimal(rnd.randint(1_000, 50_000)).scaleb(-2)),
               "sku": f"sku-{rnd.randrange(50)}"}


def child(n: int) -> dict[str, Any]:
    """Run one size in this process: the measurement as a dict."""
    import sopkit

    events = purchases(n)
    rt = sopkit.Runtime(sopkit.load_playbook(PLAYBOOK), engine="native")
    by_rule: dict[str, int] = {}
    wall, cpu = time.perf_counter(), time.process_time()
    for record in events:
        for action in rt.ingest(record):
            by_rule[action.rule] = by_rule.get(action.rule, 0) + 1
    ingest_s = time.perf_counter() - wall
    for action in rt.advance(AFTER):
        by_rule[action.rule] = by_rule.get(action.rule, 0) + 1
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"events": n, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
            "ingest_s": round(ingest_s, 3), "us_per_event": round(cpu / n * 1e6, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "actions": dict(sorted(by_rule.items())), "sopkit": sopkit.__file__}


def measure(n: int, sopkit_dir: Path) -> dict[str, Any]:
    """One size in a child process with `sopkit_dir` first on its path."""
    env = dict(os.environ, PYTHONPATH=str(sopkit_dir))
    proc = subprocess.run([sys.executable, __file__, "--child", str(n)], env=env, check=True,
                          capture_output=True, text=True)
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def commit(directory: Path) -> str:
    proc = subprocess.run(["git", "-C", str(directory), "rev-parse", "--short=12", "HEAD"],
                          capture_output=True, text=True, check=False)
    return proc.stdout.strip() or "?"


def write(results: dict[str, Any], path: Path) -> None:
    """The results as JSON and as a Markdown table next to it."""
    path.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    runs = results["runs"]
    lines = [
        "# One customer with very many events: results", "",
        f"Measured {results['created']} on {results['machine']}, sopkit {results['commit']}. "
        f"Playbook: [`one-customer.toml`](one-customer.toml) (windowed count, sum, avg and "
        f"max_count_per_key over 30 days, each in a rule's condition). One customer's "
        f"purchases, spread evenly over 20 days (all inside the window), then an advance to "
        f"{AFTER} as they all leave it; one child process a size.", "",
        "| events | wall s | CPU s | CPU µs/event | µs/event vs smallest | peak RSS MB | actions |",
        "|---:|---:|---:|---:|---:|---:|---|",
    ]
    base = runs[0]["us_per_event"]
    for run in runs:
        actions = ", ".join(f"{rule} {n}" for rule, n in run["actions"].items())
        lines.append(f"| {run['events']:,} | {run['wall_s']:.2f} | {run['cpu_s']:.2f} | "
                     f"{run['us_per_event']:.1f} | {run['us_per_event'] / base:.2f}x | "
                     f"{run['peak_rss_mb']:,} | {actions} |")
    grow = runs[-1]["events"] / runs[0]["events"]
    lines += ["", f"Growth: {grow:,.0f} times the events cost "
              f"{runs[-1]['cpu_s'] / runs[0]['cpu_s']:,.0f} times the CPU time, "
              f"{runs[-1]['us_per_event'] / base:.2f} times as much per event (a cost "
              f"quadratic in the window's size would be {grow:,.0f} times as much per event)."]
    baseline = results.get("baseline")
    if baseline:
        lines += ["", f"Before (sopkit {baseline['commit']}, the same playbook and events, "
                  "measured with `--sopkit` on a `git archive` of that commit):", "",
                  "| events | CPU s | CPU µs/event | µs/event vs smallest | now, CPU s | "
                  "before / now |", "|---:|---:|---:|---:|---:|---:|"]
        now = {run["events"]: run for run in [*results.get("also", []), *runs]}
        first = baseline["runs"][0]["us_per_event"]
        for run in baseline["runs"]:
            mine = now.get(run["events"])
            lines.append(f"| {run['events']:,} | {run['cpu_s']:.2f} | {run['us_per_event']:,.0f} "
                         f"| {run['us_per_event'] / first:.2f}x | "
                         + (f"{mine['cpu_s']:.2f} | {run['cpu_s'] / mine['cpu_s']:,.0f}x |"
                            if mine else "| |"))
        lines += ["", "(\"now\" at sizes outside the table above: `--sizes` runs of this "
                  "checkout, kept under \"also\" in the JSON.)"] if results.get("also") else []
    lines += ["", "Reproduce: `make bench-one-customer` (`benchmarks/bench_one_customer.py "
              "--help`; `--baseline` adds another checkout's results as above)."]
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10k,100k,1M", help="events per run (10k,100k,1M)")
    parser.add_argument("--sopkit", type=Path, default=ROOT,
                        help="the checkout whose sopkit to measure (default: this one)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the JSON to write")
    parser.add_argument("--baseline", type=Path,
                        help="a results JSON of another checkout to show side by side")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(args.child)))
        return 0
    runs = []
    for size in args.sizes.split(","):
        run = measure(parse_size(size), args.sopkit.resolve())
        print(f"{run['events']:>9,} events: {run['cpu_s']:8.2f} s CPU, "
              f"{run['us_per_event']:8.1f} µs/event, {run['peak_rss_mb']} MB", flush=True)
        runs.append(run)
    write({"created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
           "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
                      f"{platform.python_version()}",
           "commit": commit(args.sopkit), "playbook": str(PLAYBOOK.relative_to(ROOT)),
           "runs": runs,
           "baseline": json.loads(args.baseline.read_text()) if args.baseline else None},
          args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
