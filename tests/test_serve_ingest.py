"""How `sopkit serve` reads each body shape: the records it stores, what it quarantines and
the JSON Pointers of what it refuses (the mapper on its own, no server needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from live_helpers import shop_playbook

import sopkit
from sopkit._serve.auth import allows, is_loopback, parse_keys, presented_key
from sopkit._serve.ingest import MAX_ITEMS, BadInput, Mapper

MAPPING = """
[ingest.segment]
traits = { full_name = "name" }

[ingest.segment.events."Order Completed"]
type = "purchase"
properties = { revenue = "amount" }

[ingest.segment.events."Paid"]
type = "purchase"
properties = { "sum/total~" = "amount" }

[ingest.segment.events."Unsubscribed"]
type = "opt_out"
properties = { via = "channel" }
"""
NOW = "2025-01-09T12:00:00+08:00"


@pytest.fixture
def mapper(tmp_path: Path) -> Mapper:
    loaded = sopkit.load_playbook(shop_playbook(tmp_path, "http://127.0.0.1:9/hook", MAPPING))
    return Mapper(loaded, lambda: NOW)


def _refused(call: Any) -> tuple[int, list[str]]:
    with pytest.raises(BadInput) as caught:
        call()
    return caught.value.status, [e["pointer"] for e in caught.value.errors]


def test_segment_calls_become_sopkit_records(mapper: Mapper) -> None:
    """track: mapped type and renamed properties; identify: a profile event from traits (or
    context.traits); messageId is the event_id; a missing timestamp falls back in order."""
    batch = {"batch": [
        {"type": "track", "userId": 42, "event": "Order Completed", "messageId": "m1",
         "properties": {"revenue": "9.5", "coupon": "X"}, "timestamp": "2025-01-02T10:00:00Z"},
        {"type": "identify", "userId": "c1", "context": {"traits": {"full_name": "Ann"}},
         "originalTimestamp": "2025-01-03T10:00:00Z"},
        {"type": "track", "userId": "c1", "event": "purchase", "properties": {"amount": 1}},
        {"type": "track", "userId": "c1", "event": "Unsubscribed",
         "properties": {"via": "hook"}, "timestamp": "2025-01-04T10:00:00Z"}]}
    records = [(e.record, e.reason) for e in mapper.segment_calls(batch, None)]
    assert records == [
        ({"amount": "9.5", "coupon": "X", "customer_id": "42", "ts": "2025-01-02T10:00:00Z",
          "event_id": "m1", "type": "purchase"}, None),
        ({"name": "Ann", "customer_id": "c1", "ts": "2025-01-03T10:00:00Z",
          "type": "profile"}, None),
        ({"amount": 1, "customer_id": "c1", "ts": NOW, "type": "purchase"}, None),
        ({"channel": "hook", "customer_id": "c1", "ts": "2025-01-04T10:00:00Z",
          "type": "opt_out"}, None)]


def test_segment_calls_it_cannot_use_are_quarantined_with_a_reason(mapper: Mapper) -> None:
    """An unmapped event, a page call and an anonymous call are kept with their reasons."""
    calls = [{"type": "track", "userId": "c1", "event": "Page Viewed"},
             {"type": "page", "userId": "c1", "name": "Home"},
             {"type": "track", "anonymousId": "a-1", "event": "Order Completed"}]
    reasons = [e.reason for e in mapper.segment_calls({"batch": calls}, None)]
    assert reasons == [
        "no [ingest.segment.events] mapping for Segment event 'Page Viewed'",
        "Segment call type 'page' is not taken (only track and identify)",
        "anonymous Segment call (no userId): no customer to apply it to"]


def test_segment_mistakes_are_named_by_pointer(mapper: Mapper) -> None:
    """Each bad call of a batch is named by its JSON Pointer (the property's Segment name,
    ~ and / escaped as RFC 6901 says); a single call by its field."""
    good = {"type": "track", "userId": "c1", "event": "Order Completed"}
    calls = [good, "x", {**good, "userId": True}, {**good, "event": ""},
             {**good, "properties": [1]}, {**good, "timestamp": 5},
             {"type": "identify", "userId": "c1", "traits": {"full_name": "A",
                                                             "phone": ["x"]}},
             {**good, "messageId": {"a": 1}},
             {**good, "event": "Paid", "properties": {"sum/total~": "many"}}]
    assert _refused(lambda: mapper.segment_calls({"batch": calls}, None)) == (400, [
        "/batch/1", "/batch/2/userId", "/batch/3/event", "/batch/4/properties",
        "/batch/5/timestamp", "/batch/6/traits/phone", "/batch/7/messageId",
        "/batch/8/properties/sum~1total~0"])
    assert _refused(lambda: mapper.segment_calls({"userId": "c1"}, "track")) == \
        (400, ["/event"])
    assert _refused(lambda: mapper.segment_calls({"batch": {}}, None)) == (400, ["/batch"])
    assert _refused(lambda: mapper.segment_calls({"batch": [good] * (MAX_ITEMS + 1)},
                                                 None)) == (413, [])


def test_sopkit_events_are_checked_against_the_playbook(mapper: Mapper) -> None:
    """An object or an array of them; each field the playbook cannot type is named."""
    one = {"customer_id": "c1", "type": "purchase", "ts": "2025-01-02", "amount": "3"}
    assert [e.record for e in mapper.events(one)] == [one]
    bad = [one, {**one, "type": "refund"}, {**one, "ts": "soon"},
           {"type": "purchase", "ts": "2025-01-02"}]
    assert _refused(lambda: mapper.events(bad)) == (400, ["/1/type", "/2/ts",
                                                          "/3/customer_id"])
    assert _refused(lambda: mapper.events({**one, "amount": "x"})) == (400, ["/amount"])
    assert _refused(lambda: mapper.events("x")) == (400, ["/"])


def test_cloudevents_become_records_or_are_refused_by_attribute(mapper: Mapper) -> None:
    """subject → customer_id, id → event_id, time → ts, data → fields; an undeclared type
    is quarantined; missing attributes, another spec version or binary data are refused."""
    event = {"specversion": "1.0", "id": "x1", "source": "/crm", "type": "purchase",
             "subject": "c7", "data": {"amount": "2"}}
    [entry] = mapper.cloudevents([event], batch=False)
    assert entry.record == {"amount": "2", "type": "purchase", "event_id": "x1", "ts": NOW,
                            "customer_id": "c7"}
    [other] = mapper.cloudevents([{**event, "type": "com.shop.refund"}], batch=False)
    assert other.reason == "CloudEvents type 'com.shop.refund' is not an event type of the " \
        "playbook"
    in_data = {**event, "data": {"amount": "2", "customer_id": "c8"}}
    del in_data["subject"]
    assert mapper.cloudevents([in_data], batch=False)[0].record["customer_id"] == "c8"
    bad = [{**event, "source": ""}, {**event, "specversion": "0.3"},
           {**event, "data_base64": "AA=="}, {**event, "data": [1]},
           {**event, "subject": None}, {**event, "time": "noon"}]
    assert _refused(lambda: mapper.cloudevents(["x"], batch=False)) == (400, ["/"])
    assert _refused(lambda: mapper.cloudevents([event, 7], batch=True)) == (400, ["/1"])
    assert _refused(lambda: mapper.cloudevents(bad, batch=True)) == (400, [
        "/0/source", "/1/specversion", "/2/data_base64", "/3/data", "/4/subject", "/5/time"])


def test_api_keys_scopes_and_addresses() -> None:
    """Keys parse by scope; Bearer and Basic (key as user name) present them; admin may
    everything; loopback is only 127.0.0.0/8, ::1 and localhost."""
    keys = parse_keys(" ingest:key-one-1 , ADMIN:key-two-2,read:key-one-1")
    assert keys.scopes_of("key-one-1") == {"ingest", "read"}
    assert keys.scopes_of("key-two-2") == {"admin"}
    assert keys.scopes_of("key-one-") == set()
    assert parse_keys("").open and not keys.open
    assert parse_keys("read:key-one-1, ,").scopes_of("key-one-1") == {"read"}
    assert presented_key("Bearer key-one-1") == "key-one-1"
    assert presented_key("basic a2V5LW9uZS0xOg==") == "key-one-1"  # "key-one-1:"
    assert presented_key("Basic !!!") is None
    assert presented_key("Basic a2V5LW9uZS0xOg==!!") is None  # not base64: no key
    assert presented_key("Token key-one-1") is None
    assert presented_key(None) is None
    assert allows({"admin"}, "ingest") and allows({"read"}, "read")
    assert not allows({"read"}, "ingest")
    assert [is_loopback(h) for h in ("127.0.0.1", "127.8.0.1", "::1", "[::1]", "localhost",
                                     "0.0.0.0", "10.0.0.5", "example.com")] == \
        [True, True, True, True, True, False, False, False]
