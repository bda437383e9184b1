"""Campaigns (群发): schedules, audiences as of the firing, policy, keys, reach and previews."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import zoneinfo
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import sopkit
from sopkit._cli.app import app
from sopkit._lang.cron import CronError, parse_every, timing
from sopkit._runtime.policy import held_out

PLAYBOOK = '''
[playbook]
name = "shop"
version = "1"
timezone = "{tz}"
day_starts = "09:00"

[profile]
name = "string"
gender = "string"
opt_out = "list"

[events.purchase]
amount = "decimal"

[metrics]
days_since_purchase = {{ kind = "days_since", event = "purchase" }}
purchases_60d = {{ kind = "count", event = "purchase", window = "60d" }}

[tags."奶茶爱好者"]
when = "purchases_60d >= 2"

[tags."双十二已发"]

[channels.note]
type = "jsonl"
path = "{outbox}"

[templates.d12]
text = "{{{{ profile.name | default(\\"您好\\") }}}}，双十二券 {{{{ params.coupon }}}}"

[templates.d12_gift]
text = "{{{{ profile.name }}}}，双十二到店送 {{{{ params.gift }}}}"

[templates.hello]
text = "{{{{ profile.name }}}}，本周好"

[policy]
consent_attribute = "opt_out"
{policy}

[experiments.d12]
holdout = {holdout}
{exp_variants}

{rules}

[[campaigns]]
name = "double12"
at = "{at}"
audience = '"奶茶爱好者" in tags and days_since_purchase <= 60'
experiment = "d12"
actions = [
  {{ type = "send", channel = "note", template = "d12", params = {{ coupon = "D12" }}{sv} }},
  {{ type = "tag", tag = "双十二已发" }},
]

[[campaigns]]
name = "weekly"
every = "{every}"
until = "{until}"
audience = 'profile.gender == "female"'
{weekly}
actions = [{{ type = "task", note = "联系 {{{{ profile.name }}}}" }}]
'''


def _playbook(tmp: Path, *, tz: str = "Asia/Shanghai", at: str = "2024-12-12T10:00",
              every: str = "weekly mon 09:00", until: str = "2024-12-31",
              holdout: float = 0.0, variants: bool = False, weekly: str = "",
              policy: str = "", rules: str = "") -> Path:
    """The test playbook; `variants` gives experiment d12 a coupon and a gift variant (the
    gift with its own template), `weekly` adds lines to the weekly campaign."""
    path = tmp / "shop.toml"
    path.write_text(PLAYBOOK.format(
        tz=tz, at=at, every=every, until=until, holdout=holdout, weekly=weekly, policy=policy,
        rules=rules, outbox=(tmp / "note.jsonl").as_posix(),
        exp_variants='variants = ["coupon", "gift"]' if variants else "",
        sv=(', variants = { gift = { template = "d12_gift", params = '
            '{ gift = "帆布袋" } } }') if variants else ""), encoding="utf-8")
    return path


def _runtime(path: Path, engine: str = "native") -> sopkit.Runtime:
    return sopkit.Runtime(sopkit.load_playbook(path), engine=engine)


def _people(rt: sopkit.Runtime, n: int) -> None:
    for i in range(n):
        rt.add_profile({"customer_id": f"c{i:04d}", "name": f"客户{i}",
                        "gender": "female" if i % 2 else "male", "owner": f"s{i % 3}"})


def _buy(rt: sopkit.Runtime, who: range, ts: str) -> list[sopkit.Action]:
    out: list[sopkit.Action] = []
    for i in who:
        out += rt.ingest({"customer_id": f"c{i:04d}", "type": "purchase", "ts": ts,
                          "amount": "3"})
    return out


def _of(actions: list[sopkit.Action], campaign: str, kind: str | None = None
        ) -> list[sopkit.Action]:
    return [a for a in actions if a.rule == campaign and (kind is None or a.action == kind)]


# ---- schedules ---------------------------------------------------------------------------


def _fires(every: str, tz: str, start: str, count: int) -> list[str]:
    zone = zoneinfo.ZoneInfo(tz)
    when = int(dt.datetime.fromisoformat(start).replace(tzinfo=zone).timestamp())
    plan = timing(tz, None, every, None)
    out = []
    found = plan.first_from(when)
    while found is not None and len(out) < count:
        out.append(dt.datetime.fromtimestamp(found, zone).isoformat())
        found = plan.next_after(found)
    return out


def test_weekly_firings_are_at_the_local_time_in_a_zone_without_dst() -> None:
    """`weekly mon 09:00` in Shanghai fires each Monday at 09:00 +08:00."""
    assert _fires("weekly mon 09:00", "Asia/Shanghai", "2024-12-01T00:00", 3) == [
        "2024-12-02T09:00:00+08:00", "2024-12-09T09:00:00+08:00", "2024-12-16T09:00:00+08:00"]


def test_weekly_firings_stay_at_the_local_time_across_a_dst_change() -> None:
    """In Berlin the Monday 09:00 firing moves from +01:00 to +02:00 with the clocks."""
    assert _fires("0 9 * * mon", "Europe/Berlin", "2025-03-24T00:00", 2) == [
        "2025-03-24T09:00:00+01:00", "2025-03-31T09:00:00+02:00"]


def test_a_time_skipped_by_dst_fires_after_the_change_and_a_repeated_one_once() -> None:
    """02:30 on the spring-forward night fires at 03:30; on the fall-back night only once."""
    spring = _fires("daily 02:30", "Europe/Berlin", "2025-03-29T12:00", 3)
    assert spring == ["2025-03-30T03:30:00+02:00", "2025-03-31T02:30:00+02:00",
                      "2025-04-01T02:30:00+02:00"]
    autumn = _fires("30 2 * * *", "Europe/Berlin", "2025-10-25T12:00", 2)
    assert autumn == ["2025-10-26T02:30:00+02:00", "2025-10-27T02:30:00+01:00"]


@pytest.mark.parametrize(("every", "expected"), [
    ("*/20 9 * * mon-fri", ["2024-12-02T09:00:00+08:00", "2024-12-02T09:20:00+08:00",
                            "2024-12-02T09:40:00+08:00", "2024-12-03T09:00:00+08:00"]),
    ("0 10 1,15 * *", ["2024-12-15T10:00:00+08:00", "2025-01-01T10:00:00+08:00",
                       "2025-01-15T10:00:00+08:00", "2025-02-01T10:00:00+08:00"]),
    ("0 9 1 * sat", ["2024-12-07T09:00:00+08:00", "2024-12-14T09:00:00+08:00",
                     "2024-12-21T09:00:00+08:00", "2024-12-28T09:00:00+08:00"]),
    ("monthly 1 10:00", ["2025-01-01T10:00:00+08:00", "2025-02-01T10:00:00+08:00",
                         "2025-03-01T10:00:00+08:00", "2025-04-01T10:00:00+08:00"]),
    ("@yearly", ["2025-01-01T00:00:00+08:00", "2026-01-01T00:00:00+08:00",
                 "2027-01-01T00:00:00+08:00", "2028-01-01T00:00:00+08:00"]),
    ("0 8 8 mar *", ["2025-03-08T08:00:00+08:00", "2026-03-08T08:00:00+08:00",
                     "2027-03-08T08:00:00+08:00", "2028-03-08T08:00:00+08:00"]),
])
def test_cron_fields_lists_ranges_steps_names_and_day_or_semantics(
        every: str, expected: list[str]) -> None:
    """Each cron form fires exactly at the expected local times (both days set: either)."""
    assert _fires(every, "Asia/Shanghai", "2024-12-02T00:00", 4) == expected


@pytest.mark.parametrize(("every", "message"), [
    ("0 25 * * 1", "25 is out of range for the hour field (0-23)"),
    ("0 9 * * funday", "unknown day-of-week 'funday'"),
    ("0 9 * *", "has 4 fields, not 5"),
    ("0 9 5-2 * *", "range '5-2' in the day-of-month field runs backwards"),
    ("*/0 9 * * *", "bad step '/0' in the minute field"),
    ("weekly mon 9am", "'9am' is not a time of day"),
    ("fortnightly 09:00", "'fortnightly' is not daily, weekly or monthly"),
])
def test_bad_schedules_say_what_is_wrong(every: str, message: str) -> None:
    """A schedule that cannot be read raises CronError naming the field and the problem."""
    with pytest.raises(CronError) as caught:
        parse_every(every)
    assert message in caught.value.message


# ---- firings in the runtime -------------------------------------------------------------


def test_a_one_off_campaign_fires_once_at_its_local_instant(tmp_path: Path) -> None:
    """The double-12 send goes out at 10:00 +08:00 on 12 December to the audience, once."""
    rt = _runtime(_playbook(tmp_path))
    _people(rt, 6)
    out = _buy(rt, range(6), "2024-11-20T10:00:00") + _buy(rt, range(3), "2024-11-25T10:00:00")
    out += rt.advance("2025-02-01T00:00:00")
    sends = _of(out, "double12", "send")
    assert [a.customer_id for a in sends] == ["c0000", "c0001", "c0002"]
    assert {a.time for a in sends} == {"2024-12-12T10:00:00+08:00"}
    assert {a.trigger for a in sends} == {"campaign"}
    assert sends[0].key == "shop:1:campaign:double12:1733968800:c0000:0"
    assert sends[0].details["message"] == "客户0，双十二券 D12"
    assert sends[0].details["firing"] == "2024-12-12T10:00:00+08:00"
    assert sends[0].facts == {"days_since_purchase": 17, "tags": ["奶茶爱好者"]}


def test_a_weekly_campaign_keeps_its_local_time_across_dst_in_the_runtime(
        tmp_path: Path) -> None:
    """In Berlin the Monday 09:00 reminder fires at 09:00 before and after clocks go forward."""
    rt = _runtime(_playbook(tmp_path, tz="Europe/Berlin", until="2025-04-30"))
    _people(rt, 2)
    out = _buy(rt, range(2), "2025-03-20T10:00:00") + rt.advance("2025-04-08T00:00:00")
    assert [a.time for a in _of(out, "weekly", "task")] == [
        "2025-03-24T09:00:00+01:00", "2025-03-31T09:00:00+02:00", "2025-04-07T09:00:00+02:00"]


def test_the_audience_is_read_as_of_the_firing_instant(tmp_path: Path) -> None:
    """Time-relative facts are those of the firing; who qualifies just after is not sent to."""
    rt = _runtime(_playbook(tmp_path, at="2024-12-12T10:00"))
    _people(rt, 3)
    out = _buy(rt, range(3), "2024-10-14T10:30:00")  # leaves the 60-day window 12-13 10:30
    out += _buy(rt, range(3), "2024-10-15T10:00:00")
    out += rt.advance("2024-12-12T10:00:59")
    out += _buy(rt, range(3), "2024-12-12T10:01:00")
    out += rt.advance("2024-12-31T00:00:00")
    sends = _of(out, "double12", "send")
    assert len(sends) == 3  # nobody was evaluated since 10-15: the facts are the firing's
    assert {a.facts["days_since_purchase"] for a in sends} == {58}

    late = _runtime(_playbook(tmp_path, at="2024-12-12T10:00"))
    _people(late, 2)
    out = _buy(late, range(2), "2024-12-12T09:30:00")
    out += _buy(late, range(1), "2024-12-12T10:01:00")  # c0000 qualifies one minute late
    out += late.advance("2024-12-31T00:00:00")
    assert _of(out, "double12") == []


def test_customers_wake_ups_at_the_firing_instant_run_before_it(tmp_path: Path) -> None:
    """A tag a wake-up removes at the very instant of the firing is gone for the audience."""
    rt = _runtime(_playbook(tmp_path, at="2024-12-09T09:00"))
    _people(rt, 2)
    out: list[sopkit.Action] = []
    # c0000's first purchase leaves the 60-day window exactly at 2024-12-09 09:00
    for cid, ts in (("c0000", "2024-10-10T09:00:00"), ("c0001", "2024-10-20T10:00:00"),
                    ("c0000", "2024-11-01T10:00:00"), ("c0001", "2024-11-01T10:00:00")):
        out += rt.ingest({"customer_id": cid, "type": "purchase", "ts": ts, "amount": "3"})
    out += rt.advance("2024-12-09T08:59:59")
    assert "奶茶爱好者" in rt.state("c0000").tags
    out += rt.advance("2024-12-09T09:00:00")
    assert [a.customer_id for a in _of(out, "double12", "send")] == ["c0001"]
    assert "奶茶爱好者" not in rt.state("c0000").tags


def test_two_firings_at_one_instant_run_in_file_order(tmp_path: Path) -> None:
    """Campaigns due at the same instant fire by file order, after customers' own wake-ups."""
    path = _playbook(tmp_path, at="2024-12-16T09:00", every="weekly mon 09:00")
    rt = _runtime(path)
    _people(rt, 4)
    out = _buy(rt, range(4), "2024-12-01T10:00:00") + _buy(rt, range(4), "2024-12-02T10:00:00")
    out += rt.advance("2024-12-16T09:00:00")
    at_once = [a.rule for a in out if a.time == "2024-12-16T09:00:00+08:00"
               and a.trigger == "campaign"]
    assert set(at_once) == {"double12", "weekly"}
    assert at_once == sorted(at_once, key=["double12", "weekly"].index)


