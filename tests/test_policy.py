"""The policy pipeline: consent, experiment holdout, quiet hours, caps and task capacity.

Each test writes a small playbook with a `[policy]` table, drives a real Runtime (or a
simulation) on the virtual clock, and reads the action records a user would read.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import sopkit
from sopkit import Action
from sopkit._cli.app import app
from sopkit._runtime.policy import PolicyState, bucket

ROOT = Path(__file__).resolve().parent.parent

HEAD = """\
[playbook]
name = "p"
timezone = "{timezone}"
day_starts = "09:00"

[profile]
opt_out = "list"

[events.visit]
[events.buy]
[events.call_me]

[tags."来过"]

[channels.sms]
type = "sms"

[channels.wecom]
type = "wecom"

[channels.crm]
type = "webhook"

[templates.t]
text = "{{{{ customer_id }}}}，您好"

[[rules]]
name = "sms_on_visit"
on = "visit"
actions = [{{ type = "send", channel = "sms", template = "t" }}]

[[rules]]
name = "wecom_on_buy"
on = "buy"
actions = [
  {{ type = "send", channel = "wecom", template = "t" }},
  {{ type = "webhook", channel = "crm", payload = {{ who = "{{{{ customer_id }}}}" }} }},
]

[[rules]]
name = "call_task"
on = "call_me"
actions = [{{ type = "task", note = "请联系 {{{{ customer_id }}}}" }}]
"""


def runtime(tmp_path: Path, policy: str, *, timezone: str = "Asia/Shanghai",
            extra: str = "", engine: str = "native") -> sopkit.Runtime:
    """A Runtime of the test playbook with this `[policy]` text (and extra tables) added."""
    path = tmp_path / "p.toml"
    path.write_text(HEAD.format(timezone=timezone) + extra + "\n[policy]\n" + policy,
                    encoding="utf-8")
    return sopkit.Runtime(sopkit.load_playbook(path), engine=engine)


def ev(rt: sopkit.Runtime, customer: str, etype: str, ts: str, **fields: Any) -> list[Action]:
    return rt.ingest({"customer_id": customer, "type": etype, "ts": ts, **fields})


def one(actions: list[Action], kind: str = "send") -> Action:
    (found,) = [a for a in actions if a.action == kind]
    return found


QUIET = 'quiet_hours = { start = "21:00", end = "09:00" }\n'


# ---- quiet hours -------------------------------------------------------------------------

def test_quiet_hours_defer_across_midnight_to_the_end(tmp_path: Path) -> None:
    """A send at 22:30 waits until 09:00 the next morning; one at 08:59 until 09:00 that day."""
    rt = runtime(tmp_path, QUIET)
    late = one(ev(rt, "c1", "visit", "2024-05-01T22:30:00"))
    assert late.status == "deferred"
    assert late.time == "2024-05-01T22:30:00+08:00"
    assert late.details["deliver_at"] == "2024-05-02T09:00:00+08:00"
    assert late.details["reason"] == "quiet hours 21:00-09:00"
    assert late.deliver_ts == rt.calendar.parse("2024-05-02T09:00:00")
    early = one(ev(rt, "c2", "visit", "2024-05-02T08:59:00"))
    assert (early.status, early.details["deliver_at"]) == ("deferred", "2024-05-02T09:00:00+08:00")
    day = one(ev(rt, "c3", "visit", "2024-05-02T09:00:00"))
    assert day.status == "planned" and "deliver_at" not in day.details
    assert day.deliver_ts == day.ts


def test_quiet_hours_are_in_the_playbook_timezone(tmp_path: Path) -> None:
    """An event stamped in UTC is judged by the playbook's local time (13:30Z is 21:30 +08)."""
    rt = runtime(tmp_path, QUIET)
    before = one(ev(rt, "c1", "visit", "2024-05-01T12:59:00Z"))  # 20:59 in Shanghai
    inside = one(ev(rt, "c2", "visit", "2024-05-01T13:30:00Z"))  # 21:30 in Shanghai
    assert before.status == "planned"
    assert inside.details["deliver_at"] == "2024-05-02T09:00:00+08:00"


