"""The facts conditions read (sopkit/_runtime/facts.py), seed-23 sample of the split runtime.

Each test drives a real Runtime through its public API on the virtual clock (issue 14) and
reads the actions or the population's RFM segments a user sees.
"""

from __future__ import annotations

from pathlib import Path

import sopkit

INTERESTS = """\
[playbook]
name = "interests"
timezone = "Asia/Shanghai"

[profile]
interests = "list"

[events.visit]

[channels.sms]
type = "sms"

[templates.coffee]
text = "{{ customer_id }}：新品咖啡"

[[rules]]
name = "coffee_offer"
on = "visit"
when = '"咖啡" in profile.interests'
actions = [{ type = "send", channel = "sms", template = "coffee" }]
"""

RFM = """\
[playbook]
name = "rfm"
timezone = "Asia/Shanghai"
day_starts = "09:00"

[events.purchase]
amount = "decimal"

[metrics]
days_since_purchase = { kind = "days_since", event = "purchase" }
purchases_365d = { kind = "count", event = "purchase", window = "365d" }
spend_365d = { kind = "sum", event = "purchase", field = "amount", window = "365d" }

[rfm]
recency = "days_since_purchase"
frequency = "purchases_365d"
monetary = "spend_365d"
every = "7d"

[channels.sms]
type = "sms"

[templates.thanks]
text = "{{ customer_id }}：感谢您的支持"

[[rules]]
name = "top_recency"
when = "rfm_r >= 4"
actions = [{ type = "send", channel = "sms", template = "thanks" }]
"""


def _runtime(tmp_path: Path, text: str) -> sopkit.Runtime:
    path = tmp_path / "playbook.toml"
    path.write_text(text, encoding="utf-8")
    return sopkit.Runtime(sopkit.load_playbook(path), engine="native")


def test_a_condition_on_a_list_attribute_holds_only_for_customers_with_the_item(
        tmp_path: Path) -> None:
    """`"咖啡" in profile.interests`: sent to the coffee drinker, not to the others."""
    rt = _runtime(tmp_path, INTERESTS)
    rt.add_profile({"customer_id": "c1", "interests": "茶|咖啡"})
    rt.add_profile({"customer_id": "c2", "interests": "茶"})
    rt.add_profile({"customer_id": "c3"})
    sent = [a.customer_id for who in ("c1", "c2", "c3")
            for a in rt.ingest({"customer_id": who, "type": "visit",
                                "ts": "2025-03-01T10:00:00"})]
    assert sent == ["c1"]


def test_rfm_segments_count_every_buyer_after_a_refit(tmp_path: Path) -> None:
    """After the weekly refit, Runtime.rfm_segments() places each of the 10 buyers in a segment."""
    rt = _runtime(tmp_path, RFM)
    for i in range(10):
        for k in range(i % 3 + 1):
            rt.ingest({"customer_id": f"b{i}", "type": "purchase", "amount": str(10 * (i + 1)),
                       "ts": f"2025-02-{i + 1:02d}T1{k}:00:00"})
    rt.advance("2025-03-01T10:00:00")
    segments = rt.rfm_segments()
    assert sum(segments.values()) == 10