def test_campaign_messages_share_caps_with_rules(tmp_path: Path) -> None:
    """A customer who got a rule's message that day is capped for the campaign (1 a day)."""
    rule = '''
[[rules]]
name = "thanks"
on = "purchase"
actions = [{ type = "send", channel = "note", template = "hello" }]
'''
    path = _playbook(tmp_path, rules=rule,
                     policy="[[policy.caps]]\nmax = 1\nper = \"1d\"\n")
    rt = _runtime(path)
    _people(rt, 4)
    out = _buy(rt, range(4), "2024-11-20T10:00:00")
    out += _buy(rt, range(2, 4), "2024-12-01T08:00:00")
    out += _buy(rt, range(2), "2024-12-12T08:00:00")  # c0000 and c0001: a rule message today
    out += rt.advance("2024-12-13T00:00:00")
    sends = {a.customer_id: a for a in _of(out, "double12", "send")}
    assert sends["c0000"].status == "suppressed"
    assert sends["c0000"].details["reason"] == "cap: 1 per 1d on all channels reached"
    assert sends["c0002"].status == "planned"


def test_opted_out_customers_are_suppressed(tmp_path: Path) -> None:
    """Consent applies to campaigns: an opted-out customer's message is suppressed."""
    rt = _runtime(_playbook(tmp_path))
    _people(rt, 2)
    out = _buy(rt, range(2), "2024-11-20T10:00:00") + _buy(rt, range(2), "2024-11-25T10:00:00")
    out += rt.ingest({"customer_id": "c0001", "type": "opt_out", "ts": "2024-12-01T10:00:00",
                      "channel": "note"})
    out += rt.advance("2024-12-13T00:00:00")
    statuses = {a.customer_id: a.status for a in _of(out, "double12", "send")}
    assert statuses == {"c0000": "planned", "c0001": "suppressed"}


