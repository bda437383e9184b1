"""A slightly late event (several producers, a few milliseconds apart) is applied at the
clock, not quarantined: in the Runtime, `simulate`, `explain` and `sopkit serve` alike."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from http_receiver import Receiver
from live_helpers import ENV, shop_playbook
from serve_helpers import Served
from typer.testing import CliRunner

import sopkit
from sopkit._cli.app import app

ROOT = Path(__file__).resolve().parent.parent
INGEST, ADMIN = "ingest-key-late-01", "admin-key-late-02"
KEYS = {"SOPKIT_API_KEYS": f"ingest:{INGEST},admin:{ADMIN}"}


def _buy(customer: str, ts: str) -> dict[str, Any]:
    return {"customer_id": customer, "type": "purchase", "ts": ts, "amount": "10"}


def _profile(customer: str) -> dict[str, Any]:
    return {"customer_id": customer, "type": "profile", "ts": "2025-01-09T10:00:00",
            "name": f"顾客{customer}"}


def test_the_runtime_applies_an_event_late_by_at_most_its_lateness_at_the_clock() -> None:
    """Runtime(lateness=60): an event 30 s behind the clock counts, at the clock; one 90 s
    behind is refused as out of order and changes nothing."""
    loaded = sopkit.load_playbook(ROOT / "tests/data/live/shop.toml")
    rt = sopkit.Runtime(loaded, engine="native", lateness=60)
    assert [a.rule for a in rt.ingest(_buy("c1", "2025-01-09T12:00:30"))] == ["thanks"]
    late = rt.ingest(_buy("c1", "2025-01-09T12:00:00"))
    clock = rt.now
    assert clock is not None and clock.isoformat() == "2025-01-09T12:00:30+08:00"
    assert [(a.rule, a.ts) for a in late] == [("thanks", int(clock.timestamp()))]
    assert rt.state("c1").metrics["purchases"] == 2
    with pytest.raises(sopkit.EventError, match="out of order"):
        rt.ingest(_buy("c1", "2025-01-09T11:59:00"))
    assert rt.state("c1").metrics["purchases"] == 2
    strict = sopkit.Runtime(loaded, engine="native")  # the default: 0, a sorted history
    strict.ingest(_buy("c1", "2025-01-09T12:00:30"))
    with pytest.raises(sopkit.EventError, match="out of order"):
        strict.ingest(_buy("c1", "2025-01-09T12:00:29"))


def test_a_lateness_below_zero_is_a_usage_error() -> None:
    """Runtime(lateness=-1) is refused with a UsageError saying what it must be."""
    loaded = sopkit.load_playbook(ROOT / "tests/data/live/shop.toml")
    with pytest.raises(sopkit.UsageError, match="whole number of seconds >= 0"):
        sopkit.Runtime(loaded, lateness=-1)


def _history(tmp_path: Path) -> Path:
    events = [_profile("c1"), _profile("c2"), _buy("c1", "2025-01-09T12:00:00.004"),
              _buy("c2", "2025-01-09T11:59:59.998"),  # another producer, 6 ms earlier
              _buy("c1", "2025-01-09T12:00:05"), _buy("c2", "2025-01-09T11:58:00")]
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in events),
                    encoding="utf-8")
    return path


def _simulate(tmp_path: Path, *args: str) -> tuple[list[dict[str, Any]], list[str]]:
    out, jail = tmp_path / "actions.jsonl", tmp_path / "quarantine.jsonl"
    result = CliRunner().invoke(app, ["simulate", str(tmp_path / "shop.toml"), "--events",
                                      str(_history(tmp_path)), "--out", str(out),
                                      "--quarantine", str(jail), "--output", "jsonl", *args])
    assert result.exit_code == 0, result.output
    reasons = [json.loads(line)["reason"] for line in jail.read_text().splitlines()] \
        if jail.exists() else []
    return [json.loads(line) for line in out.read_text().splitlines()], reasons


def test_simulate_applies_a_late_event_as_run_does_and_0s_keeps_the_strict_order(
        tmp_path: Path) -> None:
    """simulate's default --lateness (60s, as run and serve) applies a purchase stamped
    6 ms before the one read before it; 0s quarantines it; two workers agree with one."""
    shop_playbook(tmp_path, "http://127.0.0.1:9/hook")
    actions, reasons = _simulate(tmp_path)
    thanks = [(a["customer_id"], a["time"]) for a in actions if a["rule"] == "thanks"]
    assert thanks == [("c1", "2025-01-09T12:00:00+08:00"), ("c2", "2025-01-09T12:00:00+08:00"),
                      ("c1", "2025-01-09T12:00:05+08:00")]
    assert len(reasons) == 1 and reasons[0].startswith("out of order")  # 2 minutes late
    split, split_reasons = _simulate(tmp_path, "--workers", "2")
    assert split == actions and split_reasons == reasons
    strict, strict_reasons = _simulate(tmp_path, "--lateness", "0s")
    assert [a["customer_id"] for a in strict if a["rule"] == "thanks"] == ["c1", "c1"]
    assert len(strict_reasons) == 2


def test_serve_applies_an_event_behind_other_events_but_not_one_behind_its_clock(
        tmp_path: Path) -> None:
    """Served with --lateness 1d: a purchase an hour behind an earlier request's is applied
    at the clock and thanked; one behind where the system clock moved time is quarantined;
    the timeline says what the loop did, the purchase's stamp beside the time it was applied
    at, as `explain --store` does."""
    with Receiver() as rx:
        playbook = shop_playbook(tmp_path, rx.url + "/hook")
        store = tmp_path / "live.db"
        jail = tmp_path / "jail.jsonl"
        auth = {"Authorization": f"Bearer {INGEST}"}
        with Served(playbook, store, "--lateness", "1d", clock="2025-01-10T00:00:00",
                    env={**ENV, **KEYS}, quarantine=jail) as server:
            for body in ([_profile("c1"), _profile("c2"), _profile("c3"),
                          _buy("c1", "2025-01-09T12:00:00")],
                         _buy("c2", "2025-01-09T11:00:00"),  # behind c1's: applied at 12:00
                         _buy("c3", "2025-01-08T23:00:00")):  # behind the clock's tick
                accepted = server.post("/v1/events", body, headers=auth)
                assert accepted.status_code == 202, accepted.text
                server.applied(accepted.json()["last_seq"])
            admin = {"Authorization": f"Bearer {ADMIN}"}
            rows = httpx.get(server.url + "/v1/outbox?unmasked=true", headers=admin,
                             timeout=30).json()["rows"]
            timeline = httpx.get(server.url + "/v1/customers/c2/timeline?unmasked=true",
                                 headers=admin, timeout=30).json()
            code, err = server.stop()
            assert code == 0, err
    thanked = sorted((r["customer_id"], r["due_at"]) for r in rows if r["rule"] == "thanks")
    noon = int(dt.datetime.fromisoformat("2025-01-09T12:00:00+08:00").timestamp())
    assert thanked == [("c1", noon), ("c2", noon)]  # c2's at the clock, not at 11:00
    refused = [json.loads(line) for line in jail.read_text(encoding="utf-8").splitlines()]
    assert [(r["record"]["customer_id"], r["reason"][:12]) for r in refused] == \
        [("c3", "out of order")]
    bought = [e for e in timeline["entries"] if e["kind"] == "event"
              and e["data"]["type"] == "purchase"]
    assert [(e["time"], e["data"]["stamped"]) for e in bought] == \
        [("2025-01-09T12:00:00+08:00", "2025-01-09T11:00:00+08:00")]
    assert bought[0]["text"].endswith("(stamped 2025-01-09T11:00:00+08:00, applied late)")
    fired = [e for e in timeline["entries"] if e["kind"] == "action"]
    assert [(e["data"]["rule"], e["time"]) for e in fired] == \
        [("thanks", "2025-01-09T12:00:00+08:00")]
    explained = CliRunner().invoke(app, ["explain", str(playbook), "--store", str(store),
                                         "--quarantine", str(jail), "--customer", "c2",
                                         "--at", timeline["as_of"], "--unmasked",
                                         "--output", "jsonl"], env=ENV)
    assert explained.exit_code == 0, explained.output
    assert [json.loads(line) for line in explained.output.splitlines()] == timeline["entries"]
