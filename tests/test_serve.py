"""`sopkit serve`: real clients (Segment's library, the CloudEvents SDK, httpx) against a real
server process; the decisions equal `simulate` over the same events."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
from cloudevents.v1.conversion import to_binary, to_dict, to_structured
from cloudevents.v1.http import CloudEvent
from http_receiver import Receiver
from live_helpers import ENV, shop_history, shop_playbook
from segment.analytics.client import Client
from serve_helpers import END, Served
from typer.testing import CliRunner

from sopkit._cli.app import app
from sopkit._lang.clock import Calendar

SEGMENT = """
[ingest.segment]
traits = { full_name = "name" }

[ingest.segment.events."Order Completed"]
type = "purchase"
properties = { revenue = "amount" }
"""
INGEST, READ, ADMIN = "ingest-key-0001", "read-key-0002", "admin-key-0003"
KEYS = {"SOPKIT_API_KEYS": f"ingest:{INGEST},read:{READ},admin:{ADMIN}"}
BEARER = {"Authorization": f"Bearer {INGEST}"}
TZ = dt.timezone(dt.timedelta(hours=8))


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _outbox(store: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(store) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM outbox ORDER BY key")]


def _simulate(playbook: Path, records: list[dict[str, Any]], tmp: Path) -> list[dict[str, Any]]:
    events = tmp / "sent.jsonl"
    events.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
                      encoding="utf-8")
    out = tmp / "sim.jsonl"
    result = CliRunner().invoke(app, ["simulate", str(playbook), "--events", str(events),
                                      "--end", END, "--engine", "native", "--out", str(out),
                                      "--unmasked", "--output", "jsonl"], env=ENV)
    assert result.exit_code == 0, result.output
    return _lines(out)


def _send(server: Served, segment: Client, i: int, record: dict[str, Any]) -> None:
    """One purchase, by one of four routes in turn: Segment track, a structured or a binary
    CloudEvent, or a sopkit event."""
    when = dt.datetime.fromisoformat(record["ts"])
    if i % 4 == 0:
        segment.track(record["customer_id"], "Order Completed",
                      {"revenue": record["amount"]}, timestamp=when,
                      message_id=record["event_id"])
        return
    if i % 4 == 3:
        assert server.post("/v1/events", [record], headers=BEARER).status_code == 202
        return
    event = CloudEvent({"type": "purchase", "source": "/crm/orders", "id": record["event_id"],
                        "subject": record["customer_id"], "time": record["ts"]},
                       {"amount": record["amount"]})
    headers, body = to_structured(event) if i % 4 == 1 else to_binary(event)
    reply = httpx.post(server.url + "/v1/cloudevents", content=body,
                       headers={**headers, **BEARER}, timeout=30)
    assert reply.status_code == 202, reply.text


def test_segment_cloudevents_and_sopkit_events_decide_as_simulate_does(tmp_path: Path) -> None:
    """Profiles by Segment identify, purchases by track, CloudEvents and /v1/events: the
    outbox holds the keys, statuses and due times that simulate plans for those events."""
    with Receiver() as rx:
        playbook = shop_playbook(tmp_path, rx.url + "/hook", SEGMENT)
        history, people = shop_history(tmp_path)
        store = tmp_path / "live.db"
        sent: list[dict[str, Any]] = []
        with Served(playbook, store, env=KEYS) as server:
            failures: list[Any] = []
            segment = Client(INGEST, host=server.url, sync_mode=True, max_retries=0,
                             on_error=lambda error, batch: failures.append(error))
            start = dt.datetime(2025, 1, 1, tzinfo=TZ)
            for person in _lines(people):
                cid = person["customer_id"]
                traits = {"full_name": person["name"], "phone": person["phone"],
                          "external_userid": person["external_userid"],
                          "owner": person["owner"]}
                segment.identify(cid, traits, timestamp=start, message_id=f"who-{cid}")
                sent.append({"type": "profile", "customer_id": cid, "ts": start.isoformat(),
                             "event_id": f"who-{cid}", "name": person["name"],
                             **{k: v for k, v in traits.items() if k != "full_name"}})
            for i, event in enumerate(_lines(history)):
                record = {**event, "ts": event["ts"] + "+08:00", "event_id": f"order-{i}"}
                sent.append(record)
                _send(server, segment, i, record)
            assert not failures
            code, err = server.stop()
            assert code == 0, err
        with Served(playbook, store, clock=END, env=KEYS) as server:  # time passes to END
            code, err = server.stop()
            assert code == 0, err
        simulated = _simulate(playbook, sent, tmp_path)
    cal = Calendar("Asia/Shanghai")
    deliverable = [r for r in simulated if r["action"] in ("send", "task", "webhook",
                                                            "reassign")]
    expected = {(r["key"], r["rule"], r["action"],
                 "decided" if r["status"] in ("planned", "deferred") else r["status"],
                 r.get("reason", ""), cal.parse(r.get("deliver_at", r["time"])))
                for r in deliverable}
    rows = _outbox(store)
    got = {(r["key"], r["rule"], r["kind"],
            "decided" if r["status"] in ("delivered", "pending") else r["status"],
            r["reason"], r["due_at"]) for r in rows}
    assert got == expected
    assert len(rows) == len(deliverable) > 40
    assert {r["rule"] for r in rows} >= {"thanks", "quiet"}
    hooked = {r["key"] for r in rows if r["status"] == "delivered" and r["channel"] == "hook"}
    assert hooked == set(rx.counts()) and len(hooked) > 40
    assert set(rx.counts().values()) == {1}  # each sent once


def test_keys_and_scopes_decide_who_may_do_what(tmp_path: Path) -> None:
    """No key or an unknown key: 401; a read key cannot ingest (403); an ingest key may, as
    Bearer or as Segment's Basic write key; /metrics needs read; no key is ever logged."""
    playbook = shop_playbook(tmp_path, "http://127.0.0.1:9/hook", SEGMENT)
    event = {"customer_id": "c1", "type": "purchase", "ts": "2025-01-02T10:00:00",
             "amount": "5", "event_id": "e1"}
    with Served(playbook, tmp_path / "live.db", env=KEYS) as server:
        bare = server.post("/v1/events", event)
        assert bare.status_code == 401
        assert bare.headers["content-type"] == "application/problem+json"
        assert "Bearer" in bare.headers["www-authenticate"]
        assert server.post("/v1/events", event,
                           headers={"Authorization": "Bearer not-a-key-at-all"}
                           ).status_code == 401
        refused = server.post("/v1/events", event, headers={"Authorization": f"Bearer {READ}"})
        assert refused.status_code == 403 and "ingest" in refused.json()["detail"]
        assert server.post("/v1/events", event, headers=BEARER).status_code == 202
        assert server.post("/v1/track", {"userId": "c1", "event": "purchase",
                                         "properties": {"amount": 2}},
                           auth=(INGEST, "")).status_code == 202
        assert server.post("/v1/events", {**event, "event_id": "e2"},
                           headers={"Authorization": f"Bearer {ADMIN}"}).status_code == 202
        assert httpx.get(server.url + "/metrics", headers=BEARER).status_code == 403
        metrics = httpx.get(server.url + "/metrics", headers={"Authorization": f"Bearer {READ}"})
        assert metrics.status_code == 200
        assert 'sopkit_events_accepted_total{endpoint="events"} 2' in metrics.text
        assert 'sopkit_requests_refused_total{status="401"} 2' in metrics.text
        assert httpx.get(server.url + "/healthz").status_code == 200
        code, err = server.stop()
    assert code == 0, err
    assert not any(key in err for key in (INGEST, READ, ADMIN))