def test_holdout_and_variants_split_the_audience_alike_in_both_engines(tmp_path: Path) -> None:
    """The experiment holds out its share; the others split evenly, the gift with its text."""
    path = _playbook(tmp_path, holdout=0.2, variants=True)
    runs = []
    for engine in ("native", "durable"):
        rt = _runtime(path, engine)
        _people(rt, 800)
        out = _buy(rt, range(800), "2024-11-20T10:00:00")
        out += _buy(rt, range(800), "2024-11-25T10:00:00")
        out += rt.advance("2024-12-13T00:00:00")
        runs.append([(a.customer_id, a.status, a.details.get("variant"), a.details["message"])
                     for a in _of(out, "double12", "send")])
    assert runs[0] == runs[1]  # both engines decide the same audience
    assert len(runs[0]) == 800
    held = {cid for cid, status, _, _ in runs[0] if status == "holdout"}
    assert held == {f"c{i:04d}" for i in range(800) if held_out("d12", 0.2, f"c{i:04d}")}
    assert {variant for cid, _, variant, _ in runs[0] if cid in held} == {"holdout"}
    assert 0.15 < len(held) / 800 < 0.25
    gifts = [(cid, text) for cid, _, variant, text in runs[0] if variant == "gift"]
    assert 0.35 < len(gifts) / 800 < 0.45
    assert all(text == f"客户{int(cid[1:])}，双十二到店送 帆布袋" for cid, text in gifts)


