"""A deterministic, seeded generator of retail histories for the benchmarks.

    python benchmarks/generate.py --customers 100000 --years 1 --seed 20240101 --out DIR

writes into DIR:

- `profiles.jsonl`: one record per customer, in customer-id order: `customer_id`
  (`c0000001` …, fixed width so string order is number order), `name`, `birthday`, `owner`;
- `events.jsonl`: about 20 events per customer per year (10 to 30, uniformly), sorted by `ts`:
  purchases with `amount` (2 decimals) and `quantity`, and about 4% complaints with a
  `reason`; local times (no offset, so the playbook's Asia/Shanghai) between 08:00 and 22:00,
  so some fall before the 09:00 day start and belong to the previous playbook day;
- `meta.json`: the parameters, counts, the first and last `ts`, and the `--end` of the
  1-year and 5-year simulations.

Histories start on 2024-01-01. Each customer has an activity window per year: the whole year
(50%), only the first months, then silence (30%, "churners"), or only the last months (20%,
"late joiners"), so every rule of the retail playbook fires, including the churn recalls.

**Same events, longer runs.** The 5-year benchmark uses the 1-year file with `--end` four
years later: there is no 5-year file. The 2-year history (`--years 2`, for memory vs history
length) holds the same customers with the same first year, plus a second year of events at the
same rate: each customer's profile and events come from its own stream,
`random.Random(seed * 10**8 + number)`, drawn year by year, so year 1 does not depend on how
many years are drawn.

**Bounded memory.** Events are never held for all customers at once. Pass 1 generates one
customer at a time and appends each event line to the file of its week (a bucket; one
history year is 53 buckets). Pass 2 reads one bucket at a time, sorts it in memory, and
appends it to `events.jsonl`. Peak memory is one week of events: about 20 x N / 52 lines
(about 400,000 lines, 50 MB, for a million customers), whatever the number of years. Lines
start with `{"ts": …, "customer_id": …`, so sorting a bucket's lines sorts by time, then
customer, deterministically.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

GENERATOR_VERSION = 2
START = dt.date(2024, 1, 1)
BUCKET_DAYS = 7
SURNAMES = ("王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高郑梁谢宋唐许韩冯邓"
            "曹彭曾萧田董潘袁蔡蒋余于杜叶程魏苏吕丁任沈姚卢")
GIVEN = ["伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛",
         "明", "超", "秀英", "霞", "平", "刚", "桂英", "玉兰", "婷", "雪", "浩然", "子涵", "欣怡",
         "宇轩", "雨桐", "俊杰", "思远"]
REASONS = ["质量问题", "服务态度", "配送延迟", "价格争议", "退换货"]
OWNERS = 50


def customer_id(index: int) -> str:
    """The id of the customer numbered `index` (from 1): fixed width, so string order holds."""
    return f"c{index:07d}"


def end_of(years: int) -> str:
    """The `--end` of a simulation covering `years` from the start (local midnight)."""
    return f"{START.year + years}-01-01T00:00:00"


def _year_days(year_index: int) -> tuple[int, int]:
    """(first day offset from START, number of days) of history year `year_index` (0-based)."""
    first = dt.date(START.year + year_index, 1, 1)
    after = dt.date(START.year + year_index + 1, 1, 1)
    return (first - START).days, (after - first).days


def _profile(rng: random.Random, index: int) -> str:
    name = rng.choice(SURNAMES) + rng.choice(GIVEN)
    birthday = dt.date(1950, 1, 1) + dt.timedelta(days=rng.randrange(20454))  # to 2005-12-31
    owner = f"staff-{rng.randrange(1, OWNERS + 1):02d}"
    return json.dumps({"customer_id": customer_id(index), "name": name,
                       "birthday": birthday.isoformat(), "owner": owner},
                      ensure_ascii=False) + "\n"


def _year_events(rng: random.Random, cid: str, year_index: int) -> list[tuple[int, str]]:
    """(day offset from START, JSON line) of one customer's events in one history year."""
    first, days = _year_days(year_index)
    kind = rng.random()
    if kind < 0.5:  # a regular: the whole year
        low, high = 0, days - 1
    elif kind < 0.8:  # a churner: the first months, then silence
        low, high = 0, rng.randrange(60, 200)
    else:  # a late joiner: the last months
        low, high = rng.randrange(150, 300), days - 1
    out: list[tuple[int, str]] = []
    for _ in range(rng.randrange(10, 31)):
        offset = first + rng.randint(low, high)
        seconds = rng.randrange(8 * 3600, 22 * 3600)
        day = START + dt.timedelta(days=offset)
        ts = (f"{day.isoformat()}T{seconds // 3600:02d}:{seconds // 60 % 60:02d}:"
              f"{seconds % 60:02d}")
        if rng.random() < 0.04:
            reason = rng.choice(REASONS)
            line = (f'{{"ts": "{ts}", "customer_id": "{cid}", "type": "complaint", '
                    f'"reason": "{reason}"}}\n')
        else:
            amount = min(round(rng.lognormvariate(2.5, 0.8), 2), 5000.0)
            quantity = rng.randrange(1, 6)
            line = (f'{{"ts": "{ts}", "customer_id": "{cid}", "type": "purchase", '
                    f'"amount": {amount:.2f}, "quantity": {quantity}}}\n')
        out.append((offset, line))
    return out


