"""Runtime behaviours a user notices, found unchecked by the seed-23 mutation sample (issue 14).

Each test drives a real Runtime of a small playbook (or the shipped CDNOW [clv] one) through
its public API on the virtual clock and reads the actions, the customer view or the stored
state a live run would show.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import sopkit

ROOT = Path(__file__).parent.parent

REMINDERS = """\
[playbook]
name = "reminders"
timezone = "Asia/Shanghai"
day_starts = "09:00"

[events.visit]
[events.complaint]

[tags.complained]

[channels.sms]
type = "sms"

[templates.sale]
text = "{{ customer_id }}：促销最后一天"

[templates.survey]
text = "{{ customer_id }}：请评价本次服务"

[[rules]]
name = "complaint_tag"
on = "complaint"
actions = [{ type = "tag", tag = "complained" }]

[[rules]]
name = "sale_reminder"
on = "visit"
delay = "1d"
cancel_if = "today >= 2024-05-02"
actions = [{ type = "send", channel = "sms", template = "sale" }]

[[rules]]
name = "survey"
on = "visit"
delay = "2d"
cancel_if = '"complained" in tags'
actions = [{ type = "send", channel = "sms", template = "survey" }]
"""


def _reminders(tmp_path: Path) -> sopkit.Runtime:
    path = tmp_path / "reminders.toml"
    path.write_text(REMINDERS, encoding="utf-8")
    return sopkit.Runtime(sopkit.load_playbook(path), engine="native")


def _visit(customer: str, ts: str) -> dict[str, Any]:
    return {"customer_id": customer, "type": "visit", "ts": ts}


def test_a_reminder_falling_due_as_its_cancel_if_turns_true_is_cancelled(tmp_path: Path) -> None:
    """The sale ends 2 May: a reminder due at that day's start is cancelled; due 1 May, it goes."""
    rt = _reminders(tmp_path)
    actions = [*rt.ingest(_visit("early", "2024-04-30T09:00:00")),
               *rt.ingest(_visit("late", "2024-05-01T09:00:00")),
               *rt.advance("2024-05-02T09:00:00")]
    reminders = [(a.time, a.customer_id, a.status) for a in actions if a.rule == "sale_reminder"]
    assert reminders == [("2024-05-01T09:00:00+08:00", "early", "planned"),
                         ("2024-05-02T09:00:00+08:00", "late", "cancelled")]
    assert rt.state("late").pending == 1  # only its survey is left


def test_a_delay_whose_cancel_if_holds_when_it_fires_is_cancelled_at_once(tmp_path: Path) -> None:
    """A customer who complained before visiting: the survey is cancelled with the visit itself."""
    rt = _reminders(tmp_path)
    rt.ingest({"customer_id": "c1", "type": "complaint", "ts": "2024-05-01T10:00:00"})
    out = rt.ingest(_visit("c1", "2024-05-01T11:00:00"))
    assert [(a.time, a.rule, a.status) for a in out] == [
        ("2024-05-01T11:00:00+08:00", "survey", "cancelled")]
    assert rt.state("c1").pending == 1  # the sale reminder only


def _cdnow_clv(lines: int, until: str) -> sopkit.Runtime:
    """The shipped [clv] playbook (refits every 30d) after the first CDNOW lines, advanced."""
    with gzip.open(ROOT / "data/cdnow/events.jsonl.gz", "rt", encoding="utf-8") as f:
        events = [json.loads(line) for _, line in zip(range(lines), f, strict=False)]
    rt = sopkit.Runtime(sopkit.load_playbook(ROOT / "tests/data/clv/cdnow_clv.toml"),
                        engine="native")
    for event in sorted(events, key=lambda e: e["ts"]):
        rt.ingest(event)
    rt.advance(until)
    return rt


def test_the_first_clv_refit_gives_every_buyer_their_facts() -> None:
    """After the refit of 22 January 1997 each buyer so far has p_alive and the other facts."""
    rt = _cdnow_clv(2000, "1997-01-23")
    buyers = sorted(rt.customer_ids())
    assert len(buyers) > 1000
    for cid in buyers:
        facts = rt.state(cid).metrics
        assert 0 < facts["p_alive"] <= 1, cid
        assert 0 <= facts["p_no_purchase"] < 1, cid
        assert facts["expected_purchases"] > 0 and facts["expected_spend"] > 0, cid


def test_a_run_restored_after_a_clv_refit_still_refits_on_schedule() -> None:
    """Stopped after one refit and restored, the run refits 30 days later as if never stopped."""
    first = _cdnow_clv(2000, "1997-01-23")
    second = sopkit.Runtime(sopkit.load_playbook(ROOT / "tests/data/clv/cdnow_clv.toml"),
                            engine="native")
    ids = sorted(first.customer_ids())
    second.restore(first.dump_clock(), [(cid, first.dump_customer(cid)) for cid in ids])
    before = {cid: first.state(cid).metrics["expected_purchases"] for cid in ids}
    first.advance("1997-02-23")
    second.advance("1997-02-23")
    after = {cid: first.state(cid).metrics["expected_purchases"] for cid in ids}
    assert after != before  # the second refit (and the time since) moved the facts
    assert {cid: second.state(cid).metrics["expected_purchases"] for cid in ids} == after
    assert second.dump_clock() == first.dump_clock()


def test_profiles_imported_before_the_first_event_are_exported_once(tmp_path: Path) -> None:
    """Profiles imported before the clock starts: later events export only their own customer."""
    rt = _reminders(tmp_path)
    for cid in ("a", "b", "c"):
        rt.add_profile({"customer_id": cid})
    rt.ingest({"customer_id": "a", "type": "complaint", "ts": "2024-05-01T10:00:00"})
    assert [e.customer_id for e in rt.export_changed()] == ["a", "b", "c"]
    rt.ingest({"customer_id": "b", "type": "complaint", "ts": "2024-05-01T11:00:00"})
    assert [e.customer_id for e in rt.export_changed()] == ["b"]
    rt.advance("2024-05-01T12:00:00")
    assert rt.export_changed() == []