def test_quiet_hours_end_follows_daylight_saving(tmp_path: Path) -> None:
    """In Europe/Berlin the night clocks go forward, a 22:00 send still waits for 09:00 local."""
    rt = runtime(tmp_path, QUIET, timezone="Europe/Berlin")
    deferred = one(ev(rt, "c1", "visit", "2024-03-30T22:00:00"))
    assert deferred.details["deliver_at"] == "2024-03-31T09:00:00+02:00"
    assert deferred.deliver_ts - deferred.ts == 10 * 3600  # 11 wall-clock hours, one skipped


def test_daytime_quiet_hours_do_not_wrap(tmp_path: Path) -> None:
    """Quiet hours 12:00-14:00 defer a 13:00 send to 14:00 and leave 11:00 and 14:00 alone."""
    rt = runtime(tmp_path, 'quiet_hours = { start = "12:00", end = "14:00" }\n')
    assert one(ev(rt, "c1", "visit", "2024-05-01T11:00:00")).status == "planned"
    lunch = one(ev(rt, "c2", "visit", "2024-05-01T13:00:00"))
    assert lunch.details["deliver_at"] == "2024-05-01T14:00:00+08:00"
    assert one(ev(rt, "c3", "visit", "2024-05-01T14:00:00")).status == "planned"


def test_quiet_hours_defer_webhooks_but_not_tasks(tmp_path: Path) -> None:
    """At 23:00 the wecom message and the webhook wait for 09:00; a staff task does not."""
    rt = runtime(tmp_path, QUIET)
    out = ev(rt, "c1", "buy", "2024-05-01T23:00:00")
    assert [a.status for a in out] == ["deferred", "deferred"]
    task = one(ev(rt, "c1", "call_me", "2024-05-01T23:30:00"), "task")
    assert task.status == "planned"


# ---- caps ----------------------------------------------------------------------------------

CAP_2_7D = '[[policy.caps]]\nmax = 2\nper = "7d"\n'


def test_cap_suppresses_the_third_message_and_frees_after_the_window(tmp_path: Path) -> None:
    """With 2 per 7d, the third message in a week is suppressed; 7 days on one is free again."""
    rt = runtime(tmp_path, CAP_2_7D)
    first = one(ev(rt, "c1", "visit", "2024-05-01T10:00:00"))
    second = one(ev(rt, "c1", "visit", "2024-05-02T10:00:00"))
    third = one(ev(rt, "c1", "visit", "2024-05-03T10:00:00"))
    assert (first.status, second.status) == ("planned", "planned")
    assert third.status == "suppressed"
    assert third.details["reason"] == "cap: 2 per 7d on all channels reached"
    # the first left the window exactly 7 days after it; suppressed ones never counted
    freed = one(ev(rt, "c1", "visit", "2024-05-08T10:00:00"))
    again = one(ev(rt, "c1", "visit", "2024-05-08T10:01:00"))
    assert freed.status == "planned"
    assert again.status == "suppressed"
    assert one(ev(rt, "c2", "visit", "2024-05-08T10:02:00")).status == "planned"  # per customer


def test_per_channel_cap_leaves_other_channels_alone(tmp_path: Path) -> None:
    """1 wecom a day suppresses a second wecom message that day, not an sms or the next day's."""
    rt = runtime(tmp_path, '[[policy.caps]]\nmax = 1\nper = "1d"\nchannel = "wecom"\n')
    morning = ev(rt, "c1", "buy", "2024-05-01T10:00:00")
    afternoon = ev(rt, "c1", "buy", "2024-05-01T15:00:00")
    assert one(morning).status == "planned"
    assert one(afternoon).status == "suppressed"
    assert one(afternoon).details["reason"] == "cap: 1 per 1d on wecom reached"
    assert one(afternoon, "webhook").status == "planned"  # the crm channel is not capped
    assert one(ev(rt, "c1", "visit", "2024-05-01T15:30:00")).status == "planned"
    assert one(ev(rt, "c1", "buy", "2024-05-02T10:00:00")).status == "planned"


