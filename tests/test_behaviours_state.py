"""Stored customer state (sopkit/_runtime/state.py): what a live run writes reads back unchanged."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

import sopkit

ROOT = Path(__file__).parent.parent
GOLDEN = Path(__file__).parent / "data" / "state"
PLAYBOOKS = {"retail": ROOT / "playbooks/retail.toml", "vip": ROOT / "playbooks/vip.toml",
             "clv": Path(__file__).parent / "data/clv/cdnow_clv.toml"}


def _cdnow(n: int) -> list[dict[str, Any]]:
    with gzip.open(ROOT / "data/cdnow/events.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line) for _, line in zip(range(n), f, strict=False)]


def _extra() -> list[dict[str, Any]]:
    """z1 with most of what a state can hold: profile, owner, consent, a complaint (a sticky
    tag), event ids; z2 with a delayed guide message still pending."""
    return [
        {"customer_id": "z1", "type": "profile", "ts": "1997-01-20T10:00:00",
         "name": "王芳", "phone": "13800000000", "birthday": "1990-02-01", "owner": "s1"},
        {"customer_id": "z1", "type": "purchase", "ts": "1997-01-20T11:00:00",
         "amount": "320.50", "quantity": 2, "event_id": "e-1"},
        {"customer_id": "z1", "type": "purchase", "ts": "1997-01-21T11:00:00",
         "amount": "12.00", "quantity": 1, "event_id": "e-2"},
        {"customer_id": "z1", "type": "complaint", "ts": "1997-01-21T12:00:00"},
        {"customer_id": "z1", "type": "opt_out", "ts": "1997-01-21T13:00:00",
         "channel": "sms"},
        {"customer_id": "z2", "type": "profile", "ts": "1997-01-22T09:00:00", "name": "李雷"},
        {"customer_id": "z2", "type": "purchase", "ts": "1997-01-22T10:00:00",
         "amount": "20.00", "quantity": 1},
    ]


def _replay(name: str, n: int) -> sopkit.Runtime:
    rt = sopkit.Runtime(sopkit.load_playbook(PLAYBOOKS[name]), engine="native")
    events = _cdnow(n) + (_extra() if name == "retail" else [])
    for event in sorted(events, key=lambda e: e["ts"]):
        rt.ingest(event)
    return rt


def _restored(name: str, rt: sopkit.Runtime) -> sopkit.Runtime:
    again = sopkit.Runtime(sopkit.load_playbook(PLAYBOOKS[name]), engine="native")
    blobs = [(cid, rt.dump_customer(cid)) for cid in sorted(rt.customer_ids())]
    assert again.restore(rt.dump_clock(), blobs) == len(blobs)
    return again


@pytest.fixture(scope="module")
def retail() -> sopkit.Runtime:
    """Retail after 1,500 CDNOW events and customer z1's story, actions still pending."""
    return _replay("retail", 1500)


def test_a_customers_stored_state_is_the_documented_json(retail: sopkit.Runtime) -> None:
    """z1's and z2's stored states are exactly the golden JSON (format 3, keyed by names,
    empty items left out, z2's pending guide with its due time)."""
    stored = {cid: json.loads(retail.dump_customer(cid)) for cid in ("z1", "z2")}
    golden = json.loads((GOLDEN / "retail-z.json").read_text(encoding="utf-8"))
    assert stored == golden


def test_a_state_in_the_documented_format_loads_and_its_pending_action_goes_out() -> None:
    """The golden JSON (what docs/live.md describes) loads into a new run, which sends z2's
    pending guide by SMS on 1997-01-25 and nothing to z1, who complained."""
    rt = sopkit.Runtime(sopkit.load_playbook(PLAYBOOKS["retail"]), engine="native")
    golden = json.loads((GOLDEN / "retail-z.json").read_text(encoding="utf-8"))
    blobs = [(cid, json.dumps(data).encode()) for cid, data in golden.items()]
    assert rt.restore(None, blobs) == 2
    assert rt.state("z1").owner == "s1" and "投诉过" in rt.state("z1").tags
    sent = [a.to_json() for a in rt.advance("1997-01-26T12:00:00")]
    assert [(a["customer_id"], a["rule"], a["channel"]) for a in sent] == \
        [("z2", "post_purchase_guide", "sms")]


