"""The semantics ops users rely on (DESIGN.md "Semantics"), on small playbooks and virtual time.

Each playbook lives in tests/data/semantics/<name>.toml (timezone Asia/Shanghai). Time never
passes for real: the tests drive the runtime with `ingest` and `advance` only.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import sopkit
from sopkit import Action, Runtime

MakeRuntime = Callable[[str], Runtime]
SEMANTICS = Path(__file__).parent / "data" / "semantics"


def ev(customer: str, etype: str, ts: str, **fields: Any) -> dict[str, Any]:
    """An event record as the runtime reads it."""
    return {"customer_id": customer, "type": etype, "ts": ts, **fields}


def of(actions: list[Action], rule: str) -> list[Action]:
    return [a for a in actions if a.rule == rule]


def times(actions: list[Action], rule: str) -> list[str]:
    return [a.time for a in actions if a.rule == rule]


# ---- entry firing, `on` rules, cooldown, max_times ----------------------------------------


def test_rule_fires_on_entry_not_while_true_and_rearms(semantics_runtime: MakeRuntime) -> None:
    """An entry rule fires on false->true, not while it stays true, and again after re-arming."""
    rt = semantics_runtime("firing")
    fired = []
    for day, level in [(1, 1), (2, 3), (3, 4), (4, 2), (5, 5), (6, 6)]:
        actions = rt.ingest(ev("c1", "level", f"2024-01-0{day}T10:00:00", value=level))
        fired.append(times(actions, "entered"))
    assert fired == [[], ["2024-01-02T10:00:00+08:00"], [], [],
                     ["2024-01-05T10:00:00+08:00"], []]


def test_entry_action_carries_why_and_what(semantics_runtime: MakeRuntime) -> None:
    """A fired action records customer, rule, type, status, trigger, facts read and message."""
    rt = semantics_runtime("firing")
    (action,) = of(rt.ingest(ev("c1", "level", "2024-01-02T10:00:00", value=3)), "entered")
    assert (action.customer_id, action.rule, action.action, action.status, action.trigger) == \
        ("c1", "entered", "send", "planned", "entry")
    assert action.facts == {"current_level": 3}
    assert action.details["channel"] == "wecom"
    assert action.details["message"] == "您好，等级 3"


def test_entry_state_is_per_customer(semantics_runtime: MakeRuntime) -> None:
    """One customer's entry does not arm or disarm another customer's rule."""
    rt = semantics_runtime("firing")
    first = rt.ingest(ev("c1", "level", "2024-01-01T10:00:00", value=3))
    second = rt.ingest(ev("c2", "level", "2024-01-01T11:00:00", value=3))
    again = rt.ingest(ev("c1", "level", "2024-01-01T12:00:00", value=4))
    assert [a.customer_id for a in of(first, "entered")] == ["c1"]
    assert [a.customer_id for a in of(second, "entered")] == ["c2"]
    assert of(again, "entered") == []


def test_on_rule_fires_on_each_matching_event(semantics_runtime: MakeRuntime) -> None:
    """An `on` rule fires on every event of its type whose `event.<field>` filter holds."""
    rt = semantics_runtime("firing")
    out: list[Action] = []
    out += rt.ingest(ev("c1", "purchase", "2024-01-01T10:00:00", amount="150", sku="A"))
    out += rt.ingest(ev("c1", "purchase", "2024-01-01T11:00:00", amount="200", sku="B"))
    out += rt.ingest(ev("c1", "purchase", "2024-01-01T12:00:00", amount="50", sku="C"))
    out += rt.ingest(ev("c1", "purchase", "2024-01-01T13:00:00", amount="300", sku="GIFT"))
    out += rt.ingest(ev("c1", "level", "2024-01-01T14:00:00", value=1))
    big = of(out, "big_purchase")
    assert [a.facts for a in big] == [{"event.amount": 150.0, "event.sku": "A"},
                                      {"event.amount": 200.0, "event.sku": "B"}]
    assert {a.trigger for a in big} == {"event:purchase"}
    assert big[0].details["note"] == "大单跟进 c1"
    assert times(out, "any_purchase") == [
        "2024-01-01T10:00:00+08:00", "2024-01-01T11:00:00+08:00",
        "2024-01-01T12:00:00+08:00", "2024-01-01T13:00:00+08:00"]


def test_on_rules_of_two_event_types_sharing_a_field_name(semantics_runtime: MakeRuntime) -> None:
    """`event.amount` filters work for every event type that declares an `amount` field."""
    rt = semantics_runtime("shared_field")
    out = rt.ingest(ev("c1", "purchase", "2024-01-01T10:00:00", amount="150"))
    out += rt.ingest(ev("c1", "refund", "2024-01-02T10:00:00", amount="150"))
    assert [a.rule for a in out] == ["big_purchase", "big_refund"]


def test_cooldown_suppresses_reentry_with_reason_then_fires_again(
        semantics_runtime: MakeRuntime) -> None:
    """A re-entry inside the cooldown is recorded suppressed with a reason; one after it fires."""
    rt = semantics_runtime("firing")
    out: list[Action] = []
    for ts, level in [("2024-01-01T10:00:00", 3), ("2024-01-02T10:00:00", 1),
                      ("2024-01-03T10:00:00", 3), ("2024-01-12T10:00:00", 1),
                      ("2024-01-13T10:00:00", 4)]:
        out += rt.ingest(ev("c1", "level", ts, value=level))
    cooled = of(out, "cooled")
    assert [(a.time, a.status) for a in cooled] == [
        ("2024-01-01T10:00:00+08:00", "planned"),
        ("2024-01-03T10:00:00+08:00", "suppressed"),
        ("2024-01-13T10:00:00+08:00", "planned"),
    ]
    assert cooled[1].details == {"reason": "cooldown until 2024-01-11T10:00:00+08:00"}
    assert cooled[1].trigger == "entry"


def test_suppressed_entry_is_not_replayed_when_the_cooldown_ends(
        semantics_runtime: MakeRuntime) -> None:
    """A suppressed entry stays suppressed: the end of the cooldown alone does not fire the rule."""
    rt = semantics_runtime("firing")
    rt.ingest(ev("c1", "level", "2024-01-01T10:00:00", value=3))
    rt.ingest(ev("c1", "level", "2024-01-02T10:00:00", value=1))
    assert of(rt.ingest(ev("c1", "level", "2024-01-03T10:00:00", value=3)), "cooled")
    later = rt.advance("2024-02-01T00:00:00")
    later += rt.ingest(ev("c1", "level", "2024-02-02T10:00:00", value=5))
    assert of(later, "cooled") == []


def test_max_times_limits_firing_and_records_the_rest(semantics_runtime: MakeRuntime) -> None:
    """After `max_times` firings, further entries are suppressed with 'max_times N reached'."""
    rt = semantics_runtime("firing")
    out: list[Action] = []
    for day in range(1, 9):
        out += rt.ingest(ev("c1", "level", f"2024-01-0{day}T10:00:00", value=3 if day % 2 else 0))
    capped = of(out, "capped")
    assert [a.status for a in capped] == ["planned", "planned", "suppressed", "suppressed"]
    assert {a.details["reason"] for a in capped[2:]} == {"max_times 2 reached"}


def test_every_recorded_action_has_its_own_key(semantics_runtime: MakeRuntime) -> None:
    """Idempotency keys are unique across planned and suppressed records of a rule."""
    rt = semantics_runtime("firing")
    out: list[Action] = []
    for day, level in enumerate([3, 1, 3, 1, 3, 1, 3], start=1):
        out += rt.ingest(ev("c1", "level", f"2024-01-{day * 4:02d}T10:00:00", value=level))
    records = of(out, "cooled") + of(out, "capped")
    assert {a.status for a in records} == {"planned", "suppressed"}
    keys = [a.key for a in records]
    assert len(keys) == len(set(keys))


# ---- delay and cancel_if -----------------------------------------------------------------


def test_delayed_action_comes_out_delay_later(semantics_runtime: MakeRuntime) -> None:
    """A `delay = "3d"` rule plans its action 3 days after firing, with trigger 'delayed'."""
    rt = semantics_runtime("delay")
    assert rt.ingest(ev("c1", "purchase", "2024-01-01T10:00:00", amount="10")) == []
    assert rt.state("c1").pending == 1
    assert rt.advance("2024-01-04T09:59:59") == []
    (action,) = rt.advance("2024-01-04T10:00:00")
    assert (action.time, action.rule, action.action, action.status, action.trigger) == \
        ("2024-01-04T10:00:00+08:00", "guide", "send", "planned", "delayed")
    assert action.details["message"] == "感谢购买，这是使用指南。"
    assert rt.state("c1").pending == 0


def test_cancel_if_drops_a_delayed_action(semantics_runtime: MakeRuntime) -> None:
    """cancel_if turning true before the delay ends records 'cancelled' + reason; none planned."""
    rt = semantics_runtime("delay")
    rt.ingest(ev("c1", "purchase", "2024-01-01T10:00:00", amount="10"))
    rt.ingest(ev("c2", "purchase", "2024-01-01T10:00:00", amount="10"))
    (cancelled,) = rt.ingest(ev("c1", "complaint", "2024-01-02T10:00:00", reason="慢"))
    assert (cancelled.time, cancelled.rule, cancelled.status, cancelled.trigger) == \
        ("2024-01-02T10:00:00+08:00", "guide", "cancelled", "delayed")
    assert cancelled.details == {"reason": 'cancel_if: "投诉过" in tags'}
    later = rt.advance("2024-01-10T00:00:00")
    assert [(a.customer_id, a.status) for a in later] == [("c2", "planned")]
    assert rt.state("c1").pending == 0


def test_cancel_if_already_true_when_fired_never_plans(semantics_runtime: MakeRuntime) -> None:
    """A delayed action whose cancel_if already holds at firing is cancelled, never planned."""
    rt = semantics_runtime("delay")
    rt.ingest(ev("c1", "complaint", "2024-01-01T09:00:00", reason="慢"))
    out = rt.ingest(ev("c1", "purchase", "2024-01-01T10:00:00", amount="10"))
    out += rt.advance("2024-01-10T00:00:00")
    assert [(a.rule, a.status) for a in out] == [("guide", "cancelled")]


# ---- days_since / anniversaries / days_until: wake-ups in virtual time ----------------------


def test_quiet_for_90_days_fires_at_the_day_start_of_day_90(semantics_runtime: MakeRuntime) -> None:
    """With no further events, the 90-days-quiet action comes at day_starts (09:00) of day 90."""
    rt = semantics_runtime("calendar")
    rt.ingest(ev("q1", "purchase", "2024-01-01T10:00:00", amount="10"))
    assert rt.advance("2024-03-31T08:59:59") == []
    (action,) = rt.advance("2024-03-31T09:00:00")
    assert (action.time, action.rule, action.action, action.trigger) == \
        ("2024-03-31T09:00:00+08:00", "quiet_90", "task", "entry")
    assert action.details["note"] == "q1 已 90 天未购买"
    assert action.facts == {"days_since_purchase": 90}


def test_day_starts_decides_which_day_an_early_event_belongs_to(
        semantics_runtime: MakeRuntime) -> None:
    """A purchase at 08:30 belongs to the previous playbook day (day_starts 09:00)."""
    rt = semantics_runtime("calendar")
    rt.ingest(ev("q1", "purchase", "2024-01-01T08:30:00", amount="10"))
    assert times(rt.advance("2024-04-30T00:00:00"), "quiet_90") == ["2024-03-30T09:00:00+08:00"]


def test_wakeups_due_before_an_event_run_first(semantics_runtime: MakeRuntime) -> None:
    """Another customer's later event first runs the wake-ups that were due before it."""
    rt = semantics_runtime("calendar")
    rt.ingest(ev("q1", "purchase", "2024-01-01T10:00:00", amount="10"))
    out = rt.ingest(ev("q2", "purchase", "2024-04-01T10:00:00", amount="10"))
    assert [(a.customer_id, a.rule, a.time) for a in out] == [
        ("q1", "quiet_90", "2024-03-31T09:00:00+08:00")]