def test_caps_count_deferred_messages_at_their_delivery_time(tmp_path: Path) -> None:
    """Two sends in one quiet night would both land at 09:00: with 1 per 1d the second is capped."""
    rt = runtime(tmp_path, QUIET + '[[policy.caps]]\nmax = 1\nper = "1d"\n')
    first = one(ev(rt, "c1", "visit", "2024-05-01T22:00:00"))
    second = one(ev(rt, "c1", "visit", "2024-05-01T23:00:00"))
    assert first.status == "deferred"
    assert second.status == "suppressed"
    assert second.details["reason"] == "cap: 1 per 1d on all channels reached"
    # the window is counted back from the delivery time: a send at 21:30 the next evening
    # lands at 09:00, exactly 24 hours after the first delivery, so it is allowed
    evening = one(ev(rt, "c1", "visit", "2024-05-02T21:30:00"))
    assert (evening.status, evening.details["deliver_at"]) == ("deferred",
                                                               "2024-05-03T09:00:00+08:00")
    assert one(ev(rt, "c1", "visit", "2024-05-03T08:00:00")).status == "suppressed"


# ---- consent -------------------------------------------------------------------------------

CONSENT = 'consent_attribute = "opt_out"\n'


def test_opt_out_attribute_suppresses_that_channel_only(tmp_path: Path) -> None:
    """A profile opted out of sms gets no sms but still gets wecom; "all" stops every message."""
    rt = runtime(tmp_path, CONSENT)
    rt.add_profile({"customer_id": "c1", "opt_out": "sms"})
    rt.add_profile({"customer_id": "c2", "opt_out": ["all"]})
    sms = one(ev(rt, "c1", "visit", "2024-05-01T10:00:00"))
    assert (sms.status, sms.details["reason"]) == ("suppressed", "opt-out: sms")
    assert sms.details["message"] == "c1，您好"  # what would have gone out, for review
    assert one(ev(rt, "c1", "buy", "2024-05-01T10:01:00")).status == "planned"
    blocked = ev(rt, "c2", "buy", "2024-05-01T10:02:00")
    assert [(a.status, a.details["reason"]) for a in blocked] == [
        ("suppressed", "opt-out: all"), ("suppressed", "opt-out: all")]
    task = one(ev(rt, "c2", "call_me", "2024-05-01T10:03:00"), "task")
    assert task.status == "planned"  # an opt-out stops messages, not the staff's follow-up


def test_opt_out_and_opt_in_events(tmp_path: Path) -> None:
    """opt_out / opt_in events change what is sent from their time on, and the profile shows it."""
    rt = runtime(tmp_path, CONSENT)
    assert one(ev(rt, "c1", "visit", "2024-05-01T10:00:00")).status == "planned"
    ev(rt, "c1", "opt_out", "2024-05-01T11:00:00", channel="sms")
    assert rt.state("c1").profile["opt_out"] == frozenset({"sms"})
    assert one(ev(rt, "c1", "visit", "2024-05-01T12:00:00")).details["reason"] == "opt-out: sms"
    ev(rt, "c1", "opt_in", "2024-05-01T13:00:00", channel="sms")
    assert one(ev(rt, "c1", "visit", "2024-05-01T14:00:00")).status == "planned"
    ev(rt, "c1", "opt_out", "2024-05-01T15:00:00")  # no channel: every channel
    assert one(ev(rt, "c1", "buy", "2024-05-01T16:00:00")).details["reason"] == "opt-out: all"
    ev(rt, "c1", "opt_in", "2024-05-01T17:00:00", channel="wecom")  # all but wecom stay off
    assert rt.state("c1").profile["opt_out"] == frozenset({"sms", "crm"})
    after = ev(rt, "c1", "buy", "2024-05-01T18:00:00")
    assert [a.status for a in after] == ["planned", "suppressed"]
    assert one(ev(rt, "c1", "visit", "2024-05-01T19:00:00")).status == "suppressed"
    rt.add_profile({"customer_id": "c1", "opt_out": ""})  # a profile sync: latest word wins
    assert one(ev(rt, "c1", "visit", "2024-05-01T20:00:00")).status == "planned"


def test_opt_out_events_work_without_a_consent_attribute(tmp_path: Path) -> None:
    """An opt-out is honoured even when the playbook declares no consent attribute."""
    rt = runtime(tmp_path, "")
    ev(rt, "c1", "opt_out", "2024-05-01T09:00:00", channel="sms|wecom")
    assert one(ev(rt, "c1", "visit", "2024-05-01T10:00:00")).status == "suppressed"
    assert "opt_out" not in rt.state("c1").profile


