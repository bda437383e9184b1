"""Campaigns (sopkit/_runtime/campaigns.py): what a user sees of a firing's reach and results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from sopkit._cli.app import app

PLAYBOOK = '''
[playbook]
name = "shop"
version = "1"
timezone = "Asia/Shanghai"
day_starts = "09:00"

[profile]
name = "string"
opt_out = "list"

[events.purchase]
amount = "decimal"

[metrics]
purchases_60d = { kind = "count", event = "purchase", window = "60d" }

# every customer who bought is in a stage: an audience that names no stage still reaches them
[[stages]]
name = "buyer"
when = "purchases_60d >= 1"

[channels.note]
type = "jsonl"
path = "NOTE"

[templates.hello]
text = "{{ profile.name }}，您好"

[policy]
consent_attribute = "opt_out"

[[policy.caps]]
max = 1
per = "1d"

[[rules]]
name = "thanks"
on = "purchase"
actions = [{ type = "send", channel = "note", template = "hello" }]

[[campaigns]]
name = "double12"
at = "2024-12-12T10:00"
audience = "purchases_60d >= 1"
actions = [
  { type = "send", channel = "note", template = "hello" },
  { type = "task", note = "回访 {{ profile.name }}" },
]
'''


def _simulate(tmp: Path) -> dict[str, Any]:
    """c0000 got the rule's message that morning (capped), c0001 opted out of `note`
    (suppressed), c0002 and c0003 are sent to; everyone also gets the owner's task."""
    path = tmp / "shop.toml"
    path.write_text(PLAYBOOK.replace("NOTE", (tmp / "note.jsonl").as_posix()), encoding="utf-8")
    events = [{"customer_id": f"c{i:04d}", "type": "purchase", "ts": "2024-11-20T10:00:00",
               "amount": "3"} for i in range(4)]
    events += [{"customer_id": "c0000", "type": "purchase", "ts": "2024-12-12T09:30:00",
                "amount": "3"},
               {"customer_id": "c0001", "type": "opt_out", "ts": "2024-12-01T10:00:00",
                "channel": "note"}]
    events.sort(key=lambda e: str(e["ts"]))
    (tmp / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events),
                                      encoding="utf-8")
    (tmp / "profiles.jsonl").write_text("".join(json.dumps(
        {"customer_id": f"c{i:04d}", "name": f"客户{i}", "owner": "s1"}, ensure_ascii=False)
        + "\n" for i in range(4)), encoding="utf-8")
    result = CliRunner().invoke(app, [
        "simulate", str(path), "--events", str(tmp / "events.jsonl"), "--profiles",
        str(tmp / "profiles.jsonl"), "--end", "2024-12-20", "--engine", "native",
        "--output", "jsonl", "--out", str(tmp / "actions.jsonl")])
    assert result.exit_code == 0, result.output
    summary: dict[str, Any] = json.loads(result.stdout)
    return summary


def test_a_firings_reach_counts_capped_and_opted_out_customers_apart(tmp_path: Path) -> None:
    """The reach of a firing counts its message (not the task after it): 2 sent, 1 capped
    by the daily cap, 1 suppressed for consent, out of an audience of 4."""
    (d12,) = _simulate(tmp_path)["campaigns"]
    assert d12 == {"campaign": "double12", "time": "2024-12-12T10:00:00+08:00", "audience": 4,
                   "pilot": 4, "sent": 2, "deferred": 0, "capped": 1, "suppressed": 1,
                   "held_out": 0}


def _preview(tmp: Path, extra_events: str, extra_profiles: str) -> Any:
    _simulate(tmp)  # writes the playbook, events and profiles
    with (tmp / "events.jsonl").open("a", encoding="utf-8") as f:
        f.write(extra_events)
    with (tmp / "profiles.jsonl").open("a", encoding="utf-8") as f:
        f.write(extra_profiles)
    return CliRunner().invoke(app, [
        "campaign", "preview", str(tmp / "shop.toml"), "double12", "--at", "2024-12-12T10:00",
        "--events", str(tmp / "events.jsonl"), "--profiles", str(tmp / "profiles.jsonl"),
        "--output", "jsonl"])


def test_preview_counts_exactly_the_records_it_could_not_use(tmp_path: Path) -> None:
    """A clean history previews without a notice; with a broken event line and a profile
    without an id, the notice says 2 records could not be used, and the preview goes on."""
    clean = _preview(tmp_path, "", "")
    assert clean.exit_code == 0, clean.output
    assert "could not be used" not in clean.stderr
    assert json.loads(clean.stdout)["audience"] == 4
    broken = _preview(tmp_path, '{"customer_id": "c0009", "type": "purchase", "ts": \n',
                      '{"name": "无名"}\n')
    assert broken.exit_code == 0, broken.output
    assert "notice: 2 records could not be used" in broken.stderr
    assert json.loads(broken.stdout)["audience"] == 4


