"""[clv] facts in rules: refitted BG/NBD and Gamma-Gamma, per-customer p_alive and more."""

from __future__ import annotations

import datetime as dt
import gzip
import json
from pathlib import Path

import numpy as np
import pytest

import sopkit
from sopkit._stats import clv as _clv

ROOT = Path(__file__).parent.parent
PLAYBOOK = Path(__file__).parent / "data" / "clv" / "cdnow_clv.toml"
AT = "1997-07-01T12:00:00+08:00"


@pytest.fixture(scope="module")
def replay() -> tuple[sopkit.Runtime, list[sopkit.Action], list[dict[str, str]]]:
    """The CDNOW history up to AT through the [clv] playbook."""
    rt = sopkit.Runtime(sopkit.load_playbook(PLAYBOOK), engine="native")
    at = rt.calendar.parse(AT)
    actions, events = [], []
    with gzip.open(ROOT / "data/cdnow/events.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            event = json.loads(line)
            if rt.calendar.parse(event["ts"]) > at:
                break
            actions += rt.ingest(event)
            events.append(event)
    actions += rt.advance(AT)
    return rt, actions, events


def test_the_refit_matches_a_fit_on_an_independent_summary(replay: tuple) -> None:
    """The last refit's BG/NBD parameters equal a fit on (x, t_x, T) computed here."""
    rt, _, events = replay
    anchor = dt.date(2024, 1, 1).toordinal()  # refits every 30 days counted from here
    refit_day = next(dt.date.fromordinal(d) for d in range(dt.date(1997, 7, 1).toordinal(), 0, -1)
                     if (anchor - d) % 30 == 0)
    assert rt.clv_params is not None
    days: dict[str, set[dt.date]] = {}
    for event in events:
        local = dt.datetime.fromisoformat(event["ts"]) - dt.timedelta(hours=9)
        if local.date() < refit_day:
            days.setdefault(event["customer_id"], set()).add(local.date())
    rows = [(len(d) - 1, (max(d) - min(d)).days / 7, (refit_day - min(d)).days / 7)
            for d in days.values()]
    x, t_x, T = (np.array(c, dtype=float) for c in zip(*rows, strict=True))
    mine = _clv.fit_bgnbd(x, t_x, T).params
    assert rt.clv_params[0].as_tuple() == pytest.approx(mine.as_tuple(), rel=1e-4)


def test_a_customers_facts_are_the_models_outlook(replay: tuple) -> None:
    """p_alive and expected purchases of customers equal the model's formulas."""
    rt, _, _ = replay
    checked = 0
    for cid in sorted(rt.customer_ids())[:300]:
        cs = rt.customers[cid]
        if cs.purchases is None or cs.clv is None:
            continue
        view = rt.state(cid).metrics
        assert 0 <= view["p_alive"] <= 1 and view["expected_purchases"] >= 0
        assert 0 <= view["p_no_purchase"] <= 1
        checked += 1
        if cs.purchases[2] > 1:  # a repeat buyer: p_alive < 1 is possible
            assert view["expected_spend"] is not None and view["expected_spend"] > 0
    assert checked > 200
    from sopkit._runtime.clvfacts import facts_of, one

    rows = [(2.0, 3.0, 30.0, 15.0), (0.0, 0.0, 20.0, 0.0), (5.0, 25.0, 26.0, 40.0)]
    vectorised = facts_of(_clv, rt.clv_params, rows, 90 / 7)
    scalar = [one(_clv, rt.clv_params, row, 90 / 7) for row in rows]
    assert vectorised == scalar  # the refit and a purchase compute the same facts


def test_a_rule_on_p_alive_recalls_the_likely_lost(replay: tuple) -> None:
    """Customers whose p_alive fell under 0.3 get the recall, with the facts in the message."""
    rt, actions, _ = replay
    recalls = [a for a in actions if a.rule == "likely_lost_recall"]
    assert len(recalls) > 100
    for action in recalls[:50]:
        facts = rt.state(action.customer_id).metrics
        assert facts["purchases_total"] >= 2
        assert action.details["message"].startswith("老客户召回：在店概率 0.")
        assert action.facts["tags"] and "可能已流失" in action.facts["tags"]


def test_replays_are_byte_identical(replay: tuple) -> None:
    """Two replays of the same history give the same action records."""
    _, first, events = replay
    rt = sopkit.Runtime(sopkit.load_playbook(PLAYBOOK), engine="native")
    second = []
    for event in events:
        second += rt.ingest(event)
    second += rt.advance(AT)
    assert [a.to_json() for a in second] == [a.to_json() for a in first]


def test_check_names_a_missing_amount_field(tmp_path: Path) -> None:
    """[clv] amount must be a number field of the event type."""
    path = tmp_path / "bad.toml"
    path.write_text(PLAYBOOK.read_text(encoding="utf-8").replace('amount = "amount"',
                                                                 'amount = "amout"'),
                    encoding="utf-8")
    with pytest.raises(sopkit.PlaybookError) as err:
        sopkit.load_playbook(path)
    assert "clv.amount" in str(err.value) and "did you mean 'amount'" in str(err.value)
