"""Behaviours of the metrics (sopkit._runtime.metrics) that the mutation tests found unpinned:
damaged lifetime averages read back from a store, and wake-ups on the anniversary itself."""

from __future__ import annotations

from pathlib import Path

import pytest

import sopkit
from sopkit._runtime import codec as _codec
from sopkit._runtime import metrics as _metrics

PLAYBOOK = """
[playbook]
name = "birthday_today"
timezone = "Asia/Shanghai"
day_starts = "09:00"

[profile]
birthday = "date"

[events.purchase]
amount = "decimal"

[metrics.days_to_birthday]
kind = "days_to_anniversary"
attribute = "birthday"

[[rules]]
name = "happy_birthday"
when = "days_to_birthday == 0"
actions = [{ type = "task", note = "{{ customer_id }} 今天生日 / birthday today" }]
"""


@pytest.mark.parametrize("count", ["2", 2.0, None])
def test_a_stored_lifetime_average_with_a_count_that_is_not_an_int_is_refused(
        count: object) -> None:
    """A lifetime avg read back with a non-int count raises StateError naming the metric."""
    m = _metrics.build({"name": "aov", "kind": "avg", "event": "purchase", "field": "amount",
                        "attribute": None, "window": None})
    with pytest.raises(_codec.StateError, match=r"metric 'aov' \(avg\): unreadable"):
        m.load_state({"total": 100, "count": count})
    assert m.value(m.load_state({"total": 100, "count": 4}), 0, 0, {}) == 25


def test_a_days_to_anniversary_equal_to_0_rule_fires_on_the_birthday_itself(
        tmp_path: Path) -> None:
    """`days_to_birthday == 0` wakes the customer at the day start of each birthday."""
    path = tmp_path / "birthday_today.toml"
    path.write_text(PLAYBOOK, encoding="utf-8")
    rt = sopkit.Runtime(sopkit.load_playbook(path))
    rt.add_profile({"customer_id": "c1", "birthday": "1990-05-20"})
    out = rt.advance("2024-01-01T00:00:00") + rt.advance("2025-12-31T00:00:00")
    assert [(a.rule, a.time) for a in out] == [
        ("happy_birthday", "2024-05-20T09:00:00+08:00"),
        ("happy_birthday", "2025-05-20T09:00:00+08:00"),
    ]