def test_idle_customer_is_woken_only_at_thresholds(semantics_runtime: MakeRuntime) -> None:
    """An idle customer is woken only at its thresholds; five quiet years cost and raise nothing."""
    rt = semantics_runtime("calendar")
    ticks: list[str] = []
    rt.observe(lambda obs: ticks.append(rt.calendar.format(obs.now)), "evaluation")
    rt.ingest(ev("q1", "purchase", "2024-01-01T10:00:00", amount="10"))
    assert times(rt.advance("2024-06-01T00:00:00"), "quiet_90") == ["2024-03-31T09:00:00+08:00"]
    ticks_before = list(ticks)
    assert len(ticks_before) <= 3  # the purchase, day 90, and at most one more threshold day
    assert rt.advance("2029-06-01T00:00:00") == []
    assert ticks == ticks_before
    assert rt.state("q1").metrics["days_since_purchase"] == \
        (dt.date(2029, 5, 31) - dt.date(2024, 1, 1)).days


def test_birthday_three_days_ahead_including_29_february(semantics_runtime: MakeRuntime) -> None:
    """days_to_anniversary == 3; a 29 Feb birthday fires 25 Feb (common year), 26 Feb (leap)."""
    rt = semantics_runtime("calendar")
    rt.add_profile({"customer_id": "leap", "birthday": "2000-02-29"})
    rt.add_profile({"customer_id": "may", "name": "李雷", "birthday": "1990-05-20"})
    out = rt.advance("2023-01-01T00:00:00")
    out += rt.advance("2024-12-31T00:00:00")
    got = [(a.customer_id, a.time) for a in of(out, "birthday")]
    assert got == [
        ("leap", "2023-02-25T09:00:00+08:00"),
        ("may", "2023-05-17T09:00:00+08:00"),
        ("leap", "2024-02-26T09:00:00+08:00"),
        ("may", "2024-05-17T09:00:00+08:00"),
    ]
    messages = {a.customer_id: a.details["message"] for a in of(out, "birthday")}
    assert messages == {"leap": "亲爱的顾客，3 天后是您的生日！", "may": "李雷，3 天后是您的生日！"}


