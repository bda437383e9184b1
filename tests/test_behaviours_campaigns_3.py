"""Campaigns (sopkit/_runtime/campaigns.py), seed-23 sample: reach, audiences, previews, results."""

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

[experiments.d12]
holdout = 0.3
variants = ["gift", "voucher"]

[[rules]]
name = "thanks"
on = "purchase"
actions = [{ type = "send", channel = "note", template = "hello" }]

[[campaigns]]
name = "double12"
at = "2024-12-12T10:00"
audience = "purchases_60d >= 1"
experiment = "d12"
actions = [{ type = "send", channel = "note", template = "hello" }]

[[campaigns]]
name = "s1_only"
at = "2024-12-13T10:00"
audience = 'owner == "s1"'
actions = [{ type = "send", channel = "note", template = "hello" }]
'''


def _files(tmp: Path, extra: list[dict[str, Any]] | None = None) -> tuple[Path, Path, Path]:
    """Ten buyers c0000-c0009 (owners s0, s1, s2 in turn); c0000 buys again at 09:30 on
    12-12 (the rule's thank-you takes the day's cap), c0001 and c0002 opt out of `note`."""
    playbook = tmp / "shop.toml"
    playbook.write_text(PLAYBOOK.replace("NOTE", (tmp / "note.jsonl").as_posix()),
                        encoding="utf-8")
    events = [{"customer_id": f"c{i:04d}", "type": "purchase", "ts": "2024-11-20T10:00:00",
               "amount": "3"} for i in range(10)]
    events += [{"customer_id": "c0000", "type": "purchase", "ts": "2024-12-12T09:30:00",
                "amount": "3"}]
    events += [{"customer_id": f"c000{i}", "type": "opt_out", "ts": "2024-12-01T10:00:00",
                "channel": "note"} for i in (1, 2)]
    events += extra or []
    events.sort(key=lambda e: str(e["ts"]))
    (tmp / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events),
                                      encoding="utf-8")
    (tmp / "profiles.jsonl").write_text("".join(json.dumps(
        {"customer_id": f"c{i:04d}", "name": f"客户{i}", "owner": f"s{i % 3}"},
        ensure_ascii=False) + "\n" for i in range(10)), encoding="utf-8")
    return playbook, tmp / "events.jsonl", tmp / "profiles.jsonl"


def _simulate(tmp: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    playbook, events, profiles = _files(tmp)
    out = tmp / "actions.jsonl"
    result = CliRunner().invoke(app, [
        "simulate", str(playbook), "--events", str(events), "--profiles", str(profiles),
        "--end", "2024-12-20", "--engine", "native", "--output", "jsonl", "--out", str(out)])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    return {f["campaign"]: f for f in json.loads(result.stdout)["campaigns"]}, records


def _preview(tmp: Path, *args: str) -> Any:
    return CliRunner().invoke(app, [
        "campaign", "preview", str(tmp / "shop.toml"), "double12", "--at", "2024-12-12T10:00",
        "--events", str(tmp / "events.jsonl"), "--profiles", str(tmp / "profiles.jsonl"),
        *args])


def test_a_firings_reach_gives_one_capped_and_two_opted_out_customers(tmp_path: Path) -> None:
    """One member capped by the daily cap and two opted out: the reach says capped 1 and
    suppressed 2 (not the other way round), beside 3 held out and 4 sent."""
    firings, _ = _simulate(tmp_path)
    d12 = firings["double12"]
    assert (d12["audience"], d12["sent"], d12["capped"], d12["suppressed"],
            d12["held_out"]) == (10, 4, 1, 2, 3)


def test_an_audience_on_the_owner_reaches_exactly_that_owners_customers(tmp_path: Path) -> None:
    """`owner == "s1"` reaches c0001, c0004 and c0007 (c0001 opted out, so two messages)."""
    firings, records = _simulate(tmp_path)
    assert firings["s1_only"]["audience"] == 3
    sent = sorted((r["customer_id"], r["status"]) for r in records
                  if r["rule"] == "s1_only" and r["action"] == "send")
    assert sent == [("c0001", "suppressed"), ("c0004", "planned"), ("c0007", "planned")]


def test_the_preview_counts_the_held_out_and_the_variants_as_the_firing_does(
        tmp_path: Path) -> None:
    """The preview's held-out count and per-variant counts are the firing's (3 held out,
    gift 1, voucher 6), and the variants are listed by name whatever the first member got."""
    _, records = _simulate(tmp_path)
    fired = [r for r in records if r["rule"] == "double12"]
    assert sum(r["status"] == "holdout" for r in fired) == 3
    found = _preview(tmp_path, "--output", "jsonl")
    assert found.exit_code == 0, found.output
    data = json.loads(found.stdout)
    assert (data["audience"], data["held_out"], data["variants"]) == (
        10, 3, {"gift": 1, "voucher": 6})
    assert data["sample"][0]["variant"] == "voucher"
    text = _preview(tmp_path)
    assert "held out (experiment d12): 3" in text.output
    assert "variants: gift 1, voucher 6" in text.output


def test_a_preview_at_an_instant_leaves_out_events_at_and_after_it(tmp_path: Path) -> None:
    """Previewing at 10:00: a first purchase at 10:00 sharp and one at 11:00 are not in the
    history before the firing, so the audience stays the 10 earlier buyers."""
    _files(tmp_path, [
        {"customer_id": "c0010", "type": "purchase", "ts": "2024-12-12T10:00:00", "amount": "3"},
        {"customer_id": "c0011", "type": "purchase", "ts": "2024-12-12T11:00:00", "amount": "3"}])
    found = _preview(tmp_path, "--sample", "20", "--output", "jsonl")
    assert found.exit_code == 0, found.output
    data = json.loads(found.stdout)
    assert (data["customers"], data["audience"]) == (10, 10)
    assert [m["customer_id"] for m in data["sample"]] == [f"c{i:04d}" for i in range(10)]


def test_campaign_results_for_one_campaign_show_only_its_firings(tmp_path: Path) -> None:
    """After a live run through both firings, `campaign results --campaign s1_only` shows its
    one firing (2 delivered, 1 suppressed), not double12's."""
    playbook, events, profiles = _files(tmp_path)
    store = tmp_path / "live.db"
    ran = CliRunner().invoke(app, [
        "run", "--send-from", "2000-01-01", str(playbook), "--store", str(store), "--events",
        str(events), "--profiles", str(profiles), "--once", "--clock", "2024-12-14T00:00:00",
        "--lateness", "0s", "--engine", "native", "--quarantine", str(tmp_path / "q.jsonl")])
    assert ran.exit_code == 0, ran.output
    result = CliRunner().invoke(app, ["campaign", "results", str(playbook), "--store",
                                      str(store), "--campaign", "s1_only", "--offline",
                                      "--output", "jsonl"])
    assert result.exit_code == 0, result.output
    (firing,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert (firing["campaign"], firing["firing"], firing["rows"]) == (
        "s1_only", "2024-12-13T10:00:00+08:00", {"delivered": 2, "suppressed": 1})
