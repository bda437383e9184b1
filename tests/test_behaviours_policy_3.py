"""Policy behaviours a user notices, found unchecked by the seed-23 mutation sample (issue 14).

Each test runs a small playbook on a real Runtime with events on the virtual clock and reads
the action records a simulation or a live run would show.
"""

from __future__ import annotations

from pathlib import Path

import sopkit
from sopkit import Action

PLAYBOOK = """\
[playbook]
name = "p3"
timezone = "Asia/Shanghai"

[events.visit]
[events.birthday]

[profile]
name = "string"

[channels.sms]
type = "sms"

[templates.greet]
text = "{{ profile.name }}，您好"

[templates.coupon]
text = "{{ customer_id }}：生日券"

[[rules]]
name = "greet_on_visit"
on = "visit"
actions = [{ type = "send", channel = "sms", template = "greet" }]

[[rules]]
name = "coupon_on_birthday"
on = "birthday"
actions = [{ type = "send", channel = "sms", template = "coupon", expires = "1d" }]

[policy]
quiet_hours = { start = "21:00", end = "09:00" }
"""


def runtime(tmp_path: Path) -> sopkit.Runtime:
    """A native Runtime of the test playbook."""
    path = tmp_path / "p3.toml"
    path.write_text(PLAYBOOK, encoding="utf-8")
    return sopkit.Runtime(sopkit.load_playbook(path), engine="native")


def send(rt: sopkit.Runtime, customer: str, etype: str, ts: str) -> Action:
    """The one `send` the event plans."""
    (found,) = [a for a in rt.ingest({"customer_id": customer, "type": etype, "ts": ts})
                if a.action == "send"]
    return found


def test_a_send_lacking_a_template_fact_is_suppressed_naming_it(tmp_path: Path) -> None:
    """Without a name the greeting is suppressed ("missing value: profile.name"); with one, sent."""
    rt = runtime(tmp_path)
    rt.add_profile({"customer_id": "named", "name": "王芳"})
    nameless = send(rt, "nameless", "visit", "2024-05-01T10:00:00")
    assert (nameless.status, nameless.details["reason"]) == (
        "suppressed", "missing value: profile.name")
    named = send(rt, "named", "visit", "2024-05-01T10:00:00")
    assert named.status == "planned"
    assert "reason" not in named.details


def test_expires_at_counts_from_the_delivery_time(tmp_path: Path) -> None:
    """A 1d coupon expires a day after its delivery: after 09:00 when quiet hours deferred it."""
    rt = runtime(tmp_path)
    now = send(rt, "c1", "birthday", "2024-05-01T10:00:00")
    assert now.status == "planned"
    assert now.details["expires_at"] == "2024-05-02T10:00:00+08:00"
    late = send(rt, "c2", "birthday", "2024-05-01T22:30:00")
    assert late.status == "deferred"
    assert late.details["deliver_at"] == "2024-05-02T09:00:00+08:00"
    assert late.details["expires_at"] == "2024-05-03T09:00:00+08:00"