def test_days_until_membership_expiry(semantics_runtime: MakeRuntime) -> None:
    """days_until(membership_expires) == 15 fires once, at the day start 15 days before expiry."""
    rt = semantics_runtime("calendar")
    rt.add_profile({"customer_id": "m1", "membership_expires": "2024-06-30"})
    out = rt.advance("2024-01-01T00:00:00") + rt.advance("2025-01-01T00:00:00")
    (action,) = of(out, "expiry")
    assert action.time == "2024-06-15T09:00:00+08:00"
    assert action.details["message"] == "会员将于 2024-06-30 到期，还剩 15 天。"


def test_profile_event_reschedules_time_relative_rules(semantics_runtime: MakeRuntime) -> None:
    """A birthday that arrives by a 'profile' event is taken into account for the next wake-up."""
    rt = semantics_runtime("calendar")
    rt.ingest(ev("c1", "purchase", "2024-01-01T10:00:00", amount="10"))
    rt.ingest(ev("c1", "profile", "2024-01-02T10:00:00", birthday="1990-01-10"))
    assert times(rt.advance("2024-01-09T10:00:00"), "birthday") == ["2024-01-07T09:00:00+08:00"]


def test_add_profile_of_known_customer_reschedules(semantics_runtime: MakeRuntime) -> None:
    """add_profile on a customer already seen makes the new birthday count for wake-ups."""
    rt = semantics_runtime("calendar")
    rt.ingest(ev("c1", "purchase", "2024-01-01T10:00:00", amount="10"))
    rt.advance("2024-01-02T10:00:00")
    rt.add_profile({"customer_id": "c1", "birthday": "1990-01-10"})
    assert times(rt.advance("2024-01-09T10:00:00"), "birthday") == ["2024-01-07T09:00:00+08:00"]


