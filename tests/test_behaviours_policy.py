"""Policy behaviours a user notices that the older tests left unchecked (issue 14).

Each test drives a real Runtime (or a simulation) of a small playbook on the virtual clock and
reads the action records, the summary or the state size a live run would show.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import sopkit
from sopkit import Action

HEAD = """\
[playbook]
name = "p"
timezone = "Asia/Shanghai"
day_starts = "09:00"

[events.visit]
[events.buy]
[events.call_me]

[channels.sms]
type = "sms"

[channels.wecom]
type = "wecom"

[templates.t]
text = "{{ customer_id }}，您好"

[[rules]]
name = "sms_on_visit"
on = "visit"
actions = [{ type = "send", channel = "sms", template = "t" }]

[[rules]]
name = "wecom_on_buy"
on = "buy"
actions = [{ type = "send", channel = "wecom", template = "t" }]

[[rules]]
name = "call_task"
on = "call_me"
actions = [{ type = "task", note = "请联系 {{ customer_id }}" }]
"""

QUIET = 'quiet_hours = { start = "21:00", end = "09:00" }\n'
DAY_AND_WEEK_CAPS = ('[[policy.caps]]\nmax = 1\nper = "1d"\n'
                     '[[policy.caps]]\nmax = 5\nper = "7d"\n')


def playbook(tmp_path: Path, policy: str) -> Path:
    """The test playbook with this `[policy]` text, written to tmp_path/p.toml."""
    path = tmp_path / "p.toml"
    path.write_text(HEAD + "\n[policy]\n" + policy, encoding="utf-8")
    return path


def runtime(tmp_path: Path, policy: str) -> sopkit.Runtime:
    """A native Runtime of the test playbook with this `[policy]`."""
    return sopkit.Runtime(sopkit.load_playbook(playbook(tmp_path, policy)), engine="native")


def ev(rt: sopkit.Runtime, customer: str, etype: str, ts: str, **fields: Any) -> list[Action]:
    return rt.ingest({"customer_id": customer, "type": etype, "ts": ts, **fields})


def at(day: int, hour: int) -> str:
    """The local time `hour`:00 on the `day`-th day after 1 May 2024, as ISO text."""
    return (dt.datetime(2024, 5, 1, hour) + dt.timedelta(days=day)).isoformat()


def one(actions: list[Action], kind: str = "send") -> Action:
    (found,) = [a for a in actions if a.action == kind]
    return found


# ---- caps: the window boundary with more than one cap ---------------------------------------

def test_two_caps_allow_deferred_sends_exactly_a_day_apart(tmp_path: Path) -> None:
    """With 1 per 1d and 5 per 7d, nightly sends deferred to 09:00 (24 h apart) all go out."""
    rt = runtime(tmp_path, QUIET + DAY_AND_WEEK_CAPS)
    nights = [one(ev(rt, "c1", "visit", f"2024-05-{day:02d}T22:00:00")) for day in range(1, 6)]
    assert [(a.status, a.details["deliver_at"]) for a in nights] == [
        ("deferred", f"2024-05-{day:02d}T09:00:00+08:00") for day in range(2, 7)]


def test_two_caps_the_weekly_cap_stops_the_sixth_and_frees_a_week_later(tmp_path: Path) -> None:
    """The 6th and 7th nightly sends hit 5 per 7d; the 8th lands 7 days after the 1st: sent."""
    rt = runtime(tmp_path, QUIET + DAY_AND_WEEK_CAPS)
    for day in range(1, 6):
        assert one(ev(rt, "c1", "visit", f"2024-05-{day:02d}T22:00:00")).status == "deferred"
    sixth = one(ev(rt, "c1", "visit", "2024-05-06T22:00:00"))   # would land 7 May 09:00
    seventh = one(ev(rt, "c1", "visit", "2024-05-07T22:00:00"))  # would land 8 May 09:00
    assert (sixth.status, sixth.details["reason"]) == (
        "suppressed", "cap: 5 per 7d on all channels reached")
    assert seventh.status == "suppressed"
    # 9 May 09:00 is exactly 7 days after the first delivery (2 May 09:00): it left the window
    eighth = one(ev(rt, "c1", "visit", "2024-05-08T22:00:00"))
    assert (eighth.status, eighth.details["deliver_at"]) == ("deferred",
                                                             "2024-05-09T09:00:00+08:00")


def test_two_caps_the_daily_cap_still_stops_a_second_send_the_same_day(tmp_path: Path) -> None:
    """Under 1 per 1d and 5 per 7d, a daytime send 23 h 59 min after a delivery is capped."""
    rt = runtime(tmp_path, QUIET + DAY_AND_WEEK_CAPS)
    assert one(ev(rt, "c1", "visit", "2024-05-01T22:00:00")).status == "deferred"
    early = one(ev(rt, "c1", "visit", "2024-05-03T08:59:00"))  # deferred to 09:00: 24 h later
    assert early.status == "deferred"
    again = one(ev(rt, "c1", "visit", "2024-05-04T08:58:00"))  # 23 h 58 min after: 1 per 1d
    assert again.status == "deferred"  # deferred to 09:00 on 4 May: exactly 24 h, allowed
    late = one(ev(rt, "c1", "visit", "2024-05-04T10:00:00"))
    assert (late.status, late.details["reason"]) == (
        "suppressed", "cap: 1 per 1d on all channels reached")


# ---- consent: opt_in to "all" --------------------------------------------------------------

def test_opt_in_to_all_then_a_new_opt_out_works(tmp_path: Path) -> None:
    """After opt_in "all" clears every opt-out, a later opt_out of one channel stops only it."""
    rt = runtime(tmp_path, "")
    ev(rt, "c1", "opt_out", "2024-05-01T10:00:00", channel="sms|wecom")
    assert one(ev(rt, "c1", "buy", "2024-05-01T10:30:00")).status == "suppressed"
    ev(rt, "c1", "opt_in", "2024-05-01T11:00:00", channel="all")
    assert one(ev(rt, "c1", "visit", "2024-05-01T11:30:00")).status == "planned"
    assert one(ev(rt, "c1", "buy", "2024-05-01T11:31:00")).status == "planned"
    ev(rt, "c1", "opt_out", "2024-05-01T12:00:00", channel="wecom")  # the run goes on
    buy = one(ev(rt, "c1", "buy", "2024-05-01T12:30:00"))
    assert (buy.status, buy.details["reason"]) == ("suppressed", "opt-out: wecom")
    assert one(ev(rt, "c1", "visit", "2024-05-01T12:31:00")).status == "planned"


def test_opt_in_to_all_after_opt_out_of_all_survives_a_restart(tmp_path: Path) -> None:
    """opt_out all, opt_in all, then the state stored and read back takes a new opt_out of sms."""
    first = runtime(tmp_path, "")
    ev(first, "c1", "opt_out", "2024-05-01T10:00:00")  # no channel: every channel
    ev(first, "c1", "opt_in", "2024-05-01T11:00:00", channel="all")
    rt = runtime(tmp_path, "")
    rt.restore(first.dump_clock(), [("c1", first.dump_customer("c1"))])
    ev(rt, "c1", "opt_out", "2024-05-01T12:00:00", channel="sms")
    sms = one(ev(rt, "c1", "visit", "2024-05-01T12:30:00"))
    assert (sms.status, sms.details["reason"]) == ("suppressed", "opt-out: sms")
    assert one(ev(rt, "c1", "buy", "2024-05-01T12:31:00")).status == "planned"


# ---- task capacity: summary reasons and bounded bookkeeping ---------------------------------

def test_summary_groups_task_capacity_deferrals_across_staff(tmp_path: Path) -> None:
    """The summary counts "task capacity 1/day reached" once per task, whoever the assignee."""
    path = playbook(tmp_path, "task_capacity = 1\n")
    events = tmp_path / "events.jsonl"
    rows = [{"customer_id": f"c{i}", "type": "call_me", "ts": f"2024-05-01T1{i}:00:00"}
            for i in range(5)]
    events.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    profiles = tmp_path / "profiles.jsonl"
    owners = ["staff-07", "staff-07", "staff-07", "staff-09", "staff-09"]
    profiles.write_text("".join(json.dumps({"customer_id": f"c{i}", "owner": owner}) + "\n"
                                for i, owner in enumerate(owners)), encoding="utf-8")
    out = tmp_path / "actions.jsonl"
    with out.open("w", encoding="utf-8") as handle:
        summary = sopkit.simulate(sopkit.load_playbook(path), events, profiles=profiles,
                                  out=handle)
    assert summary.policy["deferred"] == {"task capacity 1/day reached": 3}
    assert summary.by_rule["call_task"] == {"planned": 2, "deferred": 3}
    reasons = sorted(json.loads(line).get("reason", "")
                     for line in out.read_text(encoding="utf-8").splitlines())
    assert reasons == ["", "", "task capacity 1/day reached for staff-07",
                       "task capacity 1/day reached for staff-07",
                       "task capacity 1/day reached for staff-09"]


def test_tasks_without_task_capacity_keep_no_per_day_counts(tmp_path: Path) -> None:
    """Without `task_capacity`, a year of daily tasks leaves the shared policy state empty."""
    rt = runtime(tmp_path, "")
    rt.add_profile({"customer_id": "c1", "owner": "staff-07"})
    for day in range(365):
        task = one(ev(rt, "c1", "call_me", at(day, 10)), "task")
        assert task.status == "planned"
    assert rt.policy_state.tasks == {}
    assert len(rt.dump_clock()) < 200


def test_task_capacity_bookkeeping_stays_small_over_a_year(tmp_path: Path) -> None:
    """With `task_capacity`, a year of daily tasks for 3 staff keeps only the current days."""
    rt = runtime(tmp_path, "task_capacity = 2\n")
    for i in range(3):
        rt.add_profile({"customer_id": f"c{i}", "owner": f"staff-{i}"})
    for day in range(365):
        for i in range(3):
            ev(rt, f"c{i}", "call_me", at(day, 10 + i))
    kept = sum(len(days) for days in rt.policy_state.tasks.values())
    assert kept <= 3, rt.policy_state.tasks


# ---- quiet hours that do not start or end on the hour ---------------------------------------

def test_quiet_hours_ending_off_the_hour_defer_to_that_minute(tmp_path: Path) -> None:
    """Quiet 22:05-07:55: 22:10 and 07:50 wait until 07:55; 22:00 and 07:56 are sent at once."""
    rt = runtime(tmp_path, 'quiet_hours = { start = "22:05", end = "07:55" }\n')
    before = one(ev(rt, "c3", "visit", "2024-05-01T22:00:00"))
    night = one(ev(rt, "c1", "visit", "2024-05-01T22:10:00"))
    dawn = one(ev(rt, "c2", "visit", "2024-05-02T07:50:00"))
    after = one(ev(rt, "c4", "visit", "2024-05-02T07:56:00"))
    assert [(a.status, a.details["deliver_at"]) for a in (night, dawn)] == [
        ("deferred", "2024-05-02T07:55:00+08:00")] * 2
    assert night.details["reason"] == "quiet hours 22:05-07:55"
    assert (before.status, after.status) == ("planned", "planned")
