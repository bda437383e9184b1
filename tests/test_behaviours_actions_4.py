"""The action path (sopkit/_runtime/actions.py), seed-23 sample of the split runtime (issue 14).

Each test drives a real Runtime of a small playbook through its public API on the virtual
clock and reads the action records or the per-stage counts a user (or the report) sees.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import sopkit

BURST = """\
[playbook]
name = "burst"
timezone = "Asia/Shanghai"

[events.visit]

[channels.sms]
type = "sms"

[templates.hello]
text = "{{ customer_id }}：欢迎回来"

[[rules]]
name = "follow_up"
on = "visit"
delay = "1h"
actions = [{ type = "send", channel = "sms", template = "hello" }]
"""

ARMS = """\
[playbook]
name = "arms"
timezone = "Asia/Shanghai"

[events.visit]

[channels.sms]
type = "sms"

[templates.hello]
text = "{{ customer_id }}：您好"

[experiments.coupon]
holdout = 0.2
variants = ["c5", "c10", "c20"]

[[rules]]
name = "welcome"
on = "visit"
experiment = "coupon"
actions = [{ type = "send", channel = "sms", template = "hello" }]
"""

STAGES = """\
[playbook]
name = "stages"
timezone = "Asia/Shanghai"

[events.complaint]
[events.vip]

[[stages]]
name = "new"

[[stages]]
name = "watched"

[[stages]]
name = "vip"

[[rules]]
name = "watch"
on = "complaint"
actions = [{ type = "set_stage", stage = "watched" }]

[[rules]]
name = "promote"
on = "vip"
actions = [{ type = "set_stage", stage = "vip" }]
"""


def _runtime(tmp_path: Path, text: str) -> sopkit.Runtime:
    path = tmp_path / "playbook.toml"
    path.write_text(text, encoding="utf-8")
    return sopkit.Runtime(sopkit.load_playbook(path), engine="native")


def test_a_burst_of_delayed_sends_due_at_one_instant_all_go_out(tmp_path: Path) -> None:
    """80 visits in one second each schedule a reminder: an hour later all 80 go out together."""
    rt = _runtime(tmp_path, BURST)
    for _ in range(80):
        rt.ingest({"customer_id": "c1", "type": "visit", "ts": "2025-03-01T10:00:00"})
    sent = rt.advance("2025-03-01T12:00:00")
    assert [(a.time, a.status) for a in sent] == [("2025-03-01T11:00:00+08:00", "planned")] * 80
    assert len({a.key for a in sent}) == 80
    assert rt.state("c1").pending == 0


def _documented_arm(customer_id: str) -> str:
    """The arm docs/playbook.md#experiments gives: holdout below 0.2, then three even parts."""
    digest = hashlib.sha256(f"coupon:{customer_id}".encode()).digest()
    place = int.from_bytes(digest[:8], "big") / 2**64
    if place < 0.2:
        return "holdout"
    return ["c5", "c10", "c20"][int((place - 0.2) / 0.8 * 3)]


def test_experiment_arms_split_the_customers_as_documented(tmp_path: Path) -> None:
    """Of 90 customers, each gets the arm the documented bucket gives; every variant is used."""
    rt = _runtime(tmp_path, ARMS)
    arms: dict[str, str] = {}
    for i in range(90):
        (sent,) = rt.ingest({"customer_id": f"k{i:03d}", "type": "visit",
                             "ts": "2025-03-01T10:00:00"})
        arms[sent.customer_id] = str(sent.details["variant"])
        assert sent.status == ("holdout" if arms[sent.customer_id] == "holdout" else "planned")
    assert arms == {c: _documented_arm(c) for c in arms}
    assert set(arms.values()) == {"holdout", "c5", "c10", "c20"}


def test_stage_counts_follow_set_stage_actions_of_rules(tmp_path: Path) -> None:
    """After each set_stage by a rule, Runtime.stage_counts (the report's chart) matches."""
    rt = _runtime(tmp_path, STAGES)
    events = [("a", "complaint"), ("b", "complaint"), ("a", "vip"), ("c", "vip"),
              ("b", "vip"), ("d", "complaint"), ("b", "complaint")]
    for n, (who, kind) in enumerate(events):
        rt.ingest({"customer_id": who, "type": kind, "ts": f"2025-03-01T10:{n:02d}:00"})
        actual = Counter(rt.state(c).stage for c in rt.customer_ids())
        assert +rt.stage_counts == actual, (who, kind)
    assert +rt.stage_counts == {"vip": 2, "watched": 2}