def test_today_condition_wakes_only_at_its_dates(semantics_runtime: MakeRuntime) -> None:
    """`today >= 2024-06-01 and today < 2024-09-01` wakes an idle customer near those dates only."""
    rt = semantics_runtime("today")
    ticks: list[int] = []
    rt.observe(lambda obs: ticks.append(obs.now), "evaluation")
    out = rt.ingest(ev("c1", "purchase", "2024-01-01T10:00:00", amount="1"))
    out += rt.advance("2024-12-31T00:00:00")
    assert times(out, "summer_sale") == ["2024-06-01T00:00:00+08:00"]
    assert len(ticks) <= 5


# ---- windowed metrics ----------------------------------------------------------------------


def test_count_window_tag_goes_away_as_events_leave(semantics_runtime: MakeRuntime) -> None:
    """A tag held while count(purchase, 7d) >= 3 goes away 7 days after the oldest of the three."""
    rt = semantics_runtime("windows")
    for day in (1, 2, 3):
        rt.ingest(ev("w1", "purchase", f"2024-01-0{day}T10:00:00", amount="100"))
    assert "活跃买家" in rt.state("w1").tags
    assert rt.state("w1").metrics["purchases_7d"] == 3
    rt.advance("2024-01-08T09:59:59")
    assert "活跃买家" in rt.state("w1").tags
    rt.advance("2024-01-08T10:00:00")
    assert "活跃买家" not in rt.state("w1").tags
    assert rt.state("w1").metrics["purchases_7d"] == 2
    rt.advance("2024-01-10T10:00:00")
    assert rt.state("w1").metrics["purchases_7d"] == 0


def test_sum_window_drops_old_amounts(semantics_runtime: MakeRuntime) -> None:
    """sum(purchase.amount, 7d) drops amounts older than 7 days, and its tag follows."""
    rt = semantics_runtime("windows")
    rt.ingest(ev("w1", "purchase", "2024-01-01T10:00:00", amount="300.50"))
    rt.ingest(ev("w1", "purchase", "2024-01-05T10:00:00", amount="199.50"))
    assert rt.state("w1").metrics["spend_7d"] == 500.0
    assert "大额" in rt.state("w1").tags
    rt.advance("2024-01-08T10:00:00")
    assert rt.state("w1").metrics["spend_7d"] == 199.5
    assert "大额" not in rt.state("w1").tags