def test_a_public_address_without_keys_is_refused_at_start(tmp_path: Path) -> None:
    """Listening beyond loopback with no SOPKIT_API_KEYS exits 2 before anything starts."""
    playbook = shop_playbook(tmp_path, "http://127.0.0.1:9/hook")
    result = CliRunner().invoke(app, ["serve", str(playbook), "--store",
                                      str(tmp_path / "x.db"), "--host", "0.0.0.0"],
                                env={**ENV, "SOPKIT_API_KEYS": ""})
    assert result.exit_code == 2
    assert "SOPKIT_API_KEYS" in result.output
    assert not (tmp_path / "x.db").exists()


def _problem(reply: httpx.Response, status: int = 400) -> list[str]:
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"] == "application/problem+json"
    body = reply.json()
    assert body["status"] == status and body["title"] and body["detail"]
    return [e["pointer"] for e in body.get("errors", [])]


def test_bad_input_is_a_problem_naming_each_bad_field(tmp_path: Path) -> None:
    """Each shape's bad records come back as RFC 9457 problems with JSON Pointers; nothing
    of a refused request is applied, and an unmapped Segment event is quarantined."""
    playbook = shop_playbook(tmp_path, "http://127.0.0.1:9/hook", SEGMENT)
    store = tmp_path / "live.db"
    good = {"customer_id": "c1", "type": "purchase", "ts": "2025-01-02T10:00:00",
            "amount": "5"}
    with Served(playbook, store) as server:
        assert _problem(server.post("/v1/events", [good, {**good, "amount": "five"}, 7])) \
            == ["/1/amount", "/2"]
        track = {"type": "track", "userId": "c2", "event": "Order Completed",
                 "timestamp": "2025-01-03T10:00:00+08:00", "properties": {"revenue": 3}}
        batch = {"batch": [track, {**track, "properties": {"revenue": "abc"}},
                           {**track, "userId": None}, {**track, "timestamp": "yesterday"}]}
        assert _problem(server.post("/v1/batch", batch)) == [
            "/batch/1/properties/revenue", "/batch/2/userId", "/batch/3/timestamp"]
        assert _problem(server.post("/v1/identify", {"userId": "c2", "traits": "Ann"})) \
            == ["/traits"]
        structured = {"specversion": "1.0", "id": "x1", "source": "/crm", "type": "purchase",
                      "subject": "c3", "time": "2025-01-04T10:00:00+08:00",
                      "data": {"amount": "2"}}
        cloud = {"Content-Type": "application/cloudevents+json"}
        assert _problem(httpx.post(server.url + "/v1/cloudevents", headers=cloud,
                                   content=json.dumps({**structured, "id": None}))) == ["/id"]
        bad_data = {**structured, "id": "x2", "data": {"amount": []}}
        assert _problem(httpx.post(
            server.url + "/v1/cloudevents",
            headers={"Content-Type": "application/cloudevents-batch+json"},
            content=json.dumps([structured, bad_data]))) == ["/1/data/amount"]
        assert _problem(httpx.post(server.url + "/v1/events", content=b"{not json")) == []
        assert _problem(server.post("/v1/events", [good] * 1001), 413) == []
        limit = 4 * 1024 * 1024  # docs/http.md: a body over 4 MiB is refused
        assert _problem(httpx.post(server.url + "/v1/events", content=b" " * (limit + 1)),
                        413) == []
        assert _problem(httpx.post(server.url + "/v1/events", content=b" " * limit)) == []
        bomb = gzip.compress(b" " * (limit + 1))  # 4 KiB that would decode past the limit
        assert _problem(httpx.post(server.url + "/v1/events", content=bomb,
                                   headers={"Content-Encoding": "gzip"}), 413) == []
        unmapped = server.post("/v1/track", {"userId": "c4", "event": "Page Viewed",
                                             "timestamp": "2025-01-05T10:00:00+08:00"})
        assert unmapped.status_code == 202 and unmapped.json()["quarantined"] == 1
        assert server.post("/v1/events", good).status_code == 202
        code, err = server.stop()
    assert code == 0, err
    customers = {r["customer_id"] for r in _outbox(store)}
    assert customers == {"c1"}  # every refused request left nothing behind
    jailed = _lines(store.with_suffix(".quarantine.jsonl"))
    assert [q["reason"] for q in jailed] == [
        "no [ingest.segment.events] mapping for Segment event 'Page Viewed'"]