def test_campaign_results_count_refused_customers_as_failed(tmp_path: Path) -> None:
    """WeCom answering "not a customer" (2) for one member and "limit reached" (3) for
    another: `campaign results` counts both failed, the confirmed ones sent, and feeds back
    message_sent events for the sent ones only."""
    from test_campaign_wecom import _invoke, _run, _setup
    from wecom_fake import WecomFake

    with WecomFake() as server:
        server.add_staff("li", "wang", "zhang")
        playbook, events, profiles = _setup(tmp_path, server, customers=7)
        store = tmp_path / "live.db"
        _run(playbook, store, events, profiles, server)
        (li_task,) = [m for m, t in server.templates.items() if t["sender"] == "li"]
        server.confirm_template(li_task)  # t000 and t003 confirmed (status 1)
        (wang_task,) = [m for m, t in server.templates.items() if t["sender"] == "wang"]
        results = server.templates[wang_task]["results"]
        first, second = sorted(results)[:2]
        results[first] = {"status": 2, "send_time": 0}  # no longer the owner's customer
        results[second] = {"status": 3, "send_time": 0}  # the monthly limit was reached
        report = _invoke(["campaign", "results", str(playbook), "--store", str(store),
                          "--append-to", str(events), "--clock", "2024-12-12T18:00:00",
                          "--output", "jsonl"], server)
    assert report.exit_code == 0, report.output
    firing, appended = (json.loads(line) for line in report.stdout.splitlines())
    assert (firing["sent"], firing["failed"], firing["waiting"]) == (2, 2, 2)
    assert firing["send_rate"] == 2 / 6  # of the 6 rows delivered to WeCom
    assert appended["appended"] == 2


def test_the_preview_shows_each_members_arm_as_the_firing_decides_it(tmp_path: Path) -> None:
    """For every member the preview lists, "held_out" and "variant" are what the firing then
    records for that customer: status holdout, or the variant on the message. The tag
    action is recorded planned for all, held out or not (docs/playbook.md: tags still
    happen)."""
    from test_campaigns import _history, _playbook

    path = _playbook(tmp_path, holdout=0.5, variants=True)
    events, profiles = _history(tmp_path, n=12)
    shown = CliRunner().invoke(app, [
        "campaign", "preview", str(path), "double12", "--at", "2024-12-12T10:00", "--events",
        str(events), "--profiles", str(profiles), "--sample", "12", "--output", "jsonl"])
    assert shown.exit_code == 0, shown.output
    sample = json.loads(shown.stdout)["sample"]
    out = tmp_path / "actions.jsonl"
    ran = CliRunner().invoke(app, [
        "simulate", str(path), "--events", str(events), "--profiles", str(profiles), "--end",
        "2024-12-13", "--engine", "native", "--output", "jsonl", "--out", str(out)])
    assert ran.exit_code == 0, ran.output
    sends = {r["customer_id"]: r for r in map(json.loads, out.read_text("utf-8").splitlines())
             if r["rule"] == "double12" and r["action"] == "send"}
    assert len(sample) == 12 and 0 < sum(m["held_out"] for m in sample) < 12
    for member in sample:
        send = sends[member["customer_id"]]
        assert member["held_out"] == (send["status"] == "holdout")
        assert member["variant"] == (None if member["held_out"]
                                     else send["variant"])
    tags = [r for r in map(json.loads, out.read_text("utf-8").splitlines())
            if r["rule"] == "double12" and r["action"] == "tag"]
    assert len(tags) == 12 and {r["status"] for r in tags} == {"planned"}


def test_a_firing_in_quiet_hours_counts_its_messages_sent_and_deferred(tmp_path: Path) -> None:
    """A campaign at 22:00 inside quiet hours (21:00-09:00): its reach shows every message
    both sent and deferred (to the morning), none capped or suppressed; its tag action is
    no message, so it is applied at 22:00 for every member."""
    from test_campaigns import _history, _playbook

    path = _playbook(tmp_path, at="2024-12-12T22:00",
                     policy='quiet_hours = { start = "21:00", end = "09:00" }')
    events, profiles = _history(tmp_path)
    ran = CliRunner().invoke(app, [
        "simulate", str(path), "--events", str(events), "--profiles", str(profiles), "--end",
        "2024-12-14", "--engine", "native", "--output", "jsonl",
        "--out", str(tmp_path / "actions.jsonl")])
    assert ran.exit_code == 0, ran.output
    (d12,) = [f for f in json.loads(ran.stdout)["campaigns"] if f["campaign"] == "double12"]
    assert (d12["audience"], d12["sent"], d12["deferred"], d12["capped"],
            d12["suppressed"]) == (6, 6, 6, 0, 0)
    records = [json.loads(line) for line in
               (tmp_path / "actions.jsonl").read_text(encoding="utf-8").splitlines()]
    tags = [(r["status"], r["time"]) for r in records
            if r["rule"] == "double12" and r["action"] == "tag"]
    assert tags == [("planned", "2024-12-12T22:00:00+08:00")] * 6