def test_max_count_per_key_same_item_three_times_in_7_days(semantics_runtime: MakeRuntime) -> None:
    """max_count_per_key fires when one item is browsed 3 times within 7 days, not across 8 days."""
    rt = semantics_runtime("windows")
    out: list[Action] = []
    for ts, item in [("2024-01-01T10:00:00", "A"), ("2024-01-02T10:00:00", "B"),
                     ("2024-01-02T11:00:00", "A"), ("2024-01-03T10:00:00", "B"),
                     ("2024-01-06T10:00:00", "A")]:
        out += rt.ingest(ev("w1", "browse", ts, item=item))
    (action,) = of(out, "browsed_three_times")
    assert action.time == "2024-01-06T10:00:00+08:00"
    assert action.details["note"] == "同一商品 7 天内浏览 3 次"
    late: list[Action] = []
    for ts in ("2024-02-01T10:00:00", "2024-02-04T10:00:00", "2024-02-08T10:00:00"):
        late += rt.ingest(ev("w2", "browse", ts, item="A"))
    assert of(late, "browsed_three_times") == []  # the first is exactly 7 days old: out
    assert rt.state("w2").metrics["same_item_7d"] == 2


# ---- scorecards and tags ---------------------------------------------------------------------


def test_scorecard_dynamic_sticky_and_manual_tags(semantics_runtime: MakeRuntime) -> None:
    """Score sums holding factors; dynamic tags follow, sticky ones stay, manual ones by actions."""
    rt = semantics_runtime("scorecard")
    rt.ingest(ev("s1", "purchase", "2024-01-01T10:00:00", amount="10"))
    assert rt.state("s1").scores == {"risk": 0.0}
    rt.ingest(ev("s1", "complaint", "2024-01-05T10:00:00", reason="太慢"))
    view = rt.state("s1")
    assert (view.scores, view.tags) == ({"risk": 30.0}, frozenset({"投诉过"}))

    out = rt.advance("2024-02-01T00:00:00")  # day 31 without a purchase: 40 + 30 points
    assert [(a.rule, a.action, a.time) for a in out] == [
        ("contact_high_risk", "task", "2024-02-01T00:00:00+08:00"),
        ("contact_high_risk", "tag", "2024-02-01T00:00:00+08:00"),
    ]
    assert out[0].details["note"] == "风险 70，请联系"
    assert rt.state("s1").tags == {"高风险", "投诉过", "已联系"}

    rt.advance("2024-02-04T10:00:00")  # the complaint leaves the 30-day window: 40 points
    view = rt.state("s1")
    assert view.scores == {"risk": 40.0}
    assert view.tags == {"投诉过", "已联系"}  # dynamic tag gone, sticky and manual kept

    out = rt.ingest(ev("s1", "purchase", "2024-02-05T10:00:00", amount="20"))
    assert [(a.rule, a.action, a.details) for a in out] == [
        ("clear_contacted", "untag", {"tag": "已联系"})]
    assert rt.state("s1").tags == {"投诉过"}
    assert rt.state("s1").scores == {"risk": 0.0}

    out = rt.ingest(ev("s1", "purchase", "2024-02-06T10:00:00", amount="1000"))
    assert [(a.rule, a.action) for a in out] == [("forgive", "untag")]
    assert rt.state("s1").tags == frozenset()


# ---- stages, forward chaining, priority ------------------------------------------------------


def test_first_matching_stage_wins(semantics_runtime: MakeRuntime) -> None:
    """The stage is the first one whose condition holds, in file order, else the catch-all."""
    rt = semantics_runtime("stages")
    rt.ingest(ev("a", "purchase", "2024-01-01T10:00:00", amount="10"))
    rt.ingest(ev("b", "purchase", "2024-01-01T10:00:00", amount="1500"))
    assert rt.state("a").stage == "new"
    assert rt.state("b").stage == "vip"
    rt.ingest(ev("b", "purchase", "2024-01-02T10:00:00", amount="10"))
    assert rt.state("b").stage == "vip"  # regular holds too, but vip comes first


def test_stage_change_fires_rules_in_the_same_evaluation(semantics_runtime: MakeRuntime) -> None:
    """Entering a stage is a fact: `stage == "regular"` fires with the purchase that caused it."""
    rt = semantics_runtime("stages")
    assert rt.ingest(ev("c1", "purchase", "2024-01-01T10:00:00", amount="100")) == []
    out = rt.ingest(ev("c1", "purchase", "2024-01-02T10:00:00", amount="100"))
    assert [(a.rule, a.time, a.details["message"]) for a in out] == [
        ("welcome_regular", "2024-01-02T10:00:00+08:00", "regular")]