def test_a_cloudevents_batch_from_the_sdk_is_applied_in_order(tmp_path: Path) -> None:
    """A CloudEvents batch (the SDK's events as a JSON array) is accepted and applied."""
    playbook = shop_playbook(tmp_path, "http://127.0.0.1:9/hook")
    store = tmp_path / "live.db"
    events = [CloudEvent({"type": "purchase", "source": "/crm", "id": f"b{i}",
                          "subject": "c9", "time": f"2025-01-0{i + 2}T10:00:00+08:00"},
                         {"amount": str(10 + i)}) for i in range(3)]
    with Served(playbook, store) as server:
        reply = httpx.post(server.url + "/v1/cloudevents",
                           headers={"Content-Type": "application/cloudevents-batch+json"},
                           content=json.dumps([to_dict(e) for e in events]))
        assert reply.status_code == 202 and reply.json()["accepted"] == 3
        code, err = server.stop()
    assert code == 0, err
    bodies = [json.loads(r["message"])["body"]["message"] for r in _outbox(store)]
    assert [b.split("第 ")[1].split(" ")[0] for b in bodies] == ["1", "2", "3"]


def test_check_locates_a_segment_mapping_to_an_unknown_type_or_field(tmp_path: Path) -> None:
    """`sopkit check` names the key of a bad [ingest.segment] entry and suggests the fix."""
    playbook = shop_playbook(tmp_path, "http://127.0.0.1:9/hook", """
[ingest.segment]
traits = { full_name = "nmae" }

[ingest.segment.events."Order Completed"]
type = "purchse"

[ingest.segment.events."Order Refunded"]
type = "purchase"
properties = { total = "amout" }
""")
    result = CliRunner().invoke(app, ["check", "--output", "jsonl", str(playbook)])
    assert result.exit_code == 1
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    found = {(r["key"], r["message"], r["suggestion"]) for r in rows}
    assert found == {
        ('ingest.segment.events."Order Completed".type', "unknown event type 'purchse'",
         "did you mean 'purchase'?"),
        ('ingest.segment.events."Order Refunded".properties.total',
         "'amout' is not a field of event 'purchase'", "did you mean 'amount'?"),
        ("ingest.segment.traits.full_name", "'nmae' is not a profile attribute",
         "did you mean 'name'?")}
    assert all(r["line"] > 40 for r in rows)  # located in the appended tables


