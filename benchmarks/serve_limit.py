"""The limit of `sopkit serve`: bench_serve.py's shop service written by hand, no sopkit.

What one Python process at best sustains on this machine for the work issue 16 asks of
`serve`, with everything sopkit does generically taken out. It serves the two endpoints
bench_serve.py drives, on uvicorn with httptools and uvloop (a bare ASGI callable, no
FastAPI), and does the same durable work in the same order:

- `POST /v1/events` (one event or an array): the bearer key checked, the JSON decoded,
  each event checked (customer id, type `profile` or `purchase`, an ISO 8601 `ts`, a
  decimal `amount`), the batch appended to an SQLite inbox (WAL, `synchronous = FULL`) and
  committed before the `202` (concurrent requests share one commit, as `serve`'s group
  commit does), answered with the last sequence number;
- the live loop (a thread, or with `--loop-process` a process of its own): reads the inbox
  in order, 2,000 rows at a time; per purchase, counts it and renders the thank-you; writes
  the changed customers' state, the outbox rows and its position in one transaction;
- the dispatcher, after each such commit: appends the messages to a jsonl file, fsyncs it,
  and marks the rows delivered in one transaction;
- `GET /readyz`: the loop's committed position.

Left out, because a lower bound needs none of it: masking, templates (an f-string),
quarantine, de-duplication by event id, the rule engine, metrics, auth scopes, problem
documents, backpressure. So `serve` can only be slower; how much slower is the gap a
faster design could close, and the limit's own rate is what no design in one Python
process here would beat.

    python benchmarks/bench_serve.py --limit [--loop-process] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import multiprocessing
import os
import sqlite3
import threading
import time
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import uvicorn

KEY = os.environ.get("LIMIT_KEY", "")


def connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=60)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    return db


def create(path: Path) -> None:
    db = connect(path)
    db.executescript("""
        CREATE TABLE IF NOT EXISTS inbox (seq INTEGER PRIMARY KEY, body TEXT NOT NULL);
        CREATE TABLE IF NOT EXISTS state (customer TEXT PRIMARY KEY, body TEXT NOT NULL);
        CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY, customer TEXT NOT NULL,
            body TEXT NOT NULL, status TEXT NOT NULL);
        CREATE TABLE IF NOT EXISTS position (id INTEGER PRIMARY KEY CHECK (id = 1),
            seq INTEGER NOT NULL);
        INSERT OR IGNORE INTO position VALUES (1, 0);
    """)
    db.close()


def valid(event: Any) -> bool:
    """The event checks `serve` makes before it accepts an event, in short."""
    if not isinstance(event, dict) or not isinstance(event.get("customer_id"), str):
        return False
    try:
        dt.datetime.fromisoformat(event["ts"])
        if event.get("type") == "purchase":
            Decimal(event["amount"])
        elif event.get("type") != "profile":
            return False
    except (KeyError, TypeError, ValueError, InvalidOperation):
        return False
    return True


def loop(path: Path, sent: Path, stop: Any, idle: float = 0.005) -> None:
    """Apply the inbox in order, commit decisions with the position, deliver, mark."""
    db = connect(path)
    position = db.execute("SELECT seq FROM position").fetchone()[0]
    customers: dict[str, dict[str, Any]] = {}
    with sent.open("a", encoding="utf-8") as out:
        while not stop.is_set():
            rows = db.execute("SELECT seq, body FROM inbox WHERE seq > ? ORDER BY seq LIMIT 2000",
                              (position,)).fetchall()
            if not rows:
                time.sleep(idle)
                continue
            changed: dict[str, dict[str, Any]] = {}
            messages: list[tuple[str, str]] = []
            for _, body in rows:
                event = json.loads(body)
                cid = event["customer_id"]
                state = customers.get(cid)
                if state is None:
                    state = customers[cid] = {"name": None, "phone": None, "purchases": 0}
                if event["type"] == "profile":
                    state["name"], state["phone"] = event.get("name"), event.get("phone")
                else:
                    state["purchases"] += 1
                    text = f"{state['name']}，感谢第 {state['purchases']} 次购买！"
                    messages.append((cid, json.dumps(
                        {"customer_id": cid, "rule": "thanks", "channel": "out", "text": text,
                         "ts": event["ts"]}, ensure_ascii=False)))
                changed[cid] = state
            position = rows[-1][0]
            db.execute("BEGIN IMMEDIATE")
            db.executemany("INSERT OR REPLACE INTO state VALUES (?, ?)",
                           [(cid, json.dumps(s, ensure_ascii=False)) for cid, s in changed.items()])
            first = db.execute("SELECT coalesce(max(id), 0) FROM outbox").fetchone()[0] + 1
            db.executemany("INSERT INTO outbox VALUES (?, ?, ?, 'pending')",
                           [(first + i, cid, body) for i, (cid, body) in enumerate(messages)])
            db.execute("UPDATE position SET seq = ?", (position,))
            db.execute("COMMIT")
            if messages:  # the dispatcher: deliver the pass, sync it, mark it delivered
                out.write("".join(body + "\n" for _, body in messages))
                out.flush()
                os.fsync(out.fileno())
                db.execute("BEGIN IMMEDIATE")
                db.execute("UPDATE outbox SET status = 'delivered' WHERE id BETWEEN ? AND ?",
                           (first, first + len(messages) - 1))
                db.execute("COMMIT")
    db.close()


class Inbox:
    """Group commit: every request waiting when a commit starts shares it."""

    def __init__(self, path: Path) -> None:
        self.db = connect(path)
        self.waiting: list[tuple[list[str], asyncio.Future[int]]] = []
        self.busy = False

    async def append(self, bodies: list[str]) -> int:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.waiting.append((bodies, future))
        if not self.busy:
            self.busy = True
            asyncio.get_running_loop().create_task(self.commit())
        return await future

    async def commit(self) -> None:
        try:
            while self.waiting:
                batch, self.waiting = self.waiting, []
                try:
                    lasts = await asyncio.to_thread(self.write, [b for b, _ in batch])
                except Exception as exc:  # every waiting request learns of it
                    for _, future in batch:
                        future.set_exception(exc)
                    continue
                for (_, future), last in zip(batch, lasts, strict=True):
                    future.set_result(last)
        finally:
            self.busy = False

    def write(self, groups: list[list[str]]) -> list[int]:
        self.db.execute("BEGIN IMMEDIATE")
        last = self.db.execute("SELECT coalesce(max(seq), 0) FROM inbox").fetchone()[0]
        rows, lasts = [], []
        for bodies in groups:
            for body in bodies:
                last += 1
                rows.append((last, body))
            lasts.append(last)
        self.db.executemany("INSERT INTO inbox VALUES (?, ?)", rows)
        self.db.execute("COMMIT")
        return lasts


def app(path: Path) -> Any:
    inbox = Inbox(path)
    reader = connect(path)
    auth = f"Bearer {KEY}".encode()

    async def answer(send: Any, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if dict(scope["headers"]).get(b"authorization") != auth:
            await answer(send, 401, {"title": "unauthorized"})
            return
        if scope["method"] == "GET" and scope["path"] == "/readyz":
            seq = reader.execute("SELECT seq FROM position").fetchone()[0]
            await answer(send, 200, {"position": seq})
            return
        if scope["method"] != "POST" or scope["path"] != "/v1/events":
            await answer(send, 404, {"title": "not found"})
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        try:
            data = json.loads(b"".join(chunks))
        except ValueError:
            await answer(send, 400, {"title": "not JSON"})
            return
        events = data if isinstance(data, list) else [data]
        if not events or not all(valid(e) for e in events):
            await answer(send, 400, {"title": "a bad event"})
            return
        last = await inbox.append([json.dumps(e, ensure_ascii=False) for e in events])
        await answer(send, 202, {"accepted": len(events), "last_seq": last})

    return asgi


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--sent", type=Path, required=True)
    parser.add_argument("--port", type=int, default=8600)
    parser.add_argument("--loop-process", action="store_true",
                        help="run the live loop and the dispatcher in a process of their own")
    args = parser.parse_args(argv)
    create(args.store)
    stop: Any
    if args.loop_process:
        stop = multiprocessing.Event()
        worker: Any = multiprocessing.Process(target=loop, args=(args.store, args.sent, stop))
    else:
        stop = threading.Event()
        worker = threading.Thread(target=loop, args=(args.store, args.sent, stop))
    worker.start()
    try:
        uvicorn.run(app(args.store), host="127.0.0.1", port=args.port, log_level="warning",
                    loop="uvloop", http="httptools")
    finally:
        stop.set()
        worker.join()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