def test_forward_chaining_and_priority_order(semantics_runtime: MakeRuntime) -> None:
    """Rules fire by priority then file order; a tag one sets fires a rule reading it, same time."""
    rt = semantics_runtime("stages")
    rt.ingest(ev("c1", "purchase", "2024-01-01T10:00:00", amount="100"))
    rt.ingest(ev("c1", "purchase", "2024-01-02T10:00:00", amount="100"))
    out = rt.ingest(ev("c1", "purchase", "2024-01-03T10:00:00", amount="900"))
    assert [a.rule for a in out] == ["mark_vip", "vip_hello", "tie_first", "premium_follow",
                                     "tie_second", "vip_last"]
    assert {a.time for a in out} == {"2024-01-03T10:00:00+08:00"}
    assert rt.state("c1").tags == {"VIP标记", "尊享"}
    assert of(out, "premium_follow")[0].facts == {"tags": ["VIP标记", "尊享"]}


# ---- chains that do not settle --------------------------------------------------------------


def test_a_direct_tag_loop_is_rejected_before_any_run() -> None:
    """A loop through a tag that rules set and clear is a PlaybookError naming both rules."""
    with pytest.raises(sopkit.PlaybookError) as caught:
        sopkit.load_playbook(SEMANTICS / "chain_static.toml")
    message = str(caught.value)
    assert "rules can trigger each other without end" in message
    assert "mark_x" in message and "unmark_x" in message


def test_a_chain_longer_than_the_bound_raises_chain_error(semantics_runtime: MakeRuntime) -> None:
    """A chain of rules longer than the runtime's bound raises ChainError naming the rules."""
    rt = semantics_runtime("chain_long")
    with pytest.raises(sopkit.ChainError) as caught:
        rt.ingest(ev("c1", "ping", "2024-01-01T10:00:00"))
    message = str(caught.value)
    assert "customer c1" in message and "did not settle" in message
    assert "step_6" in message  # the rules that were still firing


def test_facts_that_never_settle_raise_chain_error(semantics_runtime: MakeRuntime) -> None:
    """A score and dynamic tag negating each other pass `check` but raise ChainError naming it."""
    rt = semantics_runtime("chain_flicker")
    with pytest.raises(sopkit.ChainError, match="闪烁"):
        rt.ingest(ev("c1", "ping", "2024-01-01T10:00:00"))


def test_cycle_through_a_dynamic_tag_passes_the_static_check() -> None:
    """`sopkit check` does not see a rule loop that goes through a dynamic tag."""
    sopkit.load_playbook(SEMANTICS / "chain_cycle.toml")


def test_cycle_through_a_dynamic_tag_raises_chain_error(semantics_runtime: MakeRuntime) -> None:
    """mark_x -> Y -> unmark_x -> not Y -> mark_x ... raises ChainError naming both rules."""
    rt = semantics_runtime("chain_cycle")
    with pytest.raises(sopkit.ChainError) as caught:
        rt.ingest(ev("c1", "ping", "2024-01-01T10:00:00"))
    assert "mark_x" in str(caught.value) and "unmark_x" in str(caught.value)


# ---- determinism -----------------------------------------------------------------------------

HISTORY = [
    ev("c2", "purchase", "2024-01-01T10:00:00", amount="10"),
    ev("c1", "purchase", "2024-01-01T10:00:00", amount="500"),
    ev("c1", "complaint", "2024-01-03T12:00:00", reason="包装破损"),
    ev("c3", "purchase", "2024-01-04T09:00:00", amount="20"),
    ev("c2", "complaint", "2024-01-20T12:00:00", reason="慢"),
    ev("c3", "purchase", "2024-03-01T10:00:00", amount="1200"),
    ev("c1", "purchase", "2024-03-15T10:00:00", amount="30"),
]


def run_history(rt: Runtime) -> list[dict[str, Any]]:
    out: list[Action] = []
    for record in HISTORY:
        out += rt.ingest(record)
    out += rt.advance("2024-09-01T00:00:00")
    return [a.to_json() for a in out]


def test_same_inputs_give_identical_action_streams(semantics_runtime: MakeRuntime) -> None:
    """Two fresh Runtimes fed the same playbook and events produce identical to_json() streams."""
    first = run_history(semantics_runtime("scorecard"))
    second = run_history(semantics_runtime("scorecard"))
    assert len(first) > 5
    assert json.dumps(first, ensure_ascii=False) == json.dumps(second, ensure_ascii=False)


