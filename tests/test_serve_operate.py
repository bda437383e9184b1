"""`sopkit serve`'s operate endpoints against one real server: a customer's timeline, a dead
letter retried, a campaign preview, a dry run and the hand-overs, each agreeing with the CLI
command of the same job on the same store."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from http_receiver import Receiver, Reply
from live_helpers import ENV, shop_playbook
from serve_helpers import Served
from typer.testing import CliRunner

from sopkit._cli.app import app

INGEST, READ, ADMIN = "ingest-key-0001", "read-key-0002", "admin-key-0003"
KEYS = {"SOPKIT_API_KEYS": f"ingest:{INGEST},read:{READ},admin:{ADMIN}"}
PHONE = "13812345678"
CLOCK = "2025-01-05T00:00:00"  # after the events: what is due is sent (wall-clock lateness 30d)
CAMPAIGN = '''
[[campaigns]]
name = "double12"
at = "2025-12-12T10:00"
audience = "purchases >= 1"
actions = [{ type = "send", channel = "hook", template = "thanks" }]
'''
EVENTS: list[dict[str, Any]] = [
    {"type": "profile", "customer_id": PHONE, "ts": "2025-01-02T09:00:00", "name": "王芳",
     "phone": PHONE, "owner": "zhang"},
    {"type": "profile", "customer_id": "c2", "ts": "2025-01-02T09:00:00", "name": "李雷",
     "owner": "li"},
    {"customer_id": PHONE, "type": "purchase", "ts": "2025-01-02T10:00:00", "amount": "20"},
    {"customer_id": "c2", "type": "purchase", "ts": "2025-01-02T11:00:00", "amount": "5"},
    {"customer_id": PHONE, "type": "purchase", "ts": "2025-01-03T10:00:00", "amount": "7"},
    {"type": "staff_departed", "staff": "zhang", "ts": "2025-01-04T18:00:00"},
]

LATE = {"customer_id": PHONE, "type": "purchase", "ts": "2024-12-01T10:00:00", "amount": "1"}


@dataclass
class Shop:
    server: Served
    receiver: Receiver
    playbook: Path
    store: Path
    events: Path

    def get(self, path: str, key: str = READ) -> httpx.Response:
        return httpx.get(self.server.url + path, headers={"Authorization": f"Bearer {key}"},
                         timeout=30)

    def post(self, path: str, key: str = ADMIN) -> httpx.Response:
        return httpx.post(self.server.url + path, headers={"Authorization": f"Bearer {key}"},
                          timeout=30)

    def cli(self, *args: str) -> Any:
        return CliRunner().invoke(app, [*args], env=ENV)

    def until(self, check: Any, what: str) -> Any:
        for _ in range(300):  # polling a real server, a bounded number of times
            found = check()
            if found:
                return found
            time.sleep(0.05)
        raise AssertionError(f"never: {what}")


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    tmp = tmp_path_factory.mktemp("operate")
    with Receiver() as rx:
        rx.script(Reply(400, body="no such contact"), path="/hook")  # the first send: dead
        playbook = shop_playbook(tmp, rx.url + "/hook", CAMPAIGN)
        store = tmp / "live.db"
        events = tmp / "events.jsonl"
        events.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in EVENTS),
                          encoding="utf-8")
        with Served(playbook, store, "--lateness", "30d", clock=CLOCK, env=KEYS) as server:
            shop = Shop(server, rx, playbook, store, events)
            accepted = server.post("/v1/events", EVENTS,
                                   headers={"Authorization": f"Bearer {INGEST}"})
            assert accepted.status_code == 202, accepted.text
            server.applied(accepted.json()["last_seq"])
            late = server.post("/v1/events", LATE, headers={"Authorization": f"Bearer {INGEST}"})
            server.applied(late.json()["last_seq"])  # quarantined by the loop: out of order
            shop.until(lambda: shop.get("/v1/outbox?status=dead").json()["rows"],
                       "the first send is a dead letter")
            yield shop
            code, err = server.stop()
            assert code == 0, err


def test_the_timeline_names_the_rule_that_fired_as_explain_does(shop: Shop) -> None:
    """GET /v1/customers/{id}/timeline is `sopkit explain` over what the server applied:
    the purchase, the thank-you it fired, masked for a read key, in full for an admin."""
    answer = shop.get(f"/v1/customers/{PHONE}/timeline")
    assert answer.status_code == 200, answer.text
    found = answer.json()
    assert found["customer_id"] == "138****5678" and found["history_complete"] is True
    assert "quarantine" not in {e["kind"] for e in found["entries"]}  # the late one: not applied
    fired = [e for e in found["entries"] if e["kind"] == "action"]
    assert [e["data"]["rule"] for e in fired][:2] == ["thanks", "thanks"]
    assert "王芳，感谢第 1 次购买！" in fired[0]["text"]
    assert PHONE not in answer.text
    explained = shop.cli("explain", str(shop.playbook), "--events", str(shop.events),
                         "--customer", PHONE, "--at", found["as_of"], "--send-from",
                         "2000-01-01", "--output", "jsonl")
    assert explained.exit_code == 0, explained.output
    assert found["entries"] == [json.loads(line) for line in explained.output.splitlines()]
    full = shop.get(f"/v1/customers/{PHONE}/timeline?unmasked=true", ADMIN).json()
    assert full["customer_id"] == PHONE and PHONE in json.dumps(full, ensure_ascii=False)
    early = shop.get(f"/v1/customers/{PHONE}/timeline?at=2025-01-02T12:00:00").json()
    assert [e["data"]["rule"] for e in early["entries"] if e["kind"] == "action"] == \
        ["thanks"]  # the second purchase is later
    assert shop.get("/v1/customers/王%00x/timeline").status_code == 404
    missing = shop.get("/v1/customers/nobody/timeline")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert shop.get(f"/v1/customers/{PHONE}/timeline", INGEST).status_code == 403


def test_a_dead_letter_retried_over_the_api_is_delivered(shop: Shop) -> None:
    """POST /v1/outbox/{id}/retry (admin) puts a dead row back and the loop delivers it;
    a row that is not dead is 409, an unknown or impossible id 404 or 400, never 5xx."""
    (dead,) = shop.get("/v1/outbox?status=dead").json()["rows"]
    assert shop.post(f"/v1/outbox/{dead['id']}/retry", READ).status_code == 403
    retried = shop.post(f"/v1/outbox/{dead['id']}/retry")
    assert retried.status_code == 200, retried.text
    assert retried.json()["requeued"] == 1
    row = shop.until(lambda: [r for r in shop.get("/v1/outbox?limit=1000").json()["rows"]
                              if r["id"] == dead["id"] and r["status"] == "delivered"],
                     "the retried row is delivered")
    assert row[0]["key"] == dead["key"]
    assert len([r for r in shop.receiver.requests if r.path == "/hook"]) == 4  # 3 + again
    again = shop.post(f"/v1/outbox/{dead['id']}/retry")
    assert again.status_code == 409 and "not dead" in again.json()["detail"]
    assert again.headers["content-type"] == "application/problem+json"
    assert shop.post("/v1/outbox/999999/retry").status_code == 404
    assert shop.post(f"/v1/outbox/{2**63}/retry").status_code == 404
    for bad in ("abc", "9" * 40, "-1", "１"):
        assert shop.post(f"/v1/outbox/{bad}/retry").status_code == 400, bad


def test_a_campaign_preview_is_what_the_cli_previews(shop: Shop) -> None:
    """GET /v1/campaigns/{name}/preview gives reach and messages as `campaign preview
    --store` does; an unknown campaign is 404 naming the nearest one."""
    at = "2025-12-12T10:00:00+08:00"
    answer = shop.get(f"/v1/campaigns/double12/preview?at={at.replace('+', '%2B')}")
    assert answer.status_code == 200, answer.text
    found = answer.json()
    assert found["audience"] == 2 and PHONE not in answer.text
    assert found["messages"][0]["message"].endswith("次购买！")
    cli = shop.cli("campaign", "preview", str(shop.playbook), "double12", "--at", at,
                   "--store", str(shop.store), "--output", "jsonl")
    assert cli.exit_code == 0, cli.output
    assert found == json.loads(cli.output.splitlines()[-1])
    unknown = shop.get("/v1/campaigns/double21/preview")
    assert unknown.status_code == 404 and "double12" in unknown.json()["detail"]
    assert shop.get("/v1/campaigns/double12/preview?at=soon").status_code == 400
    assert shop.get("/v1/campaigns/double12/preview", INGEST).status_code == 403
    for sample in ("9" * 5000, "-1", "1001", "x"):
        assert shop.get(f"/v1/campaigns/double12/preview?sample={sample}").status_code == 400


def test_a_dry_run_is_what_the_cli_dry_run_shows(shop: Shop) -> None:
    """GET /v1/dry-run lists what would go out at `at` (the quiet follow-ups), as
    `sopkit dry-run --output jsonl` does, sending nothing."""
    at = "2025-01-20T10:00:00+08:00"
    answer = shop.get(f"/v1/dry-run?at={at.replace('+', '%2B')}&window=0")
    assert answer.status_code == 200, answer.text
    found = answer.json()
    cli = shop.cli("dry-run", str(shop.playbook), "--store", str(shop.store), "--at", at,
                   "--window", "0", "--output", "jsonl")
    assert cli.exit_code == (3 if found["would_send"] else 0), cli.output
    lines = [json.loads(line) for line in cli.output.splitlines() if line.startswith("{")]
    assert found["items"] == lines
    assert {item["message"]["rule"] for item in found["items"]} >= {"quiet"}
    assert PHONE not in answer.text
    assert shop.get("/v1/dry-run?window=soon").status_code == 400
    replay = shop.get("/v1/dry-run").json()  # the server's fixed clock, as the CLI's default
    assert replay["replay_clock"] is True and replay["at"] == "2025-01-05T00:00:00+08:00"
    assert any("?at=" in notice for notice in replay["notices"])
    same = shop.cli("dry-run", str(shop.playbook), "--store", str(shop.store), "--output",
                    "jsonl")
    assert replay["items"] == [json.loads(line) for line in same.output.splitlines()
                               if line.startswith("{")]
    assert shop.get("/v1/dry-run?window=400d").status_code == 400
    assert shop.get("/v1/dry-run?at=2999-01-01").status_code == 400  # too far: refused
    assert shop.get("/v1/dry-run", INGEST).status_code == 403


def test_the_hand_overs_are_what_handover_status_lists(shop: Shop) -> None:
    """GET /v1/handover lists the departed owner's customers as `handover status --all`."""
    answer = shop.get("/v1/handover?all=true")
    assert answer.status_code == 200, answer.text
    found = answer.json()
    assert found["customers"] == 1
    cli = shop.cli("handover", "status", str(shop.playbook), "--store", str(shop.store),
                   "--all", "--output", "jsonl")
    assert cli.exit_code == (3 if found["not_yet"] else 0), cli.output
    assert found["lines"] == [json.loads(line) for line in cli.output.splitlines()]
    assert found["lines"][0]["customer_id"] == "138****5678"
    assert shop.get("/v1/handover", INGEST).status_code == 403