def _clv_after_refit() -> sopkit.Runtime:
    """The [clv] playbook after 2,000 events and its first refit (1997-01-22)."""
    rt = _replay("clv", 2000)
    rt.advance("1997-01-23")
    assert rt.clv_params is not None
    return rt


@pytest.mark.parametrize("name", ["retail", "vip", "clv"])
def test_every_customer_and_the_clock_read_back_byte_for_byte(name: str) -> None:
    """Restored into a new Runtime, every customer and the clock dump to the same bytes."""
    rt = _clv_after_refit() if name == "clv" else _replay(name, 3000)
    again = _restored(name, rt)
    assert again.dump_clock() == rt.dump_clock()
    for cid in sorted(rt.customer_ids()):
        assert again.dump_customer(cid) == rt.dump_customer(cid), cid


def test_a_restarted_rfm_run_takes_the_same_actions() -> None:
    """Stopped and restored mid-history, the RFM playbook decides the same actions for the
    rest of the history as a run that never stopped."""
    events = _cdnow(5000)
    first = _replay("vip", 2500)
    second = _restored("vip", first)

    def rest(rt: sopkit.Runtime) -> list[dict[str, Any]]:
        out = [a.to_json() for e in events[2500:] for a in rt.ingest(e)]
        return out + [a.to_json() for a in rt.advance("1997-04-01")]

    expected = rest(first)
    assert expected  # the rest of the history does decide something
    assert rest(second) == expected


def test_a_restarted_clv_run_takes_the_same_actions() -> None:
    """Restored after a CLV refit, the run scores customers with the same fitted models and
    sends the same win-back messages as a run that never stopped."""
    later = [e for e in _cdnow(9000) if "1997-01-23" <= e["ts"] < "1997-02-03"]
    first = _clv_after_refit()
    second = _restored("clv", first)

    def rest(rt: sopkit.Runtime) -> list[dict[str, Any]]:
        return [a.to_json() for e in later for a in rt.ingest(e)]

    expected = rest(first)
    assert expected
    assert rest(second) == expected


def test_a_restarted_retail_run_sends_what_was_pending_and_the_same_afterwards() -> None:
    """Restored mid-history, retail sends z2's pending guide and every later action exactly
    as a run that never stopped."""
    first = _replay("retail", 1500)
    second = _restored("retail", first)
    expected = [a.to_json() for a in first.advance("1997-03-01")]
    assert ("z2", "post_purchase_guide") in {(a["customer_id"], a["rule"]) for a in expected}
    assert [a.to_json() for a in second.advance("1997-03-01")] == expected


def test_a_rule_armed_by_a_deploy_counts_its_first_message_as_occurrence_1(
        tmp_path: Path) -> None:
    """A rule added by `sopkit migrate` is armed for customers who already qualify, without
    an attempt; when such a customer qualifies again later, the message's key says it is
    the rule's first occurrence for them (…:vip:c1:1:0), as for any other customer."""
    from test_migrate import THANKS, VIP, _cli, _events, _playbook, _run, _sent

    events = _events(tmp_path, [("c1", "2025-01-01T10:00:00", "50")])
    v1 = _playbook(tmp_path, "1", THANKS.format(name="thanks", delay="1d", extra=""))
    v2 = _playbook(tmp_path, "2", THANKS.format(name="thanks", delay="1d", extra="")
                   + VIP.format(when="days_since_purchase >= 10", extra=""))
    store = tmp_path / "live.db"
    assert _run(v1, store, "2025-01-25T00:00:00", events).exit_code == 0
    deployed = _cli("migrate", str(v2), "--store", str(store), "--output", "jsonl")
    assert deployed.exit_code == 0, deployed.output
    again = _events(tmp_path, [("c1", "2025-01-01T10:00:00", "50"),  # the same file, grown
                               ("c1", "2025-02-01T10:00:00", "50")])
    assert _run(v2, store, "2025-02-20T00:00:00", again).exit_code == 0
    vip = [m["key"] for m in _sent(tmp_path) if m["rule"] == "vip"]
    assert vip == ["club:2:vip:c1:1:0"]