def test_opt_in_without_a_channel_is_rejected(tmp_path: Path) -> None:
    """An opt_in must say what it re-enables; without `channel` it is a clear EventError."""
    rt = runtime(tmp_path, CONSENT)
    with pytest.raises(sopkit.EventError, match="opt_in event needs 'channel'"):
        ev(rt, "c1", "opt_in", "2024-05-01T10:00:00")


# ---- experiments ---------------------------------------------------------------------------

EXPERIMENT = """
[experiments.recall_test]
holdout = 0.1

[[rules]]
name = "recall"
on = "visit"
experiment = "recall_test"
actions = [
  { type = "tag", tag = "来过" },
  { type = "send", channel = "wecom", template = "t" },
  { type = "task", note = "回访 {{ customer_id }}" },
]
"""


def test_bucket_values_are_pinned() -> None:
    """The bucket is SHA-256 based: these values hold on every machine and Python version."""
    assert bucket("recall_test", "c1") == 0.891391902476107
    assert bucket("recall_test", "c2") == 0.3031130895156112
    assert bucket("recall_test", "客户-7") == 0.4993261149847259
    assert bucket("other", "c1") == 0.6893479816708292


def test_holdout_withholds_messages_and_tasks_but_tags_change(tmp_path: Path) -> None:
    """A held-out customer gets the tag, but the message and the task are recorded as holdout."""
    rt = runtime(tmp_path, "", extra=EXPERIMENT)
    held = ev(rt, "c4", "visit", "2024-05-01T10:00:00")  # bucket below 0.1
    treated = ev(rt, "c1", "visit", "2024-05-01T10:00:00")  # bucket 0.89
    recall = [a for a in held if a.rule == "recall"]
    assert [(a.action, a.status) for a in recall] == [
        ("tag", "planned"), ("send", "holdout"), ("task", "holdout")]
    assert {a.details.get("reason") for a in recall[1:]} == {"holdout: experiment recall_test"}
    assert "来过" in rt.state("c4").tags
    assert [a.status for a in treated if a.rule == "recall"] == ["planned"] * 3


HOLDOUT_SCRIPT = """
import sys
import sopkit
rt = sopkit.Runtime(sopkit.load_playbook(sys.argv[1]))
held = []
for i in range(2000):
    for a in rt.ingest({"customer_id": f"c{i}", "type": "visit", "ts": "2024-05-01T10:00:00"}):
        if a.status == "holdout" and a.action == "send":
            held.append(a.customer_id)
print(",".join(held))
"""


def test_holdout_share_is_close_and_stable_across_runs(tmp_path: Path) -> None:
    """Over 2000 customers about 10% are held out, the same ones in two separate processes."""
    runtime(tmp_path, "", extra=EXPERIMENT)  # writes p.toml
    runs = []
    for seed in ("1", "2"):  # different str hash seeds: the bucket does not use hash()
        env = {**os.environ, "PYTHONHASHSEED": seed}
        proc = subprocess.run([sys.executable, "-c", HOLDOUT_SCRIPT, str(tmp_path / "p.toml")],
                              capture_output=True, text=True, env=env, check=True, cwd=ROOT)
        runs.append(proc.stdout.strip().split(","))
    assert runs[0] == runs[1]
    assert 0.085 <= len(runs[0]) / 2000 <= 0.115
    assert "c4" in runs[0] and "c1" not in runs[0]


# ---- task capacity -------------------------------------------------------------------------

def test_task_capacity_overflow_moves_to_the_next_days(tmp_path: Path) -> None:
    """With 2 tasks a day, a staff member's 3rd and 4th go to tomorrow 09:00, the 5th after."""
    rt = runtime(tmp_path, QUIET + "task_capacity = 2\n")
    for i in range(6):
        rt.add_profile({"customer_id": f"c{i}", "owner": "staff-07" if i < 5 else "staff-09"})
    tasks = [one(ev(rt, f"c{i}", "call_me", f"2024-05-01T23:0{i}:00"), "task") for i in range(6)]
    assert [t.status for t in tasks] == ["planned", "planned", "deferred", "deferred",
                                         "deferred", "planned"]
    assert [t.details.get("deliver_at") for t in tasks[2:5]] == [
        "2024-05-02T09:00:00+08:00", "2024-05-02T09:00:00+08:00", "2024-05-03T09:00:00+08:00"]
    assert tasks[2].details["reason"] == "task capacity 2/day reached for staff-07"
    assert tasks[2].details["due"] == "2024-05-03T09:00:00+08:00"  # due moves with it: 1d
    assert tasks[0].details["due"] == "2024-05-02T23:00:00+08:00"
    # the next day's own tasks find its two places taken by the overflow
    nxt = one(ev(rt, "c0", "call_me", "2024-05-02T10:00:00"), "task")
    assert nxt.details["deliver_at"] == "2024-05-03T09:00:00+08:00"
    later = one(ev(rt, "c1", "call_me", "2024-05-02T11:00:00"), "task")
    assert later.details["deliver_at"] == "2024-05-04T09:00:00+08:00"


