"""`sopkit explain`: a customer's timeline answers why a rule fired and why one did not."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import sopkit
from sopkit._cli.app import app
from sopkit._offline.explain import explain

ROOT = Path(__file__).parent.parent
MEMBERSHIP = ROOT / "examples/membership"


def _membership(customer: str, at: str = "2025-04-30") -> list[dict[str, object]]:
    playbook = sopkit.load_playbook(ROOT / "playbooks/membership.toml")
    entries = explain(playbook, MEMBERSHIP / "events.jsonl", customer,
                      profiles=MEMBERSHIP / "profiles.csv", at=at)
    return [e.to_json() for e in entries]


def test_a_fired_rule_says_which_facts_made_it_fire() -> None:
    """Each action entry names the rule, what was sent and the facts its condition read."""
    entries = _membership("m002")
    nudges = [e for e in entries if e["kind"] == "action"
              and e["data"]["rule"] == "course_nudge"]  # type: ignore[index]  # JSON dicts
    assert nudges, entries
    first = nudges[0]
    assert first["time"] == "2025-02-06T10:00:00+08:00"
    assert "韩梅梅" in str(first["text"]) and "days_since_login=3" in str(first["text"])


def test_a_rule_that_did_not_fire_names_the_false_part_and_its_facts() -> None:
    """A near miss quotes the one part of an `and` that was false, with the value it read."""
    entries = _membership("m005")
    misses = [e for e in entries if e["kind"] == "near_miss"]
    lapsed = [e for e in misses if "days_to_expiry >= 0" in str(e["text"])]
    assert lapsed, misses
    assert lapsed[0]["data"] == {"rule": "course_nudge", "false": ["days_to_expiry >= 0"],
                                 "facts": {"days_to_expiry": -1}}


def test_the_timeline_holds_events_stage_and_tag_changes_in_order() -> None:
    """Events, stage moves and tag changes appear once each, in time order."""
    entries = _membership("m005")
    kinds = [e["kind"] for e in entries]
    assert {"event", "stage", "tag", "action"} <= set(kinds)
    times = [str(e["time"]) for e in entries]
    assert times == sorted(times)
    stages = [e["text"] for e in entries if e["kind"] == "stage"]
    assert stages[-1] == "at_risk -> lapsed"


def test_at_stops_the_timeline_at_that_time() -> None:
    """--at cuts the replay: nothing after that instant is shown."""
    entries = _membership("m005", at="2025-02-10T12:00:00")
    assert entries and all(str(e["time"]) <= "2025-02-10T12:00:00+08:00" for e in entries)


def test_retail_example_answers_why_and_why_not(tmp_path: Path) -> None:
    """On the shipped retail playbook and CDNOW data, a recall is explained and so is a miss."""
    events = tmp_path / "events.jsonl"
    with gzip.open(ROOT / "data/cdnow/events.jsonl.gz", "rt", encoding="utf-8") as src:
        lines = [line for _, line in zip(range(600), src, strict=False)]
    events.write_text("".join(lines), encoding="utf-8")
    ids = {json.loads(line)["customer_id"] for line in lines}
    profiles = tmp_path / "profiles.jsonl"
    with gzip.open(ROOT / "data/cdnow/profiles.jsonl.gz", "rt", encoding="utf-8") as src:
        profiles.write_text("".join(p for p in src if json.loads(p)["customer_id"] in ids),
                            encoding="utf-8")
    result = CliRunner().invoke(app, [
        "explain", str(ROOT / "playbooks/retail.toml"), "--events", str(events),
        "--profiles", str(profiles),
        "--customer", "cdnow-00006", "--at", "1997-12-31", "--output", "jsonl"])
    assert result.exit_code == 0, result.output
    entries = [json.loads(line) for line in result.output.splitlines()]
    severe = [e for e in entries if e["kind"] == "action"
              and e["data"]["rule"] == "severe_churn_recall"]
    assert severe and "tags=['重度流失']" in severe[0]["text"]
    why_not = [e for e in entries if e["kind"] == "near_miss"
               and e["data"]["rule"] == "severe_churn_recall"]
    assert why_not and why_not[0]["data"]["false"] == ['stage != "seed"']
    assert why_not[0]["time"] < severe[0]["time"]


def test_an_unknown_customer_is_a_usage_error(tmp_path: Path) -> None:
    """Asking about a customer the history never mentions exits 2 and says so."""
    result = CliRunner().invoke(app, [
        "explain", str(ROOT / "playbooks/membership.toml"),
        "--events", str(MEMBERSHIP / "events.jsonl"), "--customer", "nobody"])
    assert result.exit_code == 2
    assert "nobody" in result.output


@pytest.mark.parametrize("output", ["table", "jsonl"])
def test_personal_data_is_masked_unless_asked(tmp_path: Path, output: str) -> None:
    """Phone numbers in messages are masked in explain's output by default."""
    playbook = tmp_path / "p.toml"
    playbook.write_text(
        '[playbook]\nname = "p"\n[profile]\nphone = "string"\n[events.visit]\n'
        '[channels.sms]\ntype = "sms"\n[templates.t]\ntext = "call {{ profile.phone }}"\n'
        '[[rules]]\nname = "r"\non = "visit"\nactions = [{ type = "send", channel = "sms", '
        'template = "t" }]\n', encoding="utf-8")
    events = tmp_path / "e.jsonl"
    events.write_text(json.dumps({"customer_id": "c1", "type": "visit",
                                  "ts": "2025-01-01T10:00:00"}) + "\n", encoding="utf-8")
    profiles = tmp_path / "p.jsonl"
    profiles.write_text(json.dumps({"customer_id": "c1", "phone": "13812345678"}) + "\n",
                        encoding="utf-8")
    args = ["explain", str(playbook), "--events", str(events), "--profiles", str(profiles),
            "--customer", "c1", "--output", output]
    masked = CliRunner().invoke(app, args)
    assert masked.exit_code == 0, masked.output
    assert "138****5678" in masked.output and "13812345678" not in masked.output
    assert "13812345678" in CliRunner().invoke(app, [*args, "--unmasked"]).output