def test_sigterm_applies_every_accepted_event_before_it_exits(tmp_path: Path) -> None:
    """SIGTERM right after a 202 for 600 events: the process exits 0 once all are applied."""
    playbook = shop_playbook(tmp_path, "http://127.0.0.1:9/hook")
    store = tmp_path / "live.db"
    events = [{"customer_id": f"c{i % 50}", "type": "purchase", "amount": "1",
               "ts": f"2025-01-02T{10 + i // 60:02d}:{i % 60:02d}:00"} for i in range(600)]
    with Served(playbook, store, "--batch", "7") as server:
        assert server.post("/v1/events", events).status_code == 202
        code, err = server.stop()
    assert code == 0, err
    assert json.loads(err.strip().splitlines()[-1])["events_applied"] == 600
    assert len([r for r in _outbox(store) if r["rule"] == "thanks"]) == 600
    with sqlite3.connect(store) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'input.line'").fetchone() == \
            ("600",)  # one inbox row per record: the last one is applied


@pytest.mark.parametrize("keys", ["ingest", "reader:abcdefgh12", "read:tiny7"])
def test_malformed_keys_stop_the_service_before_it_starts(tmp_path: Path, keys: str) -> None:
    """A SOPKIT_API_KEYS entry without a key, with an unknown scope or a short key: exit 2,
    naming the entry and never echoing the key."""
    playbook = shop_playbook(tmp_path, "http://127.0.0.1:9/hook")
    result = CliRunner().invoke(app, ["serve", str(playbook), "--store",
                                      str(tmp_path / "x.db")],
                                env={**ENV, "SOPKIT_API_KEYS": keys})
    assert result.exit_code == 2
    assert "SOPKIT_API_KEYS: entry 1" in result.output
    assert "abcdefgh12" not in result.output and "tiny7" not in result.output