def test_tasks_without_an_assignee_are_not_limited(tmp_path: Path) -> None:
    """A task nobody owns is in no one's queue: the capacity does not defer it."""
    rt = runtime(tmp_path, "task_capacity = 1\n")
    tasks = [one(ev(rt, f"c{i}", "call_me", "2024-05-01T10:00:00"), "task") for i in range(3)]
    assert [t.status for t in tasks] == ["planned"] * 3


# ---- state -----------------------------------------------------------------------------------

def test_policy_state_is_bounded_and_survives_the_store(tmp_path: Path) -> None:
    """Old deliveries and past task days are pruned; customer and shared policy state come back
    intact from the stored JSON."""
    rt = runtime(tmp_path, "task_capacity = 1\n" + CAP_2_7D)
    rt.add_profile({"customer_id": "c1", "owner": "staff-07"})
    for day in range(1, 29):
        ev(rt, "c1", "visit", f"2024-05-{day:02d}T10:00:00")
        ev(rt, "c1", "call_me", f"2024-05-{day:02d}T10:30:00")
    cs = rt.customers["c1"]
    assert len(cs.deliveries) <= 2
    assert all(rt.calendar.format(ts) >= "2024-05-21" for ts, _ in cs.deliveries)
    assert set(rt.policy_state.tasks["staff-07"]) == {rt.calendar.day_index(rt.now_ts or 0)}
    again = runtime(tmp_path, "task_capacity = 1\n" + CAP_2_7D)
    again.restore(rt.dump_clock(), [("c1", rt.dump_customer("c1"))])
    copy = again.customers["c1"]
    assert (copy.deliveries, copy.opt_out) == (cs.deliveries, cs.opt_out)
    shared = again.policy_state
    assert isinstance(shared, PolicyState) and shared.tasks == rt.policy_state.tasks


def test_engines_agree_under_policies(tmp_path: Path) -> None:
    """The durable and native engines make the same policy decisions on the same history."""
    streams = []
    for engine in ("native", "durable"):
        rt = runtime(tmp_path, QUIET + CONSENT + "task_capacity = 1\n" + CAP_2_7D,
                     extra=EXPERIMENT, engine=engine)
        out: list[Action] = []
        start = dt.datetime(2024, 5, 1, 8)
        for i in range(60):
            customer = f"c{i % 7}"
            kind = ("visit", "buy", "call_me", "opt_out", "opt_in")[i % 5]
            fields = {"channel": "sms"} if kind.startswith("opt") else {}
            when = start + dt.timedelta(minutes=97 * i)
            out += ev(rt, customer, kind, when.isoformat(), **fields)
        streams.append([json.dumps(a.to_json(), ensure_ascii=False) for a in out])
    assert streams[0] == streams[1]
    assert {json.loads(s)["status"] for s in streams[0]} >= {"planned", "deferred",
                                                             "suppressed", "holdout"}


# ---- records and summary ---------------------------------------------------------------------

EVENTS = [
    {"customer_id": "c1", "type": "visit", "ts": "2024-05-01T22:00:00"},   # deferred
    {"customer_id": "c1", "type": "visit", "ts": "2024-05-02T10:00:00"},   # planned
    {"customer_id": "c1", "type": "visit", "ts": "2024-05-02T11:00:00"},   # capped
    {"customer_id": "c4", "type": "visit", "ts": "2024-05-02T12:00:00"},   # opted out
    {"customer_id": "c4", "type": "buy", "ts": "2024-05-02T12:30:00"},     # held out
]


