"""`sopkit run` over a store of millions of customers: peak memory stays flat.

`make bench-live-memory` (about 15 minutes the first time, a few after: the stores are
cached until the playbook changes) generates SQLite stores of the CRM example
(examples/crm/crm.toml) with 500,000 and 5,000,000 customers, then runs, in a child process
each, on a fresh copy of the store:

    sopkit run examples/crm/crm.toml --store COPY --events DAY --once
        --clock 2025-06-02T00:00:00 --lateness 0s --engine native

DAY is one day of purchases (2025-06-01, 09:00 to 21:00) by 50,000 stored customers drawn
at random; besides, 20,000 stored customers have a recall wake-up due at the end of that
day (read from the store's next_wake index), whatever the store's size. The run holds at
most `--cache-customers` customers (default 100,000) and reads the others from the store
when an event or a wake-up needs them, so its peak RSS depends on the day's work, not on
how many customers are stored. Results: benchmarks/live-memory-results.json and .md (wall
and CPU time, peak RSS of the child from `os.wait4`, what it applied and wrote).

The stores are written with bulk SQL, not by running sopkit over a history: 40 template
customers are stepped through the runtime once (a purchase on a different day each, then
the clock advanced to the store's clock, 2025-06-01 00:00) and exported as `sopkit run`
stores them (docs/live.md#stored-state); each stored customer is a template's state with its
own id, name and phone, and its next_wake column is the template's wake-up. A third of the
customers have a wake-up later in June (a recall 30 days after their purchase), the 20,000
above have theirs due in the day, the rest are idle (no wake-up: not in the index).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sopkit  # noqa: E402  # the repository's sopkit, after the path is set
from sopkit._live.loop import fingerprint  # noqa: E402  # as above
from sopkit._live.sqlitestore import SQLiteStore  # noqa: E402  # as above

PLAYBOOK = ROOT / "examples" / "crm" / "crm.toml"
STORE_CLOCK = "2025-06-01T00:00:00"
RUN_CLOCK = "2025-06-02T00:00:00"
DAY = dt.datetime(2025, 6, 1, 9, 0)
ACTIVE = 50_000  # customers with events in the day
DUE = 20_000  # customers whose wake-up is due in the day
OWNERS = ("li.na", "wang.fang", "zhao.lei", "chen.jie")
NAMES = "王李张刘陈杨赵黄周吴"
DUE_TEMPLATE = 0  # bought 2025-05-03: the recall wakes them at 2025-06-02 00:00
LATER = range(1, 26)  # bought 2025-05-04 .. 05-28: recall wake-ups later in June
# (26 to 28, bought 05-29 .. 05-31, have a follow-up due in the day: not used, so the day's
# work is the same whatever the number of customers)
IDLE = range(29, 40)  # bought before 2025-05-02: recalled already, no wake-up
GENERATOR = 2  # bump when the generated stores change: cached ones are made again


def templates() -> tuple[list[tuple[bytes, int | None]], dict[str, str]]:
    """(state with the id `TPLxx`, next wake-up) of the 40 templates; the store's meta."""
    loaded = sopkit.load_playbook(PLAYBOOK)
    rt = sopkit.Runtime(loaded, engine="native")
    bought = [dt.date(2025, 5, 3) + dt.timedelta(days=k) for k in range(29)] + \
        [dt.date(2025, 4, 1) + dt.timedelta(days=3 * k) for k in range(11)]
    events = []
    for k, day in enumerate(bought):
        rt.add_profile({"customer_id": f"TPL{k:02d}", "name": "NAME", "phone": "PHONE",
                        "owner": OWNERS[k % len(OWNERS)]})
        events += [{"customer_id": f"TPL{k:02d}", "type": "purchase",
                    "ts": f"{day.isoformat()}T{10 + k % 9:02d}:00:00",
                    "amount": f"{20 + k}.00"}]
    for event in sorted(events, key=lambda e: (e["ts"], e["customer_id"])):
        rt.ingest(event)
    rt.advance(STORE_CLOCK)
    out = []
    for k in range(len(bought)):
        export = rt.export(f"TPL{k:02d}")
        wake = rt.customers[f"TPL{k:02d}"].wake_at
        out.append((export.data, wake))
    assert out[DUE_TEMPLATE][1] == rt.calendar.parse(RUN_CLOCK), out[DUE_TEMPLATE][1]
    assert all(out[k][1] is not None and out[k][1] > rt.calendar.parse(RUN_CLOCK)
               for k in LATER)
    assert all(out[k][1] is None for k in IDLE)
    meta = {"playbook": f"{rt.ir['playbook']}:{rt.ir['version']}",
            "fingerprint": fingerprint(rt.ir), "runtime": rt.export_clock().decode(),
            "ir": json.dumps(rt.ir, ensure_ascii=False, sort_keys=True, default=str)}
    return out, meta