def test_simulate_is_byte_identical_and_matches_the_runtime(tmp_path: Path) -> None:
    """sopkit.simulate twice gives byte-identical files, with what a Runtime does, line for line."""
    events = tmp_path / "events.jsonl"
    events.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in HISTORY),
                      encoding="utf-8")
    playbook = sopkit.load_playbook(SEMANTICS / "scorecard.toml")
    outputs = []
    for name in ("a.jsonl", "b.jsonl"):
        with (tmp_path / name).open("w", encoding="utf-8") as out:
            summary = sopkit.simulate(playbook, events, out=out, end="2024-09-01T00:00:00")
        assert summary.events_applied == len(HISTORY)
        outputs.append((tmp_path / name).read_bytes())
    assert outputs[0] == outputs[1]
    lines = [json.loads(line) for line in outputs[0].decode("utf-8").splitlines()]
    assert lines == json.loads(json.dumps(run_history(sopkit.Runtime(playbook)),
                                          ensure_ascii=False))


# ---- templates and the profile event ---------------------------------------------------------


def test_templates_render_facts_chinese_text_and_defaults(semantics_runtime: MakeRuntime) -> None:
    """Templates fill in metrics, params and profile facts, falling back to default("...")."""
    rt = semantics_runtime("templates")
    out = rt.ingest(ev("t1", "purchase", "2024-01-01T10:00:00", amount="99.5"))
    send, task = of(out, "thanks")
    assert send.details["message"] == \
        "亲爱的顾客，感谢第 1 次光临！城市：未知，累计 99.5 元，券 满100减10。"
    assert send.details["params"] == {"coupon": "满100减10"}
    assert task.details["note"] == "跟进 t1（），VIP："
    rt.add_profile({"customer_id": "t2", "name": "张三", "city": "北京", "vip": "否"})
    send, task = of(rt.ingest(ev("t2", "purchase", "2024-01-02T10:00:00", amount="100")),
                    "thanks")
    assert send.details["message"] == \
        "张三，感谢第 1 次光临！城市：北京，累计 100 元，券 满100减10。"
    assert task.details["note"] == "跟进 t2（张三），VIP：否"


def test_profile_event_updates_profile_attributes(semantics_runtime: MakeRuntime) -> None:
    """A 'profile' event sets typed profile attributes and rules on them fire at its time."""
    rt = semantics_runtime("templates")
    rt.ingest(ev("p1", "purchase", "2024-01-01T10:00:00", amount="10"))
    out = rt.ingest(ev("p1", "profile", "2024-01-05T10:00:00", name="王芳", city="上海",
                       vip="是", birthday="1992-07-08", owner="staff-7"))
    view = rt.state("p1")
    assert view.profile == {"name": "王芳", "city": "上海", "vip": True,
                            "birthday": dt.date(1992, 7, 8)}
    assert view.owner == "staff-7"
    (action,) = out
    assert (action.rule, action.time) == ("vip_welcome", "2024-01-05T10:00:00+08:00")
    assert action.details["note"] == "上海 VIP 王芳 生日 1992-07-08"
    assert action.details["assignee"] == "staff-7"
    rt.ingest(ev("p1", "profile", "2024-01-06T10:00:00", city="杭州"))
    assert rt.state("p1").profile["city"] == "杭州"
    assert rt.state("p1").profile["name"] == "王芳"  # attributes not given are kept


def test_on_rule_template_can_use_the_event_fields(semantics_runtime: MakeRuntime) -> None:
    """In an `on` rule, {{ event.amount }} renders the triggering event's amount."""
    rt = semantics_runtime("event_template")
    (action,) = rt.ingest(ev("c1", "purchase", "2024-01-01T10:00:00", amount="88.5"))
    assert action.details["note"] == "本单金额 88.5 元"


def test_list_attribute_renders_the_same_in_every_process() -> None:
    """A list-typed profile attribute renders identically whatever the process's hash seed."""
    script = (
        "import sopkit, sys\n"
        "rt = sopkit.Runtime(sopkit.load_playbook(sys.argv[1]))\n"
        "rt.add_profile({'customer_id': 'c1', 'interests': ['书', '茶', '酒', '花', '鱼']})\n"
        "(a,) = rt.ingest({'customer_id': 'c1', 'type': 'purchase',"
        " 'ts': '2024-01-01T10:00:00', 'amount': '1'})\n"
        "print(a.details['note'])\n"
    )
    notes = set()
    for seed in ("0", "1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run([sys.executable, "-c", script, str(SEMANTICS / "list_template.toml")],
                              capture_output=True, text=True, env=env, check=True)
        notes.add(done.stdout)
    assert len(notes) == 1


def test_missing_fact_comparisons_are_false_and_not_negates(semantics_runtime: MakeRuntime) -> None:
    """A comparison reading a missing fact is false (== and != alike); `not` of it is true."""
    rt = semantics_runtime("missing")
    out = rt.ingest(ev("c1", "visit", "2023-12-01T10:00:00", on_date="2023-12-01"))
    assert [a.rule for a in out] == ["city_not_sh"]
    out = rt.ingest(ev("c1", "profile", "2023-12-02T10:00:00", city="北京"))
    assert [a.rule for a in out] == ["city_ne_sh"]


