"""Wake-ups that cannot flip any condition are not scheduled; those that can still are."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

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


def _run(tmp_path: Path, when: str, engine: str) -> tuple[list[str], list[str]]:
    """The rule's firing days and the days the customer was evaluated, over two years."""
    path = tmp_path / "birthday_jump.toml"
    path.write_text(PLAYBOOK.replace("WHEN", when), encoding="utf-8")
    rt = sopkit.Runtime(sopkit.load_playbook(path), engine=engine)
    evaluated: list[str] = []

    def seen(obs: Observation) -> None:
        evaluated.append(dt.datetime.fromtimestamp(obs.now, SHANGHAI).date().isoformat())

    rt.observe(seen, "evaluation")
    rt.add_profile({"customer_id": "c1", "birthday": "1990-05-20"})
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