def test_without_history_the_timeline_says_so_and_a_later_history_is_incomplete(
        tmp_path: Path) -> None:
    """`serve --no-history` deletes applied records: the timeline answers 409 and `explain
    --store` exits 2; served again with --history, the timeline says its history does not
    reach back to the start."""
    playbook = shop_playbook(tmp_path, "http://127.0.0.1:9/hook")
    store = tmp_path / "live.db"
    with Served(playbook, store, "--no-history", env=KEYS) as server:
        accepted = server.post("/v1/events", EVENTS[:3],
                               headers={"Authorization": f"Bearer {INGEST}"})
        server.applied(accepted.json()["last_seq"])
        refused = httpx.get(f"{server.url}/v1/customers/{PHONE}/timeline",
                            headers={"Authorization": f"Bearer {READ}"})
        assert refused.status_code == 409 and "--no-history" in refused.json()["detail"]
        assert server.stop()[0] == 0
    explained = CliRunner().invoke(app, ["explain", str(playbook), "--store", str(store),
                                         "--customer", PHONE], env=ENV)
    assert explained.exit_code == 2 and "--history" in explained.output  # nothing kept
    with Served(playbook, store, env=KEYS) as server:
        accepted = server.post("/v1/events", EVENTS[4],
                               headers={"Authorization": f"Bearer {INGEST}"})
        server.applied(accepted.json()["last_seq"])
        found = httpx.get(f"{server.url}/v1/customers/{PHONE}/timeline",
                          headers={"Authorization": f"Bearer {READ}"}).json()
        assert found["history_complete"] is False
        assert [e["data"]["type"] for e in found["entries"] if e["kind"] == "event"] == \
            ["purchase"]  # only what was kept: the second purchase
        assert server.stop()[0] == 0


def test_run_with_events_marks_a_served_history_incomplete(tmp_path: Path) -> None:
    """`sopkit run --events` feeds records the served history never holds: it says so."""
    from sopkit._live.inbox import HISTORY
    from sopkit._live.openstore import open_store

    playbook = shop_playbook(tmp_path, "http://127.0.0.1:9/hook")
    store = tmp_path / "live.db"
    db = open_store(str(store), create=True)
    db.commit({}, {HISTORY: "yes"}, [])  # as a new store served with --history
    db.close()
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps(EVENTS[2]) + "\n", encoding="utf-8")
    ran = CliRunner().invoke(app, ["run", str(playbook), "--store", str(store), "--events",
                                   str(events), "--once", "--clock", CLOCK, "--lateness",
                                   "30d", "--send-from", "2000-01-01"], env=ENV)
    assert ran.exit_code == 0, ran.output
    db = open_store(str(store), create=False)
    try:
        assert db.get_meta(HISTORY) == "no"
    finally:
        db.close()