def cid(number: int) -> str:
    return f"c{number:08d}"


def template_of(number: int, customers: int) -> int:
    """Which template customer `number` is: every customers//DUE-th is due in the day."""
    step = max(1, customers // DUE)
    if number % step == 0 and number // step < DUE:
        return DUE_TEMPLATE
    k = number % 3
    return LATER[number % len(LATER)] if k == 0 else IDLE[number % len(IDLE)]


def generate(path: Path, customers: int, seed: int) -> float:
    """A store of `customers` customers by bulk SQL; the seconds it took."""
    started = time.perf_counter()
    states, meta = templates()
    SQLiteStore(path).close()  # the schema, as sopkit creates it
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = OFF")
    db.execute("PRAGMA synchronous = OFF")
    db.execute("BEGIN")
    rng = random.Random(seed)
    chunk = 100_000
    for first in range(0, customers, chunk):
        rows = []
        for number in range(first, min(first + chunk, customers)):
            blob, wake = states[template_of(number, customers)]
            name = rng.choice(NAMES) + rng.choice("伟芳娜敏静丽强磊军洋")
            rows.append((cid(number), _state(blob, number, name), wake))
        db.executemany("INSERT INTO customers (customer_id, state, next_wake) "
                       "VALUES (?, ?, ?)", rows)
        if (first + chunk) % 1_000_000 == 0:
            print(f"  {first + chunk:,} customers", file=sys.stderr, flush=True)
    db.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", list(meta.items()))
    db.execute("COMMIT")
    db.close()
    return time.perf_counter() - started


def _state(blob: bytes, number: int, name: str) -> bytes:
    """A template's state as customer `number`'s: its id, name and phone."""
    tpl = blob[blob.index(b'"id":"') + 6:blob.index(b'"id":"') + 11]  # TPLxx
    return (blob.replace(tpl, cid(number).encode())
            .replace(b'"NAME"', json.dumps(name, ensure_ascii=False).encode())
            .replace(b'"PHONE"', f'"139{number:08d}"'.encode()))


def day_events(path: Path, customers: int, seed: int) -> int:
    """One day of purchases by ACTIVE stored customers (some twice); how many lines."""
    rng = random.Random(seed + 1)
    active = rng.sample(range(customers), min(ACTIVE, customers))
    events = []
    for number in active:
        for _ in range(1 if rng.random() < 0.8 else 2):
            when = DAY + dt.timedelta(seconds=rng.randint(0, 12 * 3600 - 1))
            events.append((when.isoformat(), cid(number), rng.randint(1000, 30000)))
    events.sort()
    with path.open("w", encoding="utf-8") as out:
        for ts, customer, cents in events:
            out.write(json.dumps({"customer_id": customer, "type": "purchase", "ts": ts,
                                  "amount": f"{cents // 100}.{cents % 100:02d}"}) + "\n")
    return len(events)


def current(path: Path) -> bool:
    """Whether a cached store was generated for the playbook as it is now."""
    rt = sopkit.Runtime(sopkit.load_playbook(PLAYBOOK), engine="native")
    store = SQLiteStore(path, create=False)
    try:
        return store.get_meta("fingerprint") == fingerprint(rt.ir)
    finally:
        store.close()


def measure(store: Path, events: Path, scratch: Path, cache: int | None) -> dict[str, Any]:
    """One `sopkit run --once` on a fresh copy of the store, in a child process."""
    copy = scratch / "run.db"
    for leftover in scratch.glob("run.db*"):
        leftover.unlink()
    shutil.copyfile(store, copy)
    cmd = [sys.executable, "-m", "sopkit", "run", str(PLAYBOOK), "--store", str(copy),
           "--events", str(events), "--once", "--clock", RUN_CLOCK, "--lateness", "0s",
           "--max-future", "none", "--engine", "native", "--quarantine",
           str(scratch / "quarantine.jsonl"), "--output", "jsonl"]
    if cache is not None:
        cmd += ["--cache-customers", str(cache)]
    with tempfile.TemporaryFile("w+", encoding="utf-8") as out, \
            tempfile.TemporaryFile("w+", encoding="utf-8") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        lines, errors = out.read().splitlines(), err.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{errors}")
    stats = json.loads(lines[-1])
    for leftover in scratch.glob("run.db*"):
        leftover.unlink()
    return {"customers": stats["customers"], "cache_customers": cache,
            "events_applied": stats["events_applied"], "rows_new": stats["rows_new"],
            "commits": stats["commits"], "outbox": stats["outbox"],
            "wall_s": round(wall, 1), "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            "peak_rss_mb": round(usage.ru_maxrss / 1024.0),
            "command": " ".join(["sopkit", *cmd[3:]])}


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# `sopkit run` over millions of stored customers: results",
        "",
        f"Measured {results['created']} on {results['machine']}, sopkit "
        f"{results['commit'][:12]}. Each row is one child process: `sopkit run "
        "examples/crm/crm.toml --store COPY --events DAY --once` on a fresh copy of a "
        f"generated store; DAY is {results['events']:,} purchases of {ACTIVE:,} stored "
        f"customers on 2025-06-01, and {DUE:,} stored customers have a wake-up due that day. "
        f"Target: peak RSS under 1 GB at 5,000,000 customers.",
        "",
        "| stored customers | store MB | generated in s | --cache-customers | events | "
        "new outbox rows | wall s | CPU s | peak RSS MB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in results["runs"]:
        cache = "default (100,000)" if run["cache_customers"] is None else \
            f"{run['cache_customers']:,}"
        lines.append(f"| {run['customers']:,} | {run['store_mb']:,} | {run['generate_s']} | "
                     f"{cache} | {run['events_applied']:,} | {run['rows_new']:,} | "
                     f"{run['wall_s']} | {run['cpu_s']} | {run['peak_rss_mb']} |")
    lines += ["", "Reproduce: `make bench-live-memory` (`benchmarks/bench_live_memory.py "
              "--help`; SIZES=500000 for one size).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="500000,5000000",
                        help="stored customers, comma-separated")
    parser.add_argument("--cache", type=int, default=None,
                        help="--cache-customers for the runs (default: sopkit's default)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--data", type=Path, default=ROOT / "benchmarks" / "data",
                        help="where the generated stores are cached")
    parser.add_argument("--scratch", type=Path, default=ROOT / "benchmarks" / "tmp")
    parser.add_argument("--results", type=Path,
                        default=ROOT / "benchmarks" / "live-memory-results.json")
    args = parser.parse_args(argv)
    args.data.mkdir(parents=True, exist_ok=True)
    args.scratch.mkdir(parents=True, exist_ok=True)
    runs = []
    total = 0
    for size in (int(s) for s in args.sizes.split(",")):
        store = args.data / f"live-memory-v{GENERATOR}-{size}.db"
        generated = 0.0
        if store.exists() and not current(store):
            print(f"{store} was generated for another version of the playbook",
                  file=sys.stderr)
            store.unlink()
        if not store.exists():
            print(f"generating {size:,} customers into {store}", file=sys.stderr, flush=True)
            partial = store.with_suffix(".partial.db")
            for leftover in store.parent.glob(partial.name + "*"):
                leftover.unlink()
            generated = generate(partial, size, args.seed)
            partial.rename(store)
        events = args.data / f"live-memory-day-{size}.jsonl"
        total = day_events(events, size, args.seed)
        print(f"running a day of {total:,} events over {size:,} customers", file=sys.stderr,
              flush=True)
        run = measure(store, events, args.scratch, args.cache)
        run.update(store_mb=round(store.stat().st_size / 2**20), generate_s=round(generated, 1))
        runs.append(run)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True, check=False).stdout.strip()
    results = {
        "created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
                   f"{platform.python_version()}",
        "commit": commit, "playbook": str(PLAYBOOK.relative_to(ROOT)), "events": total,
        "target_peak_rss_mb": 1024, "runs": runs,
    }
    args.results.write_text(json.dumps(results, ensure_ascii=False, indent=1) + "\n",
                            encoding="utf-8")
    args.results.with_suffix(".md").write_text(markdown(results), encoding="utf-8")
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
