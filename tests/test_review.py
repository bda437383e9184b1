"""Experiments, variants, pilots and `sopkit review` (复盘)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

import sopkit
from sopkit._cli.app import app
from sopkit._offline.review import Arm, compare, newcombe, wilson
from sopkit._runtime.policy import bucket

PLAYBOOK = """
[playbook]
name = "offer"
timezone = "Asia/Shanghai"

[events.visit]
[events.purchase]

[channels.sms]
type = "sms"

[templates.offer]
text = "送您 {{ params.coupon }}"

[experiments.coupon]
holdout = 0.2
variants = ["small", "big"]
goal = { event = "purchase", within = "7d" }

[[rules]]
name = "offer"
on = "visit"
experiment = "coupon"
max_times = 1

[[rules.actions]]
type = "send"
channel = "sms"
template = "offer"
params = { coupon = "5元" }
variants = { big = { params = { coupon = "20元" } } }
"""


def _arm(customer: str) -> str:
    place = bucket("coupon", customer)
    if place < 0.2:
        return "holdout"
    return "small" if (place - 0.2) / 0.8 < 0.5 else "big"


def _history(tmp: Path, n: int, rates: dict[str, float], seed: int = 3) -> tuple[Path, Path]:
    rng = random.Random(seed)
    playbook = tmp / "offer.toml"
    playbook.write_text(PLAYBOOK, encoding="utf-8")
    events = []
    for i in range(n):
        cid = f"c{i:04d}"
        events.append({"customer_id": cid, "type": "visit", "ts": "2025-03-01T10:00:00"})
        if rng.random() < rates[_arm(cid)]:
            events.append({"customer_id": cid, "type": "purchase", "ts": "2025-03-04T10:00:00"})
        if rng.random() < 0.3:  # too late to count
            events.append({"customer_id": cid, "type": "purchase", "ts": "2025-03-20T10:00:00"})
    events.sort(key=lambda e: (e["ts"], e["customer_id"]))
    path = tmp / "events.jsonl"
    path.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in events),
                    encoding="utf-8")
    return playbook, path


def test_wilson_and_newcombe_match_the_published_examples() -> None:
    """81/263 and 56/70 vs 48/80 give the intervals in Newcombe (1998)."""
    assert [round(x, 4) for x in wilson(81, 263)] == [0.2553, 0.3662]
    assert [round(x, 4) for x in newcombe(56, 70, 48, 80)] == [0.0524, 0.3339]


def test_a_small_arm_is_called_too_small_in_words() -> None:
    """Fewer than 30 customers, or too few conversions, says so instead of a verdict."""
    verdict = compare(Arm("big", 12, 6), Arm("holdout", 400, 40)).verdict
    assert verdict.startswith("sample too small to tell: big: only 12 customers")
    verdict = compare(Arm("big", 300, 2), Arm("holdout", 300, 40)).verdict
    assert "only 2 conversions" in verdict


def test_variants_split_the_treated_customers_and_send_their_own_params(tmp_path: Path) -> None:
    """Each customer's record names its arm; the big variant sends its own coupon."""
    playbook, events = _history(tmp_path, 300, {"holdout": 0, "small": 0, "big": 0})
    rt = sopkit.Runtime(sopkit.load_playbook(playbook), engine="native")
    records = []
    for line in events.read_text(encoding="utf-8").splitlines():
        records.extend(rt.ingest(json.loads(line)))
    by_arm: dict[str, list[sopkit.Action]] = {}
    for action in records:
        by_arm.setdefault(action.details["variant"], []).append(action)
        assert action.details["variant"] == _arm(action.customer_id)
    assert {a.status for a in by_arm["holdout"]} == {"holdout"}
    assert {a.details["message"] for a in by_arm["big"]} == {"送您 20元"}
    assert {a.details["message"] for a in by_arm["small"]} == {"送您 5元"}
    assert 0.12 < len(by_arm["holdout"]) / 300 < 0.28
    assert abs(len(by_arm["big"]) - len(by_arm["small"])) < 60


def test_review_finds_a_real_uplift_and_no_uplift_where_there_is_none(tmp_path: Path) -> None:
    """A variant that converts 3x the holdout is called better; an equal one is not."""
    playbook, events = _history(tmp_path, 2000, {"holdout": 0.1, "small": 0.1, "big": 0.3})
    result = CliRunner().invoke(app, ["review", str(playbook), "--events", str(events),
                                      "--experiment", "coupon", "--output", "jsonl"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    verdicts = {c["variant"]: c["verdict"] for c in data["comparisons"]}
    assert verdicts["big"].startswith("better than holdout")
    assert verdicts["small"].startswith("no clear difference")
    arms = {a["arm"]: a for a in data["arms"]}
    assert sum(a["customers"] for a in arms.values()) == 2000
    assert data["window_days"] == 7


def test_a_pilot_rule_runs_on_its_sample_only(tmp_path: Path) -> None:
    """`sample = 0.1` sends to about a tenth; the others are recorded as pilot holdout."""
    text = PLAYBOOK.replace('experiment = "coupon"\n', "sample = 0.1\n").replace(
        'variants = { big = { params = { coupon = "20元" } } }\n', "")
    playbook = tmp_path / "pilot.toml"
    playbook.write_text(text, encoding="utf-8")
    rt = sopkit.Runtime(sopkit.load_playbook(playbook), engine="native")
    records = []
    for i in range(1000):
        records += rt.ingest({"customer_id": f"p{i}", "type": "visit",
                              "ts": "2025-03-01T10:00:00"})
    sent = [r for r in records if r.status == "planned"]
    assert 60 < len(sent) < 140
    held = [r for r in records if r.status == "holdout"]
    assert len(sent) + len(held) == 1000
    assert held[0].details["reason"] == "pilot: outside the 10% sample of rule offer"


@pytest.mark.parametrize("bad, message", [
    ('variants = ["small", "big"]', 'variants = ["small", "small"]'),
    ('goal = { event = "purchase"', 'goal = { event = "purchse"'),
])
def test_check_names_bad_variants_and_goals(tmp_path: Path, bad: str, message: str) -> None:
    """A repeated variant or an unknown goal event is a located problem."""
    path = tmp_path / "bad.toml"
    path.write_text(PLAYBOOK.replace(bad, message), encoding="utf-8")
    with pytest.raises(sopkit.PlaybookError) as err:
        sopkit.load_playbook(path)
    text = str(err.value)
    assert "experiments.coupon" in text
    assert ("repeated" in text) or ("did you mean 'purchase'" in text)