def test_holdout_and_pilot_keep_the_same_customers_at_every_firing(tmp_path: Path) -> None:
    """A weekly campaign's holdout and pilot hold the same customers out every week."""
    path = _playbook(tmp_path, holdout=0.3, weekly='experiment = "d12"\nsample = 0.5',
                     at="2030-01-01T10:00")
    rt = _runtime(path)
    _people(rt, 40)
    reports: list[Any] = []
    rt.observe(lambda obs: reports.append(obs.report), "firing")
    out = _buy(rt, range(40), "2024-12-01T10:00:00") + rt.advance("2024-12-17T00:00:00")
    tasks = _of(out, "weekly", "task")
    firings = sorted({a.time for a in tasks})
    assert len(firings) == 3
    outcome = [{a.customer_id: (a.status, a.details.get("reason")) for a in tasks
                if a.time == t} for t in firings]
    assert outcome[0] == outcome[1] == outcome[2]
    females = [f"c{i:04d}" for i in range(40) if i % 2]
    in_holdout = {c for c in females if held_out("d12", 0.3, c)}
    pilot = {c for c in females if held_out("pilot:weekly", 0.5, c)}
    assert {c for c, (_, why) in outcome[0].items()
            if why == "pilot: outside the 50% sample of campaign weekly"} == \
        set(females) - pilot - in_holdout
    assert [(r.audience, r.pilot, r.held_out) for r in reports] == \
        [(20, 20 - len(set(females) - pilot - in_holdout), len(in_holdout))] * 3


