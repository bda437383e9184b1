"""A crossing a false tag or stage guard holds false is not evaluated; once it flips, it is."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

import sopkit
from sopkit._runtime.observe import Observation

SHANGHAI = dt.timezone(dt.timedelta(hours=8))  # the playbook's zone (no DST)
PLAYBOOK = """\
[playbook]
name = "guarded_wakeups"
timezone = "Asia/Shanghai"
day_starts = "09:00"

[profile]
birthday = "date"

[events.purchase]
amount = "decimal"

[events.complaint]
reason = "string"

[metrics.days_since_purchase]
kind = "days_since"
event = "purchase"

[metrics.days_to_birthday]
kind = "days_to_anniversary"
attribute = "birthday"

[metrics.complaints]
kind = "count"
event = "complaint"

[tags.complained]
when = "complaints >= 1"

[[stages]]
name = "dormant"
when = "days_since_purchase > 30"

[[stages]]
name = "active"

[[rules]]
name = "birthday"
when = 'days_to_birthday == 3 and stage != "dormant"'
actions = [{ type = "task", note = "{{ customer_id }}" }]

[[rules]]
name = "quiet_call"
when = 'days_since_purchase >= 10 and "complained" in tags'
actions = [{ type = "task", note = "{{ customer_id }} {{ days_since_purchase }}" }]
"""


def _run(tmp_path: Path, engine: str, events: list[tuple[str, str, dict[str, Any]]]
         ) -> tuple[list[tuple[str, str]], list[str]]:
    """(rule, day) of each action and the days c1 was evaluated, through 2024."""
    path = tmp_path / "guarded_wakeups.toml"
    path.write_text(PLAYBOOK, encoding="utf-8")
    rt = sopkit.Runtime(sopkit.load_playbook(path), engine=engine)
    evaluated: list[str] = []

    def seen(obs: Observation) -> None:
        evaluated.append(dt.datetime.fromtimestamp(obs.now, SHANGHAI).date().isoformat())

    rt.observe(seen, "evaluation")
    rt.add_profile({"customer_id": "c1", "birthday": "1990-05-20"})
    out = []
    for etype, ts, fields in events:
        out += rt.ingest({"customer_id": "c1", "type": etype, "ts": ts, **fields})
    out += rt.advance("2024-12-31T00:00:00")
    return [(a.rule, a.time[:10]) for a in out], evaluated


@pytest.mark.parametrize("engine", ["native", "durable"])
def test_crossings_that_a_false_guard_holds_false_are_not_evaluated(
        tmp_path: Path, engine: str) -> None:
    """Dormant and never complained: neither day 10 nor 3 days before the birthday wakes."""
    fired, evaluated = _run(tmp_path, engine,
                            [("purchase", "2024-01-01T10:00:00", {"amount": "5"})])
    assert fired == []
    # the profile at the clock's start, the purchase, then day 31 (dormant); not day 10
    # (no complaint), nor 17 and 18 May (3 and 2 days before the birthday: dormant)
    assert evaluated == ["2024-01-01", "2024-01-01", "2024-02-01"]


@pytest.mark.parametrize("engine", ["native", "durable"])
def test_a_guarded_crossing_fires_on_its_day_once_its_guard_flips(
        tmp_path: Path, engine: str) -> None:
    """A complaint on day 5 and a purchase in May make day 10 and 17 May fire as before."""
    fired, evaluated = _run(tmp_path, engine, [
        ("purchase", "2024-01-01T10:00:00", {"amount": "5"}),
        ("complaint", "2024-01-06T10:00:00", {"reason": "late"}),  # the tag guard turns true
        ("purchase", "2024-05-02T10:00:00", {"amount": "5"}),  # no longer dormant
    ])
    assert fired == [("quiet_call", "2024-01-11"), ("quiet_call", "2024-05-12"),
                     ("birthday", "2024-05-17")]
    assert evaluated == ["2024-01-01", "2024-01-01", "2024-01-06", "2024-01-11", "2024-02-01",
                         "2024-05-02", "2024-05-12", "2024-05-17", "2024-05-18", "2024-06-02"]
