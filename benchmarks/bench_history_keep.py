"""`sopkit serve --history-keep`: deleting kept history, and what the store file does.

`make bench-history-keep` (under a minute) fills an SQLite store's inbox with N kept purchase
events (default 200,000; one a minute from 2025-01-01, each as a served loop keeps it), then
expires the older half the way the served loop does (`Inbox.expire`, 500 rows a transaction,
the event time read from each row's `ts`), and appends the same number of new events again.
It reports the rows deleted per second, the longest single delete transaction (what an
ingest request can wait behind), the bytes a kept row takes, and the store file's size
after filling, after deleting, and after refilling: SQLite reuses the freed pages, so the
file stops growing rather than shrinking. Results: benchmarks/history-keep-results.json, .md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

from sopkit._lang.clock import Calendar
from sopkit._live.inbox import HISTORY, Entry, Inbox, Row
from sopkit._live.openstore import open_store

HERE = Path(__file__).parent
BATCH = 500  # as sopkit/_serve/service.py's EXPIRE_ROWS
START = dt.datetime(2025, 1, 1)


def _events(first: int, count: int) -> list[Entry]:
    return [Entry("sopkit", {"customer_id": f"c{i % 5000:05d}", "type": "purchase",
                             "ts": (START + dt.timedelta(minutes=i)).isoformat(),
                             "amount": "99.00", "event_id": f"e{i:09d}"})
            for i in range(first, first + count)]


def _fill(inbox: Inbox, first: int, count: int) -> int:
    last = 0
    for at in range(first, first + count, 1000):
        last = inbox.append(_events(at, min(1000, first + count - at)), now=0, after=last,
                            bound=10**9)
    return last


def measure(rows: int) -> dict[str, object]:
    cal = Calendar("Asia/Shanghai")

    def when(row: Row) -> int | None:
        return cal.parse_ts(json.loads(row.record)["ts"])

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "store.db"
        store = open_store(str(path), create=True)
        store.commit({}, {HISTORY: "yes"}, [])
        inbox = Inbox(str(path))
        try:
            last = _fill(inbox, 0, rows)
            filled = path.stat().st_size
            horizon = cal.parse_ts((START + dt.timedelta(minutes=rows // 2)).isoformat())
            longest, deleted, began = 0.0, 0, time.perf_counter()
            while True:
                t0 = time.perf_counter()
                gone, _ = inbox.expire(last, horizon, when, BATCH)
                longest = max(longest, time.perf_counter() - t0)
                deleted += gone
                if gone < BATCH:
                    break
            spent = time.perf_counter() - began
            after_delete = path.stat().st_size
            _fill(inbox, rows, rows // 2)
            refilled = path.stat().st_size
        finally:
            inbox.close()
            store.close()
    return {"rows": rows, "deleted": deleted, "delete_seconds": round(spent, 3),
            "rows_deleted_per_second": round(deleted / spent),
            "longest_transaction_ms": round(longest * 1000, 1),
            "bytes_per_row": round(filled / rows), "file_bytes_filled": filled,
            "file_bytes_after_delete": after_delete, "file_bytes_refilled": refilled}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    args = parser.parse_args()
    result = {"machine": f"{platform.machine()}, Python {sys.version.split()[0]}",
              **measure(args.rows)}
    (HERE / "history-keep-results.json").write_text(json.dumps(result, indent=2) + "\n",
                                                    encoding="utf-8")
    lines = ["# `serve --history-keep`: deleting kept history (SQLite)", "",
             "| measure | value |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in result.items()]
    (HERE / "history-keep-results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