def test_a_tag_action_chains_into_rules_at_the_firing(tmp_path: Path) -> None:
    """A campaign's tag changes a fact; a rule reading it fires at the same instant."""
    rule = '''
[[rules]]
name = "after_d12"
when = '"双十二已发" in tags'
actions = [{ type = "task", note = "跟进双十二 {{ profile.name }}" }]
'''
    rt = _runtime(_playbook(tmp_path, rules=rule))
    _people(rt, 2)
    out = _buy(rt, range(2), "2024-11-20T10:00:00") + _buy(rt, range(2), "2024-11-25T10:00:00")
    out += rt.advance("2024-12-13T00:00:00")
    follow = [a for a in out if a.rule == "after_d12"]
    assert [(a.customer_id, a.time) for a in follow] == [
        ("c0000", "2024-12-12T10:00:00+08:00"), ("c0001", "2024-12-12T10:00:00+08:00")]


def test_a_restored_runtime_fires_what_is_left_and_nothing_twice(tmp_path: Path) -> None:
    """After a restore at a firing's instant, that firing is not run again; the next is."""
    path = _playbook(tmp_path)
    rt = _runtime(path)
    _people(rt, 4)
    first = _buy(rt, range(4), "2024-12-01T10:00:00") + rt.advance("2024-12-09T09:00:00")
    clock = rt.dump_clock()
    states = [(cid, rt.dump_customer(cid)) for cid in rt.customer_ids()]
    again = _runtime(path)
    again.restore(clock, states)
    later = again.advance("2024-12-17T00:00:00")
    times = [a.time[:10] for a in _of(first + later, "weekly")]
    assert sorted(set(times)) == ["2024-12-02", "2024-12-09", "2024-12-16"]
    assert len(times) == 3 * 2  # two female customers, once per firing


# ---- simulate, run, dry-run and preview --------------------------------------------------


def _history(tmp: Path, n: int = 6) -> tuple[Path, Path]:
    events = tmp / "events.jsonl"
    profiles = tmp / "profiles.jsonl"
    lines = []
    for day in ("2024-11-20", "2024-11-25"):
        for i in range(n):
            lines.append({"customer_id": f"c{i:04d}", "type": "purchase",
                          "ts": f"{day}T10:{i:02d}:00", "amount": "3"})
    events.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    profiles.write_text("".join(json.dumps({
        "customer_id": f"c{i:04d}", "name": f"客户{i}", "gender": "female" if i % 2 else "male",
        "owner": f"s{i % 3}"}, ensure_ascii=False) + "\n" for i in range(n)), encoding="utf-8")
    return events, profiles


def _cli(args: list[str]) -> Any:
    return CliRunner().invoke(app, args)


