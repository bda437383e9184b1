"""The shipped playbooks do what their SOPs say over real (CDNOW) and example histories."""

from __future__ import annotations

import datetime as dt
import gzip
import json
from pathlib import Path
from typing import Any

import pytest

import sopkit

ROOT = Path(__file__).resolve().parent.parent
CDNOW = ROOT / "data" / "cdnow"


def _cdnow_slice(into: Path, customers: int) -> None:
    """events.jsonl and profiles.jsonl of CDNOW customers 1..`customers`, in `into`."""
    keep = {f"cdnow-{i:05d}" for i in range(1, customers + 1)}
    for name in ("events", "profiles"):
        with gzip.open(CDNOW / f"{name}.jsonl.gz", "rt", encoding="utf-8") as src, \
                (into / f"{name}.jsonl").open("w", encoding="utf-8") as dst:
            dst.writelines(line for line in src if json.loads(line)["customer_id"] in keep)


@pytest.fixture(scope="module")
def retail_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict[str, Any]], Any]:
    """The retail playbook over the CDNOW history of customers 1-1500, to 1998-12-31."""
    tmp = tmp_path_factory.mktemp("retail")
    _cdnow_slice(tmp, 1500)
    out = tmp / "actions.jsonl"
    with out.open("w", encoding="utf-8") as handle:
        summary = sopkit.simulate(sopkit.load_playbook(ROOT / "playbooks/retail.toml"),
                                  tmp / "events.jsonl", profiles=tmp / "profiles.jsonl",
                                  end="1998-12-31", out=handle, masked=False)
    actions = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    return actions, summary


def _profiles() -> dict[str, dict[str, Any]]:
    with gzip.open(CDNOW / "profiles.jsonl.gz", "rt", encoding="utf-8") as f:
        return {p["customer_id"]: p for p in map(json.loads, f)}


def test_birthday_coupon_three_days_ahead(retail_run: Any) -> None:
    """Every birthday coupon goes out at 09:00 three days before the customer's birthday."""
    actions, _ = retail_run
    profiles = _profiles()
    coupons = [a for a in actions if a["rule"] == "birthday_coupon"]
    assert len(coupons) > 500
    for a in coupons:
        sent = dt.date.fromisoformat(a["time"][:10])
        birthday = dt.date.fromisoformat(profiles[a["customer_id"]]["birthday"])
        target = sent + dt.timedelta(days=3)
        if (birthday.month, birthday.day) == (2, 29) and not _leap(target.year):
            assert (target.month, target.day) == (2, 28)
        else:
            assert (target.month, target.day) == (birthday.month, birthday.day)
        assert a["time"].endswith("09:00:00+08:00") or a["time"] < "1997-01-02"
        assert a["message"].startswith(profiles[a["customer_id"]]["name"])


def _leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def test_guide_three_days_after_first_purchase(retail_run: Any) -> None:
    """Each customer gets the purchase guide exactly 3 days after the first purchase."""
    actions, summary = retail_run
    guides = {a["customer_id"]: a for a in actions if a["rule"] == "post_purchase_guide"}
    assert len(guides) == summary.customers
    with gzip.open(CDNOW / "events.jsonl.gz", "rt", encoding="utf-8") as f:
        first: dict[str, str] = {}
        for event in map(json.loads, f):
            first.setdefault(event["customer_id"], event["ts"])
    for customer, action in guides.items():
        bought = dt.datetime.fromisoformat(first[customer])
        assert action["time"] == (bought + dt.timedelta(days=3)).isoformat() + "+08:00"
        assert action["trigger"] == "delayed"


def test_owner_call_after_ninety_quiet_days(retail_run: Any) -> None:
    """A repeat customer quiet for 90 days gets an owner call task, once until they buy again."""
    actions, _ = retail_run
    calls = [a for a in actions if a["rule"] == "owner_call_quiet" and a["action"] == "task"]
    assert calls
    for a in calls:
        assert a["facts"]["days_since_purchase"] == 90
        assert a["assignee"].startswith("staff-")
        assert "请电话回访" in a["note"]


def test_mild_before_severe_churn(retail_run: Any) -> None:
    """Customers drifting away get the mild recall before the severe one."""
    actions, _ = retail_run
    mild: dict[str, str] = {}
    for a in actions:
        if a["rule"] == "mild_churn_recall":
            mild.setdefault(a["customer_id"], a["time"])
    severe = [a for a in actions if a["rule"] == "severe_churn_recall"
              and a["action"] == "send" and a["status"] == "planned"]
    assert severe
    for a in severe:
        assert a["customer_id"] in mild and mild[a["customer_id"]] < a["time"]


def test_everyone_dormant_half_a_year_after_the_history(retail_run: Any) -> None:
    """Six months after CDNOW ends, every customer is in the dormant stage."""
    _, summary = retail_run
    assert summary.stages == {"dormant": summary.customers}
    assert summary.quarantined == 0


def test_membership_example_every_rule_fires() -> None:
    """Over its example history, each membership rule fires at least once."""
    summary = sopkit.simulate(sopkit.load_playbook(ROOT / "playbooks/membership.toml"),
                              ROOT / "examples/membership/events.jsonl",
                              profiles=ROOT / "examples/membership/profiles.csv",
                              end="2025-04-30")
    assert all(counts.get("planned", 0) > 0 for counts in summary.by_rule.values())


def test_vip_playbook_acts_on_rfm_segments(tmp_path: Path) -> None:
    """playbooks/vip.toml: segment tags drive a thank-you, owner calls and nudges on CDNOW."""
    _cdnow_slice(tmp_path, 1200)
    out = tmp_path / "actions.jsonl"
    with out.open("w", encoding="utf-8") as handle:
        summary = sopkit.simulate(sopkit.load_playbook(ROOT / "playbooks/vip.toml"),
                                  tmp_path / "events.jsonl",
                                  profiles=tmp_path / "profiles.jsonl", end="1998-06-30",
                                  out=handle, masked=False, engine="native")
    actions = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    fired = {a["rule"] for a in actions if a["status"] in ("planned", "deferred")}
    assert fired == {"vip_thanks", "slipping_vip_call", "develop_nudge"}
    assert sum(summary.rfm_segments.values()) > 1000
    calls = [a for a in actions if a["rule"] == "slipping_vip_call"]
    assert calls and all(("重要保持客户" in a["note"] or "重要挽留客户" in a["note"])
                         for a in calls if a["status"] != "suppressed")
    for action in actions[:200]:
        if action["rule"] == "vip_thanks":
            assert "重要价值客户" in action["facts"]["tags"]
