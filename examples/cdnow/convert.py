"""Convert the CDNOW purchase history into sopkit event and profile files.

Reads ``CDNOW_master.txt`` (69,659 purchases by 23,570 customers, 1997-01 to
1998-06; whitespace-separated columns: customer id, date YYYYMMDD, number of
CDs, dollar value) and writes two gzip'd JSON-lines files:

* ``events.jsonl.gz``: one ``purchase`` event per input row, sorted by
  ``ts``, then ``customer_id``, then original row order.
* ``profiles.jsonl.gz``: one synthetic profile per customer, drawn from a
  seeded RNG so every run is byte-identical.

Standard library only. See ``examples/cdnow/README.md`` for the field mapping.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

SEED = 20260101
DEFAULT_OUT = Path(__file__).resolve().parents[2] / "data" / "cdnow"

AMOUNT_RE = re.compile(r"(?:0|[1-9][0-9]*)\.[0-9]{2}")  # a valid JSON number, 2 decimals
REF_DAY = date(1997, 1, 1)  # ages are 18-70 on this day
BIRTH_MIN = date(1926, 1, 2)  # turns 71 on 1997-01-02
BIRTH_MAX = date(1979, 1, 1)  # turns 18 on 1997-01-01
FORCED_FEB29 = frozenset({29, 229, 2029, 12029, 20029})

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林高罗"
GIVEN_FEMALE = ("秀英", "丽", "敏", "静", "婷", "芳", "娜", "雪", "琳", "欣怡", "晓燕", "玉兰")
GIVEN_MALE = ("伟", "强", "磊", "军", "勇", "杰", "涛", "明", "超", "浩", "建华", "志强")
CITIES = ("北京", "上海", "广州", "深圳", "杭州", "成都", "南京", "武汉")
OWNERS = tuple(f"staff-{i:02d}" for i in range(1, 13))


@dataclass(frozen=True, slots=True)
class Purchase:
    """One input row; ``row`` is its 1-based index among the data rows."""

    row: int
    customer: int
    day: date
    quantity: int
    amount: str  # original text, e.g. "12.00"

    @property
    def customer_id(self) -> str:
        return f"cdnow-{self.customer:05d}"

    @property
    def ts(self) -> str:
        minutes = 600 + (self.customer * 37 + self.row) % 600  # 10:00 .. 19:59
        stamp = datetime.combine(self.day, datetime.min.time()) + timedelta(minutes=minutes)
        return stamp.isoformat()


def parse(text: str) -> list[Purchase]:
    """Parse CDNOW_master.txt content; a leading header line is skipped."""
    purchases: list[Purchase] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields or (not purchases and not fields[0].isdigit()):
            continue  # blank line or the "customer_id date ..." header
        if len(fields) != 4:
            raise ValueError(f"line {lineno}: expected 4 columns, got {len(fields)}")
        cust, ymd, qty, amount = fields
        if not AMOUNT_RE.fullmatch(amount):
            raise ValueError(f"line {lineno}: bad dollar value {amount!r}")
        day = datetime.strptime(ymd, "%Y%m%d").date()
        purchases.append(Purchase(len(purchases) + 1, int(cust), day, int(qty), amount))
    return purchases


def event_line(p: Purchase) -> str:
    # Built by hand so the amount is the original decimal text, not a float repr.
    return (
        f'{{"customer_id":"{p.customer_id}","type":"purchase","ts":"{p.ts}",'
        f'"amount":{p.amount},"quantity":{p.quantity}}}'
    )


def birthday(rng: random.Random, customer: int) -> date:
    born = BIRTH_MIN + timedelta(days=rng.randrange((BIRTH_MAX - BIRTH_MIN).days + 1))
    if customer in FORCED_FEB29:
        # Every multiple of 4 in 1928..1976 is a leap year (1900 and 2000 are out of range).
        return date(min(max(born.year - born.year % 4, 1928), 1976), 2, 29)
    return born


def profiles(purchases: Iterable[Purchase]) -> list[dict[str, Any]]:
    """One profile per customer, in customer order, from a seeded RNG."""
    joined: dict[int, date] = {}
    for p in purchases:
        if p.customer not in joined or p.day < joined[p.customer]:
            joined[p.customer] = p.day
    rng = random.Random(SEED)
    phones: set[str] = set()
    out: list[dict[str, Any]] = []
    for customer in sorted(joined):
        gender = rng.choice(("female", "male"))
        given = GIVEN_FEMALE if gender == "female" else GIVEN_MALE
        name = rng.choice(SURNAMES) + rng.choice(given)
        born = birthday(rng, customer)
        city = rng.choice(CITIES)
        phone = f"138{rng.randrange(10**8):08d}"
        while phone in phones:  # redraw the rare collision so phone numbers are unique
            phone = f"138{rng.randrange(10**8):08d}"
        phones.add(phone)
        out.append(
            {
                "customer_id": f"cdnow-{customer:05d}",
                "name": name,
                "gender": gender,
                "birthday": born.isoformat(),
                "city": city,
                "phone": phone,
                "email": f"u{customer:05d}@example.com",
                "owner": rng.choice(OWNERS),
                "joined": joined[customer].isoformat(),
                "vip": rng.random() < 0.10,
            }
        )
    return out


def write_gz(path: Path, lines: Iterable[str]) -> None:
    """Write UTF-8 lines to a gzip file with no name and mtime 0 (byte-identical reruns)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with (
        path.open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as gz,
    ):
        for line in lines:
            gz.write(line.encode("utf-8") + b"\n")


def read_source(path: Path | None) -> str:
    if path is not None:
        return path.read_text(encoding="ascii")
    hint = "pass the path to CDNOW_master.txt explicitly (see examples/cdnow/README.md)"
    try:
        source = resources.files("lifetimes") / "datasets" / "CDNOW_master.txt"
        return source.read_text(encoding="ascii")
    except ModuleNotFoundError as exc:  # lifetimes itself, or one of its dependencies
        raise SystemExit(f"cannot import `lifetimes` ({exc}); {hint}") from exc
    except FileNotFoundError as exc:
        raise SystemExit(f"`lifetimes` has no datasets/CDNOW_master.txt; {hint}") from exc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "source",
        nargs="?",
        type=Path,
        help="path to CDNOW_master.txt (default: the copy inside an installed `lifetimes`)",
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=DEFAULT_OUT,
        help="output directory (default: data/cdnow/ at the repository root)",
    )
    args = parser.parse_args(argv)

    purchases = parse(read_source(args.source))
    if not purchases:
        raise SystemExit("no purchases found in the input")
    events = sorted(purchases, key=lambda p: (p.ts, p.customer, p.row))
    people = profiles(purchases)

    out_dir: Path = args.out_dir
    write_gz(out_dir / "events.jsonl.gz", map(event_line, events))
    write_gz(
        out_dir / "profiles.jsonl.gz",
        (json.dumps(p, ensure_ascii=False, separators=(",", ":")) for p in people),
    )
    print(f"events:    {len(events)} -> {out_dir / 'events.jsonl.gz'}")
    print(f"customers: {len(people)} -> {out_dir / 'profiles.jsonl.gz'}")
    print(f"first ts:  {events[0].ts}")
    print(f"last ts:   {events[-1].ts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
