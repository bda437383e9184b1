"""Wake-ups that cannot flip any condition are not scheduled; those that can still are."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

import sopkit
from sopkit._runtime.crossings import slot_atoms
from sopkit._runtime.observe import Observation

SHANGHAI = dt.timezone(dt.timedelta(hours=8))  # the playbook's zone (no DST)
PLAYBOOK = """\
[playbook]
name = "birthday_jump"
timezone = "Asia/Shanghai"
day_starts = "09:00"

[profile]
birthday = "date"

[metrics.days_to_birthday]
kind = "days_to_anniversary"
attribute = "birthday"

[[rules]]
name = "birthday_rule"
when = "WHEN"
actions = [{ type = "task", note = "{{ customer_id }}" }]
"""


def _runtime(tmp_path: Path, name: str, text: str,
             engine: str) -> tuple[sopkit.Runtime, list[str]]:
    """A runtime of this playbook with c1 born on 20 May, and the days c1 gets evaluated."""
    path = tmp_path / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    rt = sopkit.Runtime(sopkit.load_playbook(path), engine=engine)
    evaluated: list[str] = []

    def seen(obs: Observation) -> None:
        evaluated.append(dt.datetime.fromtimestamp(obs.now, SHANGHAI).date().isoformat())

    rt.observe(seen, "evaluation")
    rt.add_profile({"customer_id": "c1", "birthday": "1990-05-20"})
    return rt, evaluated


def _run(tmp_path: Path, when: str, engine: str) -> tuple[list[str], list[str]]:
    """The rule's firing days and the days the customer was evaluated, over two years."""
    rt, evaluated = _runtime(tmp_path, "birthday_jump", PLAYBOOK.replace("WHEN", when), engine)
    out = rt.advance("2024-01-01T00:00:00") + rt.advance("2025-12-31T00:00:00")
    return [a.time[:10] for a in out], evaluated


@pytest.mark.parametrize("engine", ["native", "durable"])
def test_the_day_after_a_birthday_is_not_evaluated_when_no_comparison_flips(
        tmp_path: Path, engine: str) -> None:
    """`days_to_birthday == 3`: 0 and 365 are both not 3, so the day after is skipped."""
    fired, evaluated = _run(tmp_path, "days_to_birthday == 3", engine)
    assert fired == ["2024-05-17", "2025-05-17"]
    # the start, then 3 days before (true) and 2 days before (false) each year, nothing
    # on 21 May (the jump back up from 0)
    assert "2024-05-21" not in evaluated and "2025-05-21" not in evaluated
    assert evaluated == ["2024-01-01", "2024-05-17", "2024-05-18", "2025-05-17", "2025-05-18"]


@pytest.mark.parametrize("engine", ["native", "durable"])
def test_the_day_after_a_birthday_still_wakes_a_condition_the_jump_flips(
        tmp_path: Path, engine: str) -> None:
    """`days_to_birthday > 100` turns true on the day after the birthday: it fires then."""
    fired, evaluated = _run(tmp_path, "days_to_birthday > 100", engine)
    assert fired == ["2024-01-01", "2024-05-21", "2025-05-21"]
    assert "2024-05-21" in evaluated and "2025-05-21" in evaluated


@pytest.mark.parametrize("engine", ["native", "durable"])
def test_a_birthday_compared_both_ways_wakes_on_each_flip(tmp_path: Path, engine: str) -> None:
    """`days_to_birthday == 0 or days_to_birthday > 360` flips on the jump day too."""
    fired, _ = _run(tmp_path, "days_to_birthday == 0 or days_to_birthday > 360", engine)
    assert fired == ["2024-05-20", "2025-05-20"]


def test_a_slot_read_in_arithmetic_has_no_atoms() -> None:
    """Arithmetic or a comparison with another fact keeps every jump a wake-up."""
    cmp = ["cmp", ">", ["slot", 0], ["const", 3]]
    assert slot_atoms([{"cond": ["and", [cmp, ["not", cmp]]]}], 0) == ((">", 3),)
    flipped = ["cmp", ">", ["const", 3], ["slot", 0]]
    assert slot_atoms([{"cond": flipped}], 0) == (("<", 3),)
    arith = ["cmp", ">", ["arith", "+", ["slot", 0], ["const", 1]], ["const", 3]]
    assert slot_atoms([{"cond": arith}], 0) is None
    other = ["cmp", "==", ["slot", 0], ["slot", 1]]
    assert slot_atoms([{"cond": other}], 0) is None
    assert slot_atoms([{"cond": other}], 2) == ()


# ---- guards: a crossing a false tag or stage part holds false is not a wake-up

GUARDED = """\
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


def _guarded(tmp_path: Path, engine: str, events: list[tuple[str, str, dict[str, Any]]],
             text: str = GUARDED) -> tuple[list[tuple[str, str]], list[str]]:
    """(rule, day) of each action and the days c1 was evaluated, through 2024."""
    rt, evaluated = _runtime(tmp_path, "guarded_wakeups", text, engine)
    out = []
    for etype, ts, fields in events:
        out += rt.ingest({"customer_id": "c1", "type": etype, "ts": ts, **fields})
    out += rt.advance("2024-12-31T00:00:00")
    return [(a.rule, a.time[:10]) for a in out], evaluated


@pytest.mark.parametrize("engine", ["native", "durable"])
def test_crossings_that_a_false_guard_holds_false_are_not_evaluated(
        tmp_path: Path, engine: str) -> None:
    """Dormant and never complained: neither day 10 nor 3 days before the birthday wakes."""
    fired, evaluated = _guarded(tmp_path, engine,
                            [("purchase", "2024-01-01T10:00:00", {"amount": "5"})])
    assert fired == []
    # the profile at the clock's start, the purchase, then day 31 (dormant); not day 10
    # (no complaint), nor 17 and 18 May (3 and 2 days before the birthday: dormant)
    assert evaluated == ["2024-01-01", "2024-01-01", "2024-02-01"]


@pytest.mark.parametrize("engine", ["native", "durable"])
def test_a_guarded_crossing_fires_on_its_day_once_its_guard_flips(
        tmp_path: Path, engine: str) -> None:
    """A complaint on day 5 and a purchase in May make day 10 and 17 May fire as before."""
    fired, evaluated = _guarded(tmp_path, engine, [
        ("purchase", "2024-01-01T10:00:00", {"amount": "5"}),
        ("complaint", "2024-01-06T10:00:00", {"reason": "late"}),  # the tag guard turns true
        ("purchase", "2024-05-02T10:00:00", {"amount": "5"}),  # no longer dormant
    ])
    assert fired == [("quiet_call", "2024-01-11"), ("quiet_call", "2024-05-12"),
                     ("birthday", "2024-05-17")]
    assert evaluated == ["2024-01-01", "2024-01-01", "2024-01-06", "2024-01-11", "2024-02-01",
                         "2024-05-02", "2024-05-12", "2024-05-17", "2024-05-18", "2024-06-02"]


def test_a_part_that_is_not_a_plain_comparison_is_no_guard(tmp_path: Path) -> None:
    """`... and ("complained" in tags or stage == "dormant")` keeps day 10 a wake-up."""
    text = GUARDED.replace("""and "complained" in tags'""",
                           """and ("complained" in tags or stage == "dormant")'""")
    fired, evaluated = _guarded(tmp_path, "native",
                                [("purchase", "2024-01-01T10:00:00", {"amount": "5"})], text)
    assert fired == [("quiet_call", "2024-02-01")]  # dormant from day 31
    assert "2024-01-11" in evaluated
