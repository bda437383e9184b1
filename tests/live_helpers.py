"""Shared set-up for the live-run tests: a generated shop history and its playbook."""

from __future__ import annotations

import base64
import datetime as dt
import json
import random
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

DATA = Path(__file__).parent / "data" / "live"
SECRET = "whsec_" + base64.b64encode(b"sopkit-live-test-secret-0123456789").decode()
ENV = {"SOPKIT_TEST_WEBHOOK_SECRET": SECRET}


def shop_playbook(tmp: Path, url: str, extra: str = "") -> Path:
    """The shop playbook with its webhook pointed at `url`."""
    text = (DATA / "shop.toml").read_text(encoding="utf-8").replace("RECEIVER_URL", url)
    path = tmp / "shop.toml"
    path.write_text(text + extra, encoding="utf-8")
    return path


def shop_history(tmp: Path, customers: int = 30, seed: int = 7,
                 extra: list[dict[str, object]] | None = None) -> tuple[Path, Path]:
    """Profiles and a sorted purchase history for `customers` customers in January 2025."""
    rng = random.Random(seed)
    start = dt.datetime(2025, 1, 1, 9, 0)
    events: list[dict[str, object]] = []
    profiles = []
    for i in range(customers):
        cid = f"s{i:03d}"
        profiles.append({"customer_id": cid, "name": f"顾客{i}", "phone": f"1380000{i:04d}",
                         "external_userid": f"wm{i:04d}", "owner": "zhang" if i % 2 else "li"})
        for _ in range(rng.randint(1, 4)):
            when = start + dt.timedelta(minutes=rng.randint(0, 28 * 24 * 60))
            events.append({"customer_id": cid, "type": "purchase",
                           "ts": when.isoformat(), "amount": f"{rng.randint(10, 300)}.00"})
    events.extend(extra or [])
    events.sort(key=lambda e: (str(e["ts"]), str(e.get("customer_id", ""))))
    history = tmp / "events.jsonl"
    history.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in events),
                       encoding="utf-8")
    people = tmp / "profiles.jsonl"
    people.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in profiles),
                      encoding="utf-8")
    return history, people


def kill_while_working(command: list[str], env: dict[str, str], progress: Callable[[], int],
                       kills: int, rng: random.Random, most: int = 40) -> Iterator[int]:
    """Start `command` again and again and SIGKILL each run while it works; yield the count.

    A run is killed after a random number (1 to `most`) of new units of `progress` (lines
    delivered, requests received), or, one time in three, at a random moment in its first
    half second (reading, replaying, planning). Kills keyed to progress land in the middle of
    delivery whatever the machine's speed; a run that ends before its kill fails the test,
    since the history is then too short for the kills asked.
    """
    killed = 0
    while killed < kills:
        start, began = progress(), time.monotonic()
        timed = rng.random() < 1 / 3
        target = start + rng.randint(1, most)
        deadline = began + rng.uniform(0.05, 0.5)
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        while proc.poll() is None:
            if (time.monotonic() >= deadline) if timed else (progress() >= target):
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                break
            time.sleep(0.005)
        else:
            error = proc.stderr.read().decode() if proc.stderr else ""
            raise AssertionError(f"run {killed + 1} of {kills} ended (exit {proc.returncode}) "
                                 f"before its kill: the history is too short\n{error}")
        if proc.stderr:
            proc.stderr.close()
        killed += 1
        yield killed


def line_count(path: Path) -> int:
    """Complete lines in `path` (0 while it does not exist)."""
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0