def generate(customers: int, years: int, seed: int, out: Path,
             log: Any = None) -> dict[str, Any]:
    """Write profiles.jsonl, events.jsonl and meta.json for `customers` over `years`."""
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    buckets_dir = out / "buckets.tmp"
    if buckets_dir.exists():
        shutil.rmtree(buckets_dir)
    buckets_dir.mkdir()
    total_days = sum(_year_days(y)[1] for y in range(years))
    n_buckets = (total_days + BUCKET_DAYS - 1) // BUCKET_DAYS
    files = [(buckets_dir / f"{b:04d}.jsonl").open("w", encoding="utf-8", buffering=1 << 16)
             for b in range(n_buckets)]
    events = 0
    complaints = 0
    # pass 1: one customer at a time; each event line goes to its week's bucket
    with (out / "profiles.jsonl.tmp").open("w", encoding="utf-8") as profiles:
        for index in range(1, customers + 1):
            rng = random.Random(seed * 100_000_000 + index)
            profiles.write(_profile(rng, index))
            cid = customer_id(index)
            for year_index in range(years):
                for offset, line in _year_events(rng, cid, year_index):
                    files[offset // BUCKET_DAYS].write(line)
                    events += 1
                    complaints += '"complaint"' in line
            if log and index % 100_000 == 0:
                log(f"generate: {index:,} customers, {events:,} events")
    for handle in files:
        handle.close()
    # pass 2: one bucket at a time, sorted in memory, appended in time order
    digest = hashlib.sha256()
    first_ts = last_ts = ""
    with (out / "events.jsonl.tmp").open("w", encoding="utf-8") as sink:
        for b in range(n_buckets):
            path = buckets_dir / f"{b:04d}.jsonl"
            with path.open(encoding="utf-8") as source:
                lines = source.readlines()
            path.unlink()
            lines.sort()
            if lines:
                first_ts = first_ts or lines[0][8:27]
                last_ts = lines[-1][8:27]
            chunk = "".join(lines)
            digest.update(chunk.encode("utf-8"))
            sink.write(chunk)
    buckets_dir.rmdir()
    os.replace(out / "profiles.jsonl.tmp", out / "profiles.jsonl")
    os.replace(out / "events.jsonl.tmp", out / "events.jsonl")
    meta: dict[str, Any] = {
        "generator_version": GENERATOR_VERSION, "seed": seed, "customers": customers,
        "years": years, "events": events, "complaints": complaints,
        "purchases": events - complaints, "first_ts": first_ts, "last_ts": last_ts,
        "end_1y": end_of(1), "end_5y": end_of(5), "end": end_of(years),
        "events_sha256": digest.hexdigest(),
        "seconds": round(time.perf_counter() - started, 2),
        "peak_bucket_note": f"{n_buckets} buckets of {BUCKET_DAYS} days",
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return meta


def ensure(customers: int, years: int, seed: int, root: Path,
           log: Any = None) -> tuple[Path, dict[str, Any]]:
    """The directory of this input under `root`, generated unless already there (cached)."""
    out = root / f"retail-{customers}-{years}y-s{seed}"
    meta_path = out / "meta.json"
    if meta_path.exists() and (out / "events.jsonl").exists():
        meta: dict[str, Any] = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("generator_version") == GENERATOR_VERSION:
            return out, meta
    if log:
        log(f"generate: {customers:,} customers x {years} year(s) into {out}")
    return out, generate(customers, years, seed, out, log)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--years", type=int, default=1, help="years of history (events)")
    parser.add_argument("--seed", type=int, default=20240101)
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    args = parser.parse_args(argv)
    meta = generate(args.customers, args.years, args.seed, args.out,
                    log=lambda text: print(text, file=sys.stderr))
    print(json.dumps(meta, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
