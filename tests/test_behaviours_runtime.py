"""Runtime behaviours a user notices that the older tests left unchecked (issue 14).

Each test drives a real Runtime (or the CLI) of a small playbook on the virtual clock and
reads what a user sees: action records, rendered messages, errors, outbox rows, the
per-stage counts `sopkit report` samples, `sopkit explain` lines.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import sopkit
from sopkit import Action
from sopkit._cli.app import app
from sopkit._live.loop import mirror_rows
from sopkit._runtime.observe import TagLog

PLAYBOOK = """\
[playbook]
name = "tea"
timezone = "Asia/Shanghai"
day_starts = "00:00"

[profile]
name = "string"

[events.purchase]
amount = "decimal"

[events.move]
to = "string"

[metrics]
purchases = { kind = "count", event = "purchase" }
spend = { kind = "sum", event = "purchase", field = "amount" }

[channels.sms]
type = "sms"

[channels.wecom]
type = "wecom"
tag_ids = { vip = "etVIP" }

[templates.thanks]
text = "谢谢第 {{ purchases }} 次光临，累计 {{ spend }} 元"

[tags.vip]
description = "消费满 100 元"

[[stages]]
name = "regular"
when = "purchases >= 2"

[[stages]]
name = "new"
when = "purchases >= 1"

[[rules]]
name = "thanks"
on = "purchase"
actions = [{ type = "send", channel = "sms", template = "thanks" }]

[[rules]]
name = "vip"
when = "spend >= 100"
actions = [{ type = "tag", tag = "vip" }]

[[rules]]
name = "move"
on = "move"
actions = [{ type = "reassign", to = "li" }]
"""


def _loaded(tmp_path: Path, text: str = PLAYBOOK) -> Any:
    path = tmp_path / "tea.toml"
    path.write_text(text, encoding="utf-8")
    return sopkit.load_playbook(path)


def _runtime(tmp_path: Path, text: str = PLAYBOOK) -> sopkit.Runtime:
    return sopkit.Runtime(_loaded(tmp_path, text), engine="native")


def _buy(customer: str, ts: str, amount: str = "30", **extra: Any) -> dict[str, Any]:
    return {"customer_id": customer, "type": "purchase", "ts": ts, "amount": amount, **extra}


def _sends(actions: list[Action]) -> list[str]:
    return [a.details["message"] for a in actions if a.action == "send"]


def test_a_message_shows_the_metrics_without_clv(tmp_path: Path) -> None:
    """Templates render the customer's metrics in a playbook without [clv]."""
    rt = _runtime(tmp_path)
    rt.ingest(_buy("c1", "2025-01-01T10:00:00", "30"))
    assert _sends(rt.ingest(_buy("c1", "2025-01-02T10:00:00", "12.5"))) == \
        ["谢谢第 2 次光临，累计 42.5 元"]


def test_an_event_with_an_event_id_keeps_its_fields(tmp_path: Path) -> None:
    """An event carrying an event_id still counts its own fields (the amount is summed)."""
    rt = _runtime(tmp_path)
    actions = rt.ingest(_buy("c1", "2025-01-01T10:00:00", "30", event_id="order-1"))
    assert _sends(actions) == ["谢谢第 1 次光临，累计 30 元"]


def test_a_redelivered_event_id_is_refused(tmp_path: Path) -> None:
    """The same event_id a day later is a duplicate: an EventError, counted once."""
    rt = _runtime(tmp_path)
    rt.ingest(_buy("c1", "2025-01-01T10:00:00", event_id="order-1"))
    with pytest.raises(sopkit.EventError, match="duplicate event_id 'order-1'"):
        rt.ingest(_buy("c1", "2025-01-02T10:00:00", event_id="order-1"))
    assert _sends(rt.ingest(_buy("c1", "2025-01-03T10:00:00", event_id="order-2"))) == \
        ["谢谢第 2 次光临，累计 60 元"]


def test_a_nan_amount_is_refused(tmp_path: Path) -> None:
    """A decimal field given as NaN is a bad event naming the field, not a poisoned sum."""
    rt = _runtime(tmp_path)
    with pytest.raises(sopkit.EventError, match="amount"):
        rt.ingest(_buy("c1", "2025-01-01T10:00:00", "NaN"))


def test_a_reassign_record_names_the_previous_owner(tmp_path: Path) -> None:
    """A reassign action's record says whom the customer was taken from."""
    rt = _runtime(tmp_path)
    rt.add_profile({"customer_id": "c1", "name": "王", "owner": "zhang"})
    (moved,) = [a for a in rt.ingest({"customer_id": "c1", "type": "move", "to": "x",
                                      "ts": "2025-01-01T10:00:00"}) if a.action == "reassign"]
    assert (moved.details["from_owner"], moved.details["to"]) == ("zhang", "li")
    assert moved.to_json()["from_owner"] == "zhang"