def test_date_metric_shows_as_a_date_in_facts(semantics_runtime: MakeRuntime) -> None:
    """An action's facts show a date-valued metric as YYYY-MM-DD, like the message does."""
    rt = semantics_runtime("missing")
    out = rt.ingest(ev("c1", "visit", "2024-01-02T10:00:00", on_date="2024-01-02"))
    (action,) = of(out, "visited_this_year")
    assert action.details["note"] == "最近到店 2024-01-02"
    assert action.facts == {"last_visit_date": "2024-01-02"}


def test_template_title_renders_params(semantics_runtime: MakeRuntime) -> None:
    """A send action's title renders params and facts like its text does."""
    rt = semantics_runtime("title")
    (action,) = rt.ingest(ev("c1", "purchase", "2024-01-01T10:00:00", amount="1"))
    assert action.details["message"] == "送您 满100减10"
    assert action.details["title"] == "您的 满100减10 券"


def test_unknown_name_in_template_title_is_a_playbook_error() -> None:
    """A template title naming an unknown fact is rejected when the playbook loads."""
    with pytest.raises(sopkit.PlaybookError, match="no_such_metric"):
        sopkit.load_playbook(SEMANTICS / "title_unknown.toml")


# ---- bad events ------------------------------------------------------------------------------


@pytest.mark.parametrize(("record", "reason"), [
    (ev("c1", "refund", "2024-01-01T10:00:00"), "unknown event type 'refund'"),
    (ev("c1", "purchase", "01/02/2024", amount="1"), "bad 'ts' '01/02/2024'"),
    (ev("c1", "purchase", "2024-13-01T10:00:00", amount="1"), "bad 'ts'"),
    ({"customer_id": "c1", "type": "purchase", "amount": "1"}, "missing 'ts'"),
    (ev("c1", "purchase", "2024-01-01T10:00:00", amount="abc"),
     "field 'amount': 'abc' is not a valid decimal"),
    (ev("c1", "purchase", "2024-01-01T10:00:00", amount="NaN"), "field 'amount'"),
    (ev("c1", "profile", "2024-01-01T10:00:00", birthday="yesterday"),
     "profile attribute 'birthday': 'yesterday' is not a valid date"),
    (ev("c1", "profile", "2024-01-01T10:00:00", vip="maybe"), "profile attribute 'vip'"),
    ({"type": "purchase", "ts": "2024-01-01T10:00:00"}, "missing 'customer_id'"),
    ({"customer_id": "c1", "ts": "2024-01-01T10:00:00"}, "missing event 'type'"),
])
def test_bad_events_raise_event_error_with_a_reason(semantics_runtime: MakeRuntime,
                                                    record: dict[str, Any], reason: str) -> None:
    """A malformed event raises EventError whose message says what is wrong."""
    rt = semantics_runtime("templates")
    with pytest.raises(sopkit.EventError) as caught:
        rt.ingest(record)
    assert reason in str(caught.value)


def test_out_of_order_event_raises_event_error(semantics_runtime: MakeRuntime) -> None:
    """An event before the runtime's clock raises EventError and leaves the state as it was."""
    rt = semantics_runtime("templates")
    rt.ingest(ev("c1", "purchase", "2024-01-02T10:00:00", amount="10"))
    with pytest.raises(sopkit.EventError, match="out of order"):
        rt.ingest(ev("c1", "purchase", "2024-01-01T10:00:00", amount="10"))
    assert rt.state("c1").metrics["purchases"] == 1
    rt.ingest(ev("c1", "purchase", "2024-01-02T10:00:00", amount="10"))  # same time is fine
    assert rt.state("c1").metrics["purchases"] == 2


def test_untag_of_a_sticky_tag_holds_until_its_condition_enters_again(
        semantics_runtime: MakeRuntime) -> None:
    """An untagged sticky tag stays off while its condition still holds; a new entry re-tags."""
    rt = semantics_runtime("scorecard")
    rt.ingest(ev("s2", "complaint", "2024-03-01T10:00:00", reason="太慢"))
    assert "投诉过" in rt.state("s2").tags
    rt.ingest(ev("s2", "purchase", "2024-03-02T10:00:00", amount="1000"))  # forgive
    rt.ingest(ev("s2", "complaint", "2024-03-03T10:00:00", reason="又慢"))
    assert "投诉过" not in rt.state("s2").tags  # complaints_30d > 0 never went false
    rt.advance("2024-04-10T00:00:00")  # both complaints leave the window
    rt.ingest(ev("s2", "complaint", "2024-04-11T10:00:00", reason="第三次"))
    assert "投诉过" in rt.state("s2").tags
