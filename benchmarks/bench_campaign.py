"""Campaign audiences over a million stored customers: time and memory, streamed from a store.

`make bench-campaign` (about 20 minutes the first time, a few after: the store is cached
until the playbook changes)
generates a synthetic SQLite store of the retail playbook with N customers (default
1,000,000), then measures, each in its own child process,

    sopkit campaign preview playbooks/retail.toml CAMPAIGN --store STORE --at AT
        --engine ENGINE --output jsonl

for the retail playbook's two campaigns: `double12_coupon` (every customer goes to the
engine: `days_since_purchase <= 90 and stage != "dormant"`) and `weekly_owner_reminder`
(two required tags, checked on the state before the engine). The preview reads the
customers page by page (1,000 at a time, by customer id), evaluates the audience as of AT
and keeps only counters and the first 10 members, so peak memory does not grow with N.
Results: benchmarks/campaign-results.json and .md (wall and CPU time, customers per
second, peak RSS of the child, the audience found).

The store is built through the public embedding API, 10,000 customers at a time: each
customer gets a profile and 1 to 12 purchases in 2024 (seeded, per customer), a Runtime
replays them in time order and advances to 2025-01-01, and `Runtime.export_changed` gives
each customer's state as `sopkit run` stores it (documented JSON, docs/live.md#stored-state).
Each chunk has its own Runtime, so staff task capacity is counted per chunk.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sopkit  # noqa: E402  # the repository's sopkit, after the path is set
from sopkit._live.loop import fingerprint  # noqa: E402  # as above
from sopkit._live.sqlitestore import SQLiteStore  # noqa: E402  # as above

PLAYBOOK = ROOT / "playbooks" / "retail.toml"
NOW = "2025-01-01T09:00:00"  # the store's clock
AT = "2025-01-06T09:00:00"  # a Monday: the weekly reminder's firing time
CAMPAIGNS = ("double12_coupon", "weekly_owner_reminder")
CHUNK = 10_000
NAMES = "王李张刘陈杨赵黄周吴"
CITIES = ("上海", "北京", "杭州", "广州", "深圳", "成都")


def _customer(number: int, seed: int, year: dt.datetime
              ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One customer's profile record and purchase events (seeded by its number)."""
    rng = random.Random(seed * 10**8 + number)
    cid = f"c{number:07d}"
    profile = {
        "customer_id": cid, "owner": f"staff-{rng.randint(1, 50):02d}",
        "name": rng.choice(NAMES) + rng.choice("伟芳娜敏静丽强磊军洋"),
        "gender": rng.choice(("female", "male")), "city": rng.choice(CITIES),
        "birthday": dt.date(rng.randint(1950, 2005), rng.randint(1, 12),
                            rng.randint(1, 28)).isoformat(),
        "vip": rng.random() < 0.05,
    }
    quiet = rng.random() < 0.4  # 40% stopped buying in the first half of the year
    span = 180 if quiet else 365
    events = [{"customer_id": cid, "type": "purchase",
               "ts": (year + dt.timedelta(seconds=rng.randint(0, span * 86400))).isoformat(),
               "amount": str(Decimal(rng.randint(300, 9000)) / 100),
               "quantity": rng.randint(1, 3)}
              for _ in range(rng.randint(1, 12))]
    return profile, events


def generate(path: Path, customers: int, seed: int) -> float:
    """Write a store of `customers` settled retail customers; return the seconds it took."""
    started = time.perf_counter()
    loaded = sopkit.load_playbook(PLAYBOOK)
    year = dt.datetime(2024, 1, 1)
    store = SQLiteStore(path)
    try:
        rt = sopkit.Runtime(loaded, engine="native")
        for first in range(1, customers + 1, CHUNK):
            rt = sopkit.Runtime(loaded, engine="native")
            events: list[dict[str, Any]] = []
            for number in range(first, min(first + CHUNK, customers + 1)):
                profile, bought = _customer(number, seed, year)
                rt.add_profile(profile)
                events += bought
            for event in sorted(events, key=lambda e: (e["ts"], e["customer_id"])):
                rt.ingest(event)
            rt.advance(NOW)  # scores, tags and stage as of the clock
            store.commit({item.customer_id: item.data for item in rt.export_changed()}, {}, [])
            done = first + CHUNK - 1
            if done % 100_000 == 0:
                print(f"  {done:,} customers", file=sys.stderr, flush=True)
        store.commit({}, {"playbook": f"{rt.ir['playbook']}:{rt.ir['version']}",
                          "fingerprint": fingerprint(rt.ir),
                          "runtime": rt.export_clock().decode()}, [])
    finally:
        store.close()
    return time.perf_counter() - started


