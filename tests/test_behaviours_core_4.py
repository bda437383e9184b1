"""One customer's evaluation (sopkit/_runtime/core.py), seed-23 sample of the split runtime.

Each test drives a real Runtime through its public API on the virtual clock (issue 14) and
reads the action records or the customer's exported state.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import sopkit

CHAIN = """\
[playbook]
name = "chain"
timezone = "Asia/Shanghai"

[events.signup]

[tags.welcomed]

[channels.sms]
type = "sms"

[templates.first]
text = "{{ customer_id }}：欢迎"

[templates.second]
text = "{{ customer_id }}：第二天的问候"

[[rules]]
name = "welcome"
on = "signup"
delay = "1d"
actions = [{ type = "tag", tag = "welcomed" }]

[[rules]]
name = "hello"
on = "signup"
delay = "1d"
actions = [{ type = "send", channel = "sms", template = "first" }]

[[rules]]
name = "after_welcome"
when = '"welcomed" in tags'
actions = [{ type = "send", channel = "sms", template = "second" }]
"""

FOREVER = """\
[playbook]
name = "forever"
timezone = "America/Los_Angeles"

[events.signup]

[tags.member]
when = "today <= 9999-12-30"

[channels.sms]
type = "sms"

[templates.hi]
text = "hi"

[[rules]]
name = "hello"
on = "signup"
actions = [{ type = "send", channel = "sms", template = "hi" }]
"""


def _runtime(tmp_path: Path, text: str) -> sopkit.Runtime:
    path = tmp_path / "playbook.toml"
    path.write_text(text, encoding="utf-8")
    return sopkit.Runtime(sopkit.load_playbook(path), engine="native")


def test_a_delayed_tag_fires_the_rule_on_it_at_once(tmp_path: Path) -> None:
    """A delayed tag fires the rule waiting on it at that instant; the other delayed send goes."""
    rt = _runtime(tmp_path, CHAIN)
    assert rt.ingest({"customer_id": "c1", "type": "signup", "ts": "2025-03-01T10:00:00"}) == []
    done = rt.advance("2025-03-05T10:00:00")
    assert [(a.time, a.rule, a.action, a.trigger) for a in done] == [
        ("2025-03-02T10:00:00+08:00", "welcome", "tag", "delayed"),
        ("2025-03-02T10:00:00+08:00", "hello", "send", "delayed"),
        ("2025-03-02T10:00:00+08:00", "after_welcome", "send", "entry")]
    assert rt.state("c1").pending == 0


def test_a_condition_on_a_forever_date_schedules_no_wake_up(tmp_path: Path) -> None:
    """`today <= 9999-12-30` (a date meaning "forever") leaves the customer with no wake-up."""
    rt = _runtime(tmp_path, FOREVER)
    rt.ingest({"customer_id": "a", "type": "signup", "ts": "2025-01-01T10:00:00"})
    assert rt.state("a").tags == frozenset({"member"})
    assert rt.export("a").wake_at is None


FLICKER = """\
[playbook]
name = "flicker"
timezone = "Asia/Shanghai"

[events.ping]

[scores.attention]
factors = [{ when = '"待跟进" in tags', points = 1 }]

[tags."待跟进"]
when = "attention == 0"
"""


def test_a_dynamic_tag_that_never_settles_is_named_as_added_and_removed(tmp_path: Path) -> None:
    """ChainError says the dynamic tag keeps being added and removed, so the user sees the loop."""
    rt = _runtime(tmp_path, FLICKER)
    with pytest.raises(sopkit.ChainError) as caught:
        rt.ingest({"customer_id": "c1", "type": "ping", "ts": "2024-01-01T10:00:00"})
    assert str(caught.value).endswith(
        "these keep re-enabling each other: tag 待跟进, untag 待跟进")
