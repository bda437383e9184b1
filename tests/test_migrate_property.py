"""Deploying v2 onto a live v1 store changes nothing for the rules both versions share."""

from __future__ import annotations

import datetime as dt
import os
import random
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sopkit
from sopkit._live.loop import LiveRun
from sopkit._live.migrate import apply, plan
from sopkit._live.sqlitestore import SQLiteStore

EXAMPLES = int(os.environ.get("SOPKIT_MIGRATE_EXAMPLES", "25"))

HEAD = """
[playbook]
name = "club"
version = "{version}"
timezone = "Asia/Shanghai"
day_starts = "00:00"

[events.purchase]
amount = "decimal"

[metrics]
purchases = {{ kind = "count", event = "purchase" }}
days_since_purchase = {{ kind = "days_since", event = "purchase" }}
spend_60d = {{ kind = "sum", event = "purchase", field = "amount", window = "60d" }}

[channels.out]
type = "console"

[templates.t]
text = "hi"
"""

# each rule of the pool, by kind, with the parameter a version may change
POOL: dict[str, tuple[str, list[Any]]] = {
    "thanks": ('on = "purchase"\ndelay = "{p}"', ["1d", "3d"]),
    "recall": ('when = "days_since_purchase >= {p}"\ncooldown = "40d"', [20, 30]),
    "second": ('when = "purchases >= {p}"\nmax_times = 1', [2, 3]),
    "big": ('when = "spend_60d >= {p}"\ndelay = "2d"', [200, 400]),
    "quiet": ('when = "days_since_purchase == {p}"', [7, 9]),
}


def _rule(name: str, kind: str, param: Any, renamed_from: str | None = None) -> str:
    body = POOL[kind][0].format(p=param)
    extra = f'renamed_from = "{renamed_from}"\n' if renamed_from else ""
    return (f'\n[[rules]]\nname = "{name}"\n{extra}{body}\n'
            'actions = [{ type = "send", channel = "out", template = "t" }]\n')


def _write(folder: Path, version: str, rules: list[str]) -> sopkit.LoadedPlaybook:
    path = folder / f"v{version}.toml"
    path.write_text(HEAD.format(version=version) + "".join(rules), encoding="utf-8")
    return sopkit.load_playbook(path)


def _history(rng: random.Random) -> list[dict[str, Any]]:
    start = dt.datetime(2025, 1, 1)
    events = []
    for c in range(4):
        for _ in range(rng.randint(1, 6)):
            when = start + dt.timedelta(minutes=rng.randint(0, 150 * 24 * 60))
            events.append({"customer_id": f"c{c}", "type": "purchase",
                           "ts": when.isoformat(), "amount": str(rng.choice([50, 120, 260]))})
    events.sort(key=lambda e: (e["ts"], e["customer_id"]))
    return events


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32))
def test_shared_rules_act_after_a_migration_as_a_v2_simulation_says(seed: int) -> None:
    """Random v1→v2 edits (add, remove, reorder, rename, change delay or condition) with
    delayed actions pending: after the deploy, every rule v2 shares unchanged with v1 does
    exactly what a simulation of v2 over the whole history does."""
    rng = random.Random(seed)
    kinds = list(POOL)
    v1 = {k: rng.choice(POOL[k][1]) for k in rng.sample(kinds, rng.randint(1, len(kinds)))}
    v2_rules: list[str] = []
    shared: set[str] = set()
    for kind, param in v1.items():
        fate = rng.choice(["keep", "keep", "change", "remove", "rename"])
        if fate == "keep":
            v2_rules.append(_rule(kind, kind, param))
            shared.add(kind)
        elif fate == "change":
            other = next(p for p in POOL[kind][1] if p != param)
            v2_rules.append(_rule(kind, kind, other))
        elif fate == "rename":
            v2_rules.append(_rule(f"{kind}_v2", kind, param, renamed_from=kind))
            shared.add(f"{kind}_v2")
    for kind in kinds:
        if kind not in v1 and rng.random() < 0.5:
            v2_rules.append(_rule(kind, kind, rng.choice(POOL[kind][1])))
    rng.shuffle(v2_rules)
    events = _history(rng)
    cut = dt.datetime(2025, 1, 1) + dt.timedelta(days=rng.randint(20, 120), seconds=7)
    end = "2025-08-01T00:00:00"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        old = _write(folder, "1", [_rule(k, k, p) for k, p in v1.items()])
        new = _write(folder, "2", v2_rules or [_rule("quiet", "quiet", 7)])
        store = SQLiteStore(folder / "live.db")
        try:
            live = LiveRun(old, store, engine="native")
            rt = live.runtime
            before = [e for e in events if e["ts"] <= cut.isoformat()]
            for event in before:
                rt.ingest(event)
            rt.advance(cut)
            live.commit([])
            apply(plan(new, store), store, 0)
            after: list[Any] = []
            rt2 = LiveRun(new, store, engine="native").runtime
            for event in events[len(before):]:
                after.extend(rt2.ingest(event))
            after.extend(rt2.advance(end))
        finally:
            store.close()
        sim = sopkit.Runtime(new, engine="native")
        simulated: list[Any] = []
        for event in events:
            simulated.extend(sim.ingest(event))
        simulated.extend(sim.advance(end))
    threshold = int(cut.replace(tzinfo=dt.timezone(dt.timedelta(hours=8))).timestamp())

    def shared_after(actions: list[Any]) -> list[dict[str, Any]]:
        return [a.to_json() for a in actions if a.rule in shared and a.ts > threshold]

    assert shared_after(after) == shared_after(simulated)