def current(path: Path) -> bool:
    """Whether a cached store was generated for the playbook as it is now."""
    rt = sopkit.Runtime(sopkit.load_playbook(PLAYBOOK), engine="native")
    store = SQLiteStore(path)
    try:
        return store.get_meta("fingerprint") == fingerprint(rt.ir)
    finally:
        store.close()


def measure(campaign: str, store: Path, engine: str) -> dict[str, Any]:
    """One preview in a child process: wall, CPU, peak RSS and what it found."""
    cmd = [sys.executable, "-m", "sopkit", "campaign", "preview", str(PLAYBOOK), campaign,
           "--store", str(store), "--at", AT, "--engine", engine, "--output", "jsonl"]
    with tempfile.TemporaryFile("w+", encoding="utf-8") as out, \
            tempfile.TemporaryFile("w+", encoding="utf-8") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        text, errors = out.read(), err.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{errors}")
    found = json.loads(text)
    cpu = usage.ru_utime + usage.ru_stime
    return {"campaign": campaign, "engine": engine, "customers": found["customers"],
            "audience": found["audience"], "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
            "customers_per_s": round(found["customers"] / wall),
            "peak_rss_mb": round(usage.ru_maxrss / 1024.0), "command": " ".join(cmd[1:])}


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# Campaign audiences over a stored million: results",
        "",
        f"Measured {results['created']} on {results['machine']}, sopkit "
        f"{results['commit'][:12]}; store: {results['customers']:,} customers, "
        f"{results['store_mb']:,} MB ({results['store']}), generated in "
        f"{results['generate_s']:.0f} s (cached afterwards). Each row is one child process: "
        "`sopkit campaign preview ... --store` streaming the store page by page.",
        "",
        "| campaign | engine | customers | audience | wall s | CPU s | customers/s | "
        "peak RSS MB |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for run in results["runs"]:
        lines.append(f"| {run['campaign']} | {run['engine']} | {run['customers']:,} | "
                     f"{run['audience']:,} | {run['wall_s']} | {run['cpu_s']} | "
                     f"{run['customers_per_s']:,} | {run['peak_rss_mb']} |")
    lines += ["", "Reproduce: `make bench-campaign` (`benchmarks/bench_campaign.py --help`).",
              ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--engines", default="native,durable")
    parser.add_argument("--store", type=Path, default=None,
                        help="default: benchmarks/data/campaign-<N>.db (cached)")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" /
                        "campaign-results.json")
    args = parser.parse_args(argv)
    store = args.store or ROOT / "benchmarks" / "data" / f"campaign-{args.customers}.db"
    store.parent.mkdir(parents=True, exist_ok=True)
    generated = 0.0
    if store.exists() and not current(store):
        print(f"{store} was generated for another version of the playbook", file=sys.stderr)
        store.unlink()
    if not store.exists():
        print(f"generating {args.customers:,} customers into {store}", file=sys.stderr)
        partial = store.with_suffix(".partial.db")
        for leftover in store.parent.glob(partial.name + "*"):
            leftover.unlink()
        generated = generate(partial, args.customers, args.seed)
        partial.rename(store)
    runs = []
    for engine in args.engines.split(","):
        for campaign in CAMPAIGNS:
            print(f"measuring {campaign} with {engine}", file=sys.stderr, flush=True)
            runs.append(measure(campaign, store, engine))
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True, check=False).stdout.strip()
    results = {
        "created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
                   f"{platform.python_version()}",
        "commit": commit, "customers": args.customers, "store": store.name,
        "store_mb": round(store.stat().st_size / 2**20), "generate_s": round(generated, 1),
        "runs": runs,
    }
    args.results.write_text(json.dumps(results, ensure_ascii=False, indent=1) + "\n",
                            encoding="utf-8")
    args.results.with_suffix(".md").write_text(markdown(results), encoding="utf-8")
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