def test_simulate_reports_the_reach_of_every_firing(tmp_path: Path) -> None:
    """The summary lists each firing's audience, sent and held out; the table shows them."""
    path = _playbook(tmp_path, holdout=0.4)
    events, profiles = _history(tmp_path)
    out = tmp_path / "actions.jsonl"
    result = _cli(["simulate", str(path), "--events", str(events), "--profiles", str(profiles),
                   "--end", "2024-12-20", "--engine", "native", "--output", "jsonl",
                   "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    (d12,) = [f for f in summary["campaigns"] if f["campaign"] == "double12"]
    held = sum(held_out("d12", 0.4, f"c{i:04d}") for i in range(6))
    assert d12 == {"campaign": "double12", "time": "2024-12-12T10:00:00+08:00", "audience": 6,
                   "pilot": 6, "sent": 6 - held, "deferred": 0, "capped": 0, "suppressed": 0,
                   "held_out": held}
    weekly = [f["time"][:10] for f in summary["campaigns"] if f["campaign"] == "weekly"]
    assert weekly == ["2024-11-25", "2024-12-02", "2024-12-09", "2024-12-16"]
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert sum(r["trigger"] == "campaign" and r["action"] == "send" for r in records) == 6
    table = _cli(["simulate", str(path), "--events", str(events), "--profiles", str(profiles),
                  "--end", "2024-12-20", "--engine", "native"])
    assert "Campaign double12: reach per firing" in table.output
    assert "2024-12-12 10:00" in table.output


def _run(path: Path, store: Path, events: Path, profiles: Path | None, clock: str) -> Any:
    args = ["run", "--send-from", "2000-01-01",
            str(path), "--store", str(store), "--events", str(events), "--once",
            "--clock", clock, "--lateness", "0s", "--engine", "native", "--quarantine",
            str(store.with_suffix(".q.jsonl"))]
    if profiles is not None:
        args += ["--profiles", str(profiles)]
    return _cli(args)


def _rows(store: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(store) as db:
        return sorted(db.execute("SELECT key, status FROM outbox WHERE rule = 'double12'"))


def test_one_message_per_customer_per_firing_across_a_restart(tmp_path: Path) -> None:
    """Re-running `sopkit run` past the firing (or replaying it) adds no second row or line."""
    path = _playbook(tmp_path)
    events, profiles = _history(tmp_path)
    store = tmp_path / "live.db"
    assert _run(path, store, events, profiles, "2024-12-12T10:00:00").exit_code == 0
    first = _rows(store)
    assert len(first) == 6 and {s for _, s in first} == {"delivered"}
    written = (tmp_path / "note.jsonl").read_text(encoding="utf-8").splitlines()
    result = _run(path, store, events, None, "2024-12-20T00:00:00")
    assert result.exit_code == 0, result.output
    assert _rows(store) == first
    assert (tmp_path / "note.jsonl").read_text(encoding="utf-8").splitlines() == written
    # a crash before the commit: a fresh store replays the firing with the same keys
    replay = tmp_path / "replay.db"
    assert _run(path, replay, events, profiles, "2024-12-20T00:00:00").exit_code == 0
    assert [k for k, _ in _rows(replay)] == [k for k, _ in first]
    assert (tmp_path / "note.jsonl").read_text(encoding="utf-8").splitlines() == written


def test_dry_run_lists_the_firings_of_the_window_with_their_audience(tmp_path: Path) -> None:
    """dry-run --window 7d shows the next firings and how many they would reach now."""
    path = _playbook(tmp_path)
    events, profiles = _history(tmp_path)
    store = tmp_path / "live.db"
    assert _run(path, store, events, profiles, "2024-12-08T12:00:00").exit_code == 0
    result = _cli(["dry-run", str(path), "--store", str(store), "--at", "2024-12-08T12:00:00",
                   "--engine", "native", "--window", "7d", "--output", "jsonl"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines == [
        {"source": "campaign", "campaign": "weekly", "firing": "2024-12-09T09:00:00+08:00",
         "channels": [], "audience_now": 3},
        {"source": "campaign", "campaign": "double12", "firing": "2024-12-12T10:00:00+08:00",
         "channels": ["note"], "audience_now": 6},
    ]
    none = _cli(["dry-run", str(path), "--store", str(store), "--at", "2024-12-08T12:00:00",
                 "--engine", "native", "--window", "0", "--output", "jsonl"])
    assert none.stdout == ""
    table = _cli(["dry-run", str(path), "--store", str(store), "--at", "2024-12-08T12:00:00",
                  "--engine", "native", "--window", "2d"])
    assert "Campaign firings in the next 2d: 1" in table.output


def test_a_one_off_behind_the_store_clock_gets_a_notice(tmp_path: Path) -> None:
    """dry-run says that a one-off campaign before the store's clock will not fire."""
    path = _playbook(tmp_path, at="2024-11-01T10:00")
    events, profiles = _history(tmp_path)
    store = tmp_path / "live.db"
    assert _run(path, store, events, profiles, "2024-12-08T12:00:00").exit_code == 0
    result = CliRunner().invoke(
        app, ["dry-run", str(path), "--store", str(store), "--at", "2024-12-08T12:00:00",
              "--engine", "native"])
    assert "campaign 'double12' (at 2024-11-01T10:00:00+08:00) is before the store's clock" \
        in result.stderr


def test_preview_shows_the_audience_a_sample_and_each_variant(tmp_path: Path) -> None:
    """preview --events lists who qualifies with why, and renders every variant's message."""
    path = _playbook(tmp_path, variants=True)
    events, profiles = _history(tmp_path)
    result = _cli(["campaign", "preview", str(path), "double12", "--at", "2024-12-12T10:00",
                   "--events", str(events), "--profiles", str(profiles), "--sample", "2",
                   "--output", "jsonl"])
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert (found["customers"], found["audience"], found["pilot"]) == (6, 6, 6)
    assert sum(found["variants"].values()) == 6
    assert [m["customer_id"] for m in found["sample"]] == ["c0000", "c0001"]
    assert found["sample"][0]["facts"] == {"days_since_purchase": 17, "tags": ["奶茶爱好者"]}
    assert [(m["variant"], m["message"]) for m in found["messages"]] == [
        ("coupon", "客户0，双十二券 D12"), ("gift", "客户0，双十二到店送 帆布袋")]
    text = _cli(["campaign", "preview", str(path), "double12", "--at", "2024-12-12T10:00",
                 "--events", str(events), "--profiles", str(profiles)])
    assert "6 of 6 customers in the audience" in text.output
    assert "variant gift (note, c0000): 客户0，双十二到店送 帆布袋" in text.output


def test_preview_from_a_store_streams_and_agrees_with_the_history(tmp_path: Path) -> None:
    """The audience read page by page from a live store equals the replayed one."""
    path = _playbook(tmp_path)
    events, profiles = _history(tmp_path, n=9)
    store = tmp_path / "live.db"
    assert _run(path, store, events, profiles, "2024-12-01T12:00:00").exit_code == 0
    args = ["campaign", "preview", str(path), "weekly", "--at", "2024-12-02T09:00",
            "--output", "jsonl"]
    stored = json.loads(_cli([*args, "--store", str(store)]).stdout)
    replayed = json.loads(_cli([*args, "--events", str(events), "--profiles",
                                str(profiles)]).stdout)
    assert stored["audience"] == replayed["audience"] == 4
    assert stored["sample"] == replayed["sample"]


def test_preview_of_an_unknown_campaign_suggests_the_name(tmp_path: Path) -> None:
    """A misspelt campaign name is a usage error with the closest name."""
    events, _ = _history(tmp_path)
    result = CliRunner().invoke(
        app, ["campaign", "preview", str(_playbook(tmp_path)), "dubble12", "--at",
              "2024-12-12T10:00", "--events", str(events)])
    assert result.exit_code == 2
    assert "unknown campaign 'dubble12'; did you mean 'double12'?" in result.stderr


# ---- check -------------------------------------------------------------------------------

CHECKED = '''
[playbook]
name = "demo"
timezone = "Europe/Berlin"

[events.purchase]

[metrics]
days_since_purchase = { kind = "days_since", event = "purchase" }

[channels.sms]
type = "sms"

[templates.hi]
text = "hi {{ params.who }}"

[experiments.x]
holdout = 0.1

[[rules]]
name = "welcome"
on = "purchase"
actions = [{ type = "send", channel = "sms", template = "hi", params = { who = "you" } }]
'''


@pytest.mark.parametrize(("campaign", "message"), [
    ('name = "welcome"\nat = "2025-01-01T10:00"',
     "campaigns[0].name: 'welcome' is already the name of a rule"),
    ('name = "c"\naudience_x = 1\nat = "2025-01-01T10:00"', "unknown key 'audience_x'"),
    ('name = "c"\nat = "2025-01-01T10:00"\nuntil = "2025-02-01"',
     "`until` ends a recurring schedule"),
    ('name = "c"\nevery = "0 9 30 feb *"', "schedule '0 9 30 feb *' never fires"),
    ('name = "c"\nevery = "weekly mon 09:00"\nuntil = "next year"', "bad date 'next year'"),
    ('name = "c"\nat = "2025-01-01T10:00"\nexperiment = "y"', "unknown experiment 'y'"),
    ('name = "c"\nat = "2025-01-01T10:00"\nsample = 1.5',
     "sample 1.5 is outside (0, 1]"),
    ('name = "c"\nat = "2025-01-01T10:00"\nexperiment = "x"\nVARIANTS',
     "campaigns[0].actions[0].variants.nope: 'nope' is not a variant of experiment 'x'"),
    ('name = "c"\nat = "2025-01-01T10:00"\nVARIANTS',
     "'nope' is not a variant of an experiment of campaign 'c'"),
])
def test_check_reports_campaign_mistakes_with_their_key(tmp_path: Path, campaign: str,
                                                        message: str) -> None:
    """Each campaign mistake is reported at its key with a clear message."""
    path = tmp_path / "demo.toml"
    send = '{ type = "send", channel = "sms", template = "hi", params = { who = "x" } }'
    if "VARIANTS" in campaign:
        campaign = campaign.replace("\nVARIANTS", "")
        send = send[:-2] + ', variants = { nope = { params = { who = "y" } } } }'
    body = campaign if "audience" in campaign else campaign + '\naudience = "true"'
    path.write_text(CHECKED + f"\n[[campaigns]]\n{body}\nactions = [{send}]\n",
                    encoding="utf-8")
    with pytest.raises(sopkit.PlaybookError) as caught:
        sopkit.load_playbook(path)
    assert any(message in str(p) for p in caught.value.problems), caught.value.problems


def test_explain_shows_a_customers_campaign_messages_and_why(tmp_path: Path) -> None:
    """`sopkit explain` lists the campaign send with the facts that qualified the customer."""
    events, profiles = _history(tmp_path)
    result = _cli(["explain", str(_playbook(tmp_path)), "--events", str(events), "--profiles",
                   str(profiles), "--customer", "c0001", "--at", "2024-12-13", "--output",
                   "jsonl"])
    assert result.exit_code == 0, result.output
    entries = [json.loads(line) for line in result.stdout.splitlines()]
    (send,) = [e for e in entries if e["kind"] == "action" and e["data"]["rule"] == "double12"
               and e["data"]["action"] == "send"]
    assert send["time"] == "2024-12-12T10:00:00+08:00"
    assert send["data"]["trigger"] == "campaign"
    assert "days_since_purchase=17" in send["text"]
    assert any(e["kind"] == "tag" and e["text"] == "+ 双十二已发" for e in entries)


def test_preview_refuses_a_store_of_another_playbook(tmp_path: Path) -> None:
    """A store written by another playbook is refused, not read with the wrong layout."""
    path = _playbook(tmp_path)
    events, profiles = _history(tmp_path)
    store = tmp_path / "live.db"
    assert _run(path, store, events, profiles, "2024-12-01T12:00:00").exit_code == 0
    other = tmp_path / "other.toml"
    other.write_text(path.read_text(encoding="utf-8").replace('name = "shop"',
                                                              'name = "tea"'), encoding="utf-8")
    result = _cli(["campaign", "preview", str(other), "weekly", "--at", "2024-12-02T09:00",
                   "--store", str(store)])
    assert result.exit_code == 2
    assert "belongs to playbook 'shop:1', not 'tea:1'" in result.stderr


def test_review_compares_a_campaigns_arms_against_its_holdout(tmp_path: Path) -> None:
    """`sopkit review --experiment` counts a campaign's sends and holdout as its arms."""
    path = _playbook(tmp_path, holdout=0.3, variants=True)
    events, profiles = _history(tmp_path, n=20)
    later = [{"customer_id": f"c{i:04d}", "type": "purchase", "ts": "2024-12-15T10:00:00",
              "amount": "3"} for i in range(0, 20, 2)]
    with events.open("a", encoding="utf-8") as handle:
        handle.writelines(json.dumps(x) + "\n" for x in later)
    result = _cli(["review", str(path), "--events", str(events), "--profiles", str(profiles),
                   "--experiment", "d12", "--goal", "purchase", "--within", "7d", "--output",
                   "jsonl"])
    assert result.exit_code == 0, result.output
    arms = {a["arm"]: a for a in json.loads(result.stdout)["arms"]}
    assert set(arms) == {"coupon", "gift", "holdout"}
    assert sum(a["customers"] for a in arms.values()) == 20
    assert sum(a["converted"] for a in arms.values()) == 10
    held = sum(held_out("d12", 0.3, f"c{i:04d}") for i in range(20))
    assert arms["holdout"]["customers"] == held