def _simulate(tmp_path: Path) -> tuple[Path, Path]:
    runtime(tmp_path, QUIET + CONSENT + CAP_2_7D, extra=EXPERIMENT.replace(
        'on = "visit"', 'on = "buy"'))
    events = tmp_path / "events.jsonl"
    events.write_text("".join(json.dumps(e) + "\n" for e in EVENTS), encoding="utf-8")
    profiles = tmp_path / "profiles.jsonl"
    profiles.write_text(json.dumps({"customer_id": "c4", "opt_out": "sms"}) + "\n",
                        encoding="utf-8")
    return events, profiles


def test_records_carry_status_reason_and_delivery(tmp_path: Path) -> None:
    """The JSONL records say deferred with deliver_at and reason, or suppressed with reason."""
    events, profiles = _simulate(tmp_path)
    out = tmp_path / "actions.jsonl"
    with out.open("w", encoding="utf-8") as handle:
        sopkit.simulate(sopkit.load_playbook(tmp_path / "p.toml"), events, profiles=profiles,
                        out=handle)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    sms = [r for r in rows if r["rule"] == "sms_on_visit"]
    assert [(r["status"], r.get("reason")) for r in sms] == [
        ("deferred", "quiet hours 21:00-09:00"), ("planned", None),
        ("suppressed", "cap: 2 per 7d on all channels reached"),
        ("suppressed", "opt-out: sms")]
    assert list(sms[0])[-3:] == ["deliver_at", "reason", "facts"]
    assert sms[0]["deliver_at"] == "2024-05-02T09:00:00+08:00"
    held = [r for r in rows if r["rule"] == "recall" and r["status"] == "holdout"]
    assert [r["action"] for r in held] == ["send", "task"]
    assert held[0]["reason"] == "holdout: experiment recall_test"


def test_summary_counts_decisions_by_reason(tmp_path: Path) -> None:
    """The summary counts statuses per rule and decisions per reason; the table shows them."""
    events, profiles = _simulate(tmp_path)
    summary = sopkit.simulate(sopkit.load_playbook(tmp_path / "p.toml"), events,
                              profiles=profiles)
    assert summary.by_rule["sms_on_visit"] == {"deferred": 1, "planned": 1, "suppressed": 2}
    assert summary.by_rule["recall"] == {"holdout": 2, "planned": 1}
    assert summary.policy == {
        "deferred": {"quiet hours 21:00-09:00": 1},
        "suppressed": {"cap: 2 per 7d on all channels reached": 1, "opt-out: sms": 1},
        "holdout": {"holdout: experiment recall_test": 2},
    }
    # the deferred sms is delivered on 2 May, like the planned one
    assert summary.by_day == {"2024-05-02": 5}
    result = CliRunner().invoke(app, ["simulate", str(tmp_path / "p.toml"), "--events",
                                      str(events), "--profiles", str(profiles)])
    assert result.exit_code == 0, result.output
    assert "Policy decisions" in result.output
    assert "quiet hours 21:00-09:00" in result.output and "holdout" in result.output


def test_policy_merges_from_fragments_by_key(tmp_path: Path) -> None:
    """A fragment's [policy] caps combine with the playbook's quiet hours; a clash is an error."""
    (tmp_path / "caps.toml").write_text('[[policy.caps]]\nmax = 1\nper = "1d"\n',
                                        encoding="utf-8")
    text = HEAD.format(timezone="Asia/Shanghai").replace(
        'day_starts = "09:00"\n', 'day_starts = "09:00"\ninclude = ["caps.toml"]\n')
    path = tmp_path / "p.toml"
    path.write_text(text + "\n[policy]\n" + QUIET, encoding="utf-8")
    rt = sopkit.Runtime(sopkit.load_playbook(path))
    assert one(ev(rt, "c1", "visit", "2024-05-01T22:00:00")).status == "deferred"
    assert one(ev(rt, "c1", "visit", "2024-05-01T23:00:00")).status == "suppressed"
    path.write_text(text + "\n[policy]\n" + QUIET + '[[policy.caps]]\nmax = 3\nper = "1d"\n',
                    encoding="utf-8")
    with pytest.raises(sopkit.PlaybookError, match=r"'policy\.caps' is already defined "
                       r"differently in .*caps\.toml"):
        sopkit.load_playbook(path)