def test_stage_counts_follow_customers_between_stages(tmp_path: Path) -> None:
    """The per-stage counts `sopkit report` samples move as customers change stage."""
    rt = _runtime(tmp_path)
    for cid in ("a", "b", "c"):
        rt.ingest(_buy(cid, "2025-01-01T10:00:00"))
    rt.ingest(_buy("a", "2025-01-02T10:00:00"))
    assert {k: v for k, v in rt.stage_counts.items() if v} == {"new": 2, "regular": 1}


def test_a_tag_change_is_mirrored_to_wecom_numbered_from_one(tmp_path: Path) -> None:
    """A rule's tag on a mirrored tag makes one WeCom `tag` row, its key numbered from 1."""
    loaded = _loaded(tmp_path)
    rt = sopkit.Runtime(loaded, engine="native")
    log = TagLog()
    rt.observe(log, "tag")
    rt.ingest(_buy("c1", "2025-01-01T10:00:00", "120"))
    rows = mirror_rows(loaded, rt, log)
    assert [(r.kind, r.channel, r.key, r.message["body"]) for r in rows] == \
        [("tag", "wecom", f"{rt.pk}:mirror:wecom:c1:1", {"tag": "vip"})]


def test_named_handover_goes_to_the_named_successor(tmp_path: Path) -> None:
    """policy = "named" hands every customer of the departed to their named successor."""
    text = (Path(__file__).parent / "data" / "live" / "handover.toml").read_text("utf-8")
    text = text.replace('policy = "round_robin"',
                        'policy = "named"\nsuccessors = { zhang = "wang" }')
    rt = _runtime(tmp_path, text)
    for cid in ("a", "b", "c"):
        rt.add_profile({"customer_id": cid, "name": cid, "owner": "zhang"})
    actions = rt.ingest({"type": "staff_departed", "staff": "zhang",
                         "ts": "2025-01-05T10:00:00"})
    assert [(a.customer_id, a.details["to"]) for a in actions] == \
        [("a", "wang"), ("b", "wang"), ("c", "wang")]
    assert {a.deliver_ts for a in actions} == {actions[0].ts}, "the records are due at once"


def test_explain_send_from_marks_only_earlier_actions_backfilled(tmp_path: Path) -> None:
    """`sopkit explain --send-from`: sends due before it show backfilled, later ones planned."""
    path = tmp_path / "tea.toml"
    path.write_text(PLAYBOOK, encoding="utf-8")
    events = tmp_path / "events.jsonl"
    events.write_text("".join(json.dumps(_buy("c1", ts)) + "\n" for ts in
                              ("2025-01-01T10:00:00", "2025-02-20T10:00:00")), encoding="utf-8")
    result = CliRunner().invoke(app, ["explain", str(path), "--events", str(events),
                                      "--customer", "c1", "--send-from", "2025-01-15T00:00:00",
                                      "--output", "jsonl"])
    assert result.exit_code == 0, result.output
    sends = [e["data"]["status"] for e in map(json.loads, result.stdout.splitlines())
             if e["kind"] == "action" and e["data"]["action"] == "send"]
    assert sends == ["backfilled", "planned"]


def test_a_message_shows_the_metrics_with_clv(tmp_path: Path) -> None:
    """With [clv] declared, a template still renders plain metrics (not the CLV facts)."""
    text = PLAYBOOK.replace("[channels.sms]", '[clv]\nevent = "purchase"\namount = "amount"\n'
                            'every = "30d"\nhorizon = "90d"\n\n[channels.sms]')
    rt = _runtime(tmp_path, text)
    assert _sends(rt.ingest(_buy("c1", "2025-01-01T10:00:00", "30"))) == \
        ["谢谢第 1 次光临，累计 30 元"]


RFM = """\
[playbook]
name = "rfm"
timezone = "Asia/Shanghai"
day_starts = "09:00"

[events.purchase]
amount = "decimal"

[events.ping]

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

[templates.score]
text = "R{{ rfm_r }} F{{ rfm_f }} M{{ rfm_m }} {{ rfm_segment }}"

[[rules]]
name = "score"
on = "ping"
actions = [{ type = "send", channel = "sms", template = "score" }]
"""


def test_weekly_rfm_refit_scores_each_dimension_on_its_own(tmp_path: Path) -> None:
    """After the Monday refit, R, F and M are each scored against their own quintiles."""
    rt = _runtime(tmp_path, RFM)
    for i in range(10):  # c{i}: i + 1 purchases on 1 + i January, 100 * (10 - i) yuan each
        for _ in range(i + 1):
            rt.ingest({"customer_id": f"c{i}", "type": "purchase", "amount": str(100 * (10 - i)),
                       "ts": f"2025-01-{1 + i:02d}T10:00:00"})
    rt.advance("2025-01-20T10:00:00")  # refits on Monday 13 and 20 January, 09:00
    messages = [_sends(rt.ingest({"customer_id": c, "type": "ping",
                                  "ts": "2025-01-20T11:00:00"}))[0] for c in ("c0", "c5", "c9")]
    assert messages == ["R1 F1 M1 一般挽留客户", "R3 F3 M5 重要价值客户", "R5 F5 M1 一般价值客户"]