def _history_with_refusals(tmp_path: Path) -> Path:
    """The membership history plus a redelivered event of another customer (same event_id)
    and an out-of-order event of m002, both of which `simulate` quarantines."""
    lines = (MEMBERSHIP / "events.jsonl").read_text(encoding="utf-8").splitlines()
    first = json.loads(lines[0])
    extra = [dict(first, event_id="e-1"), dict(first, event_id="e-1"),
             {"customer_id": "m002", "type": "login", "ts": "2025-01-15T09:00:00"}]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join([lines[0], *(json.dumps(e) for e in extra), *lines[1:]]) + "\n",
                    encoding="utf-8")
    return path


def test_a_history_simulate_quarantines_parts_of_is_explained_not_crashed(
        tmp_path: Path) -> None:
    """Explain reads a history with a duplicate event_id and an event out of order as
    simulate does: it goes on, and shows the customer's refused event as quarantined."""
    events = _history_with_refusals(tmp_path)
    playbook = sopkit.load_playbook(ROOT / "playbooks/membership.toml")
    entries = [e.to_json() for e in explain(playbook, events, "m002",
                                            profiles=MEMBERSHIP / "profiles.csv",
                                            at="2025-04-30")]
    refused = [e for e in entries if e["kind"] == "quarantine"]
    assert [e["data"] for e in refused] == [{"line": 4}]
    assert "out of order" in str(refused[0]["text"])
    assert not any(e["kind"] == "event" and str(e["time"]).startswith("2025-01-15")
                   for e in entries)
    # the timeline's actions are the simulation's actions for the customer
    out = tmp_path / "actions.jsonl"
    with out.open("w", encoding="utf-8") as handle:
        summary = sopkit.simulate(playbook, events, profiles=MEMBERSHIP / "profiles.csv",
                                  end="2025-04-30", out=handle, masked=False)
    reasons = summary.quarantine_reasons
    assert (reasons["duplicate event_id"], reasons["out of order"]) == (1, 1)
    simulated = [(a["time"], a["rule"], a["status"])
                 for a in map(json.loads, out.read_text(encoding="utf-8").splitlines())
                 if a["customer_id"] == "m002"]
    explained = [(e["time"], e["data"]["rule"], e["data"]["status"])  # type: ignore[index]
                 for e in entries if e["kind"] == "action"]  # (the entries are JSON dicts)
    assert explained == simulated and simulated
