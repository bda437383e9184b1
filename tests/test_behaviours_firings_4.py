"""Campaign firings (sopkit/_runtime/firings.py), seed-23 sample of the split runtime (issue 14).

Each test drives a real Runtime through its public API on the virtual clock: customers get
tags, stages and profiles from events, a campaign fires as the clock passes its time, and
the test reads who was sent the message.
"""

from __future__ import annotations

from pathlib import Path

import sopkit

PLAYBOOK = """\
[playbook]
name = "audiences"
timezone = "Asia/Shanghai"

[profile]
city = "string"
member = "bool"

[events.purchase]
[events.vip_signup]
[events.churn]

[metrics]
buys = { kind = "count", event = "purchase" }

[tags.vip]
[tags.lapsed]

[[stages]]
name = "active"
when = "buys >= 1"

[[stages]]
name = "new"

[channels.sms]
type = "sms"

[templates.hi]
text = "{{ customer_id }}：周末特惠"

[[rules]]
name = "mark_vip"
on = "vip_signup"
actions = [{ type = "tag", tag = "vip" }]

[[rules]]
name = "mark_lapsed"
on = "churn"
actions = [{ type = "tag", tag = "lapsed" }]

[[campaigns]]
name = "mixed"
at = "2025-03-08T10:00"
audience = '''"vip" in tags and "lapsed" not in tags and stage == "active"
              and (buys >= 2 or profile.city == "SH")'''
actions = [{ type = "send", channel = "sms", template = "hi" }]

[[campaigns]]
name = "either_tag"
at = "2025-03-08T10:00"
audience = '"vip" in tags or "lapsed" in tags'
actions = [{ type = "send", channel = "sms", template = "hi" }]

[[campaigns]]
name = "shanghai"
at = "2025-03-08T10:00"
audience = 'profile.city == "SH"'
actions = [{ type = "send", channel = "sms", template = "hi" }]

[[campaigns]]
name = "not_vip"
at = "2025-03-08T10:00"
audience = 'not ("vip" in tags)'
actions = [{ type = "send", channel = "sms", template = "hi" }]

[[campaigns]]
name = "members"
at = "2025-03-08T10:00"
audience = 'profile.member and buys >= 1'
actions = [{ type = "send", channel = "sms", template = "hi" }]

[[campaigns]]
name = "li_owned"
at = "2025-03-08T10:00"
audience = 'owner == "li"'
actions = [{ type = "send", channel = "sms", template = "hi" }]

[[campaigns]]
name = "newcomers"
at = "2025-03-08T10:00"
audience = 'stage == "new" and buys < 1'
actions = [{ type = "send", channel = "sms", template = "hi" }]
"""

# customer: (city, purchases, events that tag it)
CUSTOMERS = {
    "a": ("BJ", 2, ["vip_signup"]),
    "b": ("BJ", 2, ["vip_signup", "churn"]),
    "c": ("SH", 0, ["churn"]),
    "d": ("SH", 1, ["vip_signup"]),
    "e": ("BJ", 1, ["vip_signup"]),
    "f": ("SH", 3, []),
    "g": ("SH", 0, ["vip_signup"]),
}


def test_campaign_audiences_reach_exactly_the_customers_their_condition_names(
        tmp_path: Path) -> None:
    """Audiences on tags (held, not held, `or`), a stage, profile values and the owner are exact."""
    path = tmp_path / "audiences.toml"
    path.write_text(PLAYBOOK, encoding="utf-8")
    rt = sopkit.Runtime(sopkit.load_playbook(path), engine="native")
    for n, (who, (city, buys, marks)) in enumerate(CUSTOMERS.items()):
        rt.add_profile({"customer_id": who, "city": city, "member": who in "bdf",
                        "owner": "li" if who in "ace" else "wang"})
        kinds = ["purchase"] * buys + marks
        for k, kind in enumerate(kinds):
            rt.ingest({"customer_id": who, "type": kind, "ts": f"2025-03-0{n + 1}T10:{k:02d}:00"})
    reach: dict[str, list[str]] = {}
    for action in rt.advance("2025-03-09T10:00:00"):
        assert (action.action, action.status, action.time) == \
            ("send", "planned", "2025-03-08T10:00:00+08:00")
        reach.setdefault(action.rule, []).append(action.customer_id)
    assert reach == {"mixed": ["a", "d"], "either_tag": ["a", "b", "c", "d", "e", "g"],
                     "shanghai": ["c", "d", "f", "g"], "not_vip": ["c", "f"],
                     "members": ["b", "d", "f"], "li_owned": ["a", "c", "e"],
                     "newcomers": ["c", "g"]}