def test_a_profile_loaded_before_any_event_is_exported(tmp_path: Path) -> None:
    """A profile added before the clock starts is a changed customer the host must save."""
    rt = _runtime(tmp_path)
    rt.add_profile({"customer_id": "c1", "name": "王"})
    assert [e.customer_id for e in rt.export_changed()] == ["c1"]


def test_a_departure_without_a_time_is_a_bad_event(tmp_path: Path) -> None:
    """A staff_departed event with no usable `ts` is an EventError saying so."""
    rt = _runtime(tmp_path)
    for ts in (None, "", "next tuesday"):
        with pytest.raises(sopkit.EventError, match="bad 'ts'"):
            rt.ingest({"type": "staff_departed", "staff": "zhang", "ts": ts})


def test_rules_on_the_owner_fire_at_the_handover(tmp_path: Path) -> None:
    """A rule that reads the owner sees the successor at the moment of the hand-over."""
    text = (Path(__file__).parent / "data" / "live" / "handover.toml").read_text("utf-8")
    text += ('\n[[rules]]\nname = "welcome_li"\nwhen = \'owner == "li"\'\n'
             'actions = [{ type = "task", note = "新客户 {{ profile.name }}" }]\n')
    rt = _runtime(tmp_path, text)
    rt.add_profile({"customer_id": "a", "name": "王", "owner": "zhang"})
    rt.ingest({"customer_id": "a", "type": "purchase", "ts": "2025-01-01T10:00:00"})
    actions = rt.ingest({"type": "staff_departed", "staff": "zhang", "to": "li",
                         "ts": "2025-01-05T10:00:00"})
    assert [(a.rule, a.action) for a in actions] == [("handover", "reassign"),
                                                     ("welcome_li", "task")]


def test_a_webhook_record_carries_its_channel_and_payload(tmp_path: Path) -> None:
    """A webhook action's record names its channel and the rendered payload it would post."""
    text = PLAYBOOK.replace("[channels.sms]", '[channels.crm]\ntype = "webhook"\n'
                            'url = "https://crm.example.com/hook"\n\n[channels.sms]')
    text += ('\n[[rules]]\nname = "notify"\non = "purchase"\nactions = [{ type = "webhook", '
             'channel = "crm", payload = { event = "bought", n = "{{ purchases }}" } }]\n')
    rt = _runtime(tmp_path, text)
    (hook,) = [a for a in rt.ingest(_buy("c1", "2025-01-01T10:00:00")) if a.action == "webhook"]
    assert (hook.details["channel"], hook.details["payload"]) == \
        ("crm", {"event": "bought", "n": "1"})


def test_nothing_left_to_wake_for_clears_the_wake_up(tmp_path: Path) -> None:
    """Once a customer's last threshold has passed, the export says no wake-up is scheduled."""
    text = (Path(__file__).parent / "data" / "live" / "handover.toml").read_text("utf-8")
    rt = _runtime(tmp_path, text)
    rt.ingest({"customer_id": "a", "type": "purchase", "ts": "2025-01-01T10:00:00"})
    assert rt.export("a").wake_at is not None
    rt.advance("2025-03-01T10:00:00")
    assert rt.export("a").wake_at is None


def test_an_event_id_older_than_the_window_may_come_again(tmp_path: Path) -> None:
    """An event_id seen over 30 days before is forgotten: the event is applied again."""
    rt = _runtime(tmp_path)
    rt.ingest(_buy("c1", "2025-01-01T10:00:00", event_id="order-1"))
    rt.ingest(_buy("c1", "2025-02-15T10:00:00", event_id="order-2"))
    assert _sends(rt.ingest(_buy("c1", "2025-02-16T10:00:00", event_id="order-1"))) == \
        ["谢谢第 3 次光临，累计 90 元"]


def test_a_customer_view_lists_clv_facts_only_with_clv(tmp_path: Path) -> None:
    """`state()` shows p_alive and the other CLV facts when [clv] is declared, else not."""
    clv = PLAYBOOK.replace("[channels.sms]", '[clv]\nevent = "purchase"\namount = "amount"\n'
                           'every = "30d"\nhorizon = "90d"\n\n[channels.sms]')
    for text, shown in ((PLAYBOOK, False), (clv, True)):
        rt = _runtime(tmp_path, text)
        rt.ingest(_buy("c1", "2025-01-01T10:00:00"))
        metrics = rt.state("c1").metrics
        assert ("p_alive" in metrics, metrics["purchases"]) == (shown, 1)
