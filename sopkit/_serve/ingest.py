"""Request bodies as sopkit records: sopkit events, Segment calls and CloudEvents.

Each shape is checked here, before anything is stored: a body that is not what the endpoint
takes, or a record whose fields the playbook cannot type, is a BadInput naming every bad
item by its JSON Pointer (RFC 6901) into the body; nothing of such a request is accepted. A
well-formed record the playbook has no use for (a Segment event with no mapping, a
CloudEvent of an undeclared type, an anonymous Segment call) is accepted and quarantined
with its reason, in order with the others, never dropped.

Whether an event repeats an earlier one (`event_id`) or arrives out of order is for the
live loop to say when it applies the record; it quarantines such records as `run` does.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sopkit._errors import EventError
from sopkit._live.inbox import Entry
from sopkit._playbook.load import LoadedPlaybook
from sopkit._playbook.models import SegmentEvent, SegmentIngest
from sopkit._runtime.inputs import CONSENT_EVENTS, PROFILE_EVENT, STAFF_DEPARTED, Inputs

MAX_ITEMS = 1000
"""The most records one request may carry (an array of events, a batch)."""
MAX_BODY = 4 * 1024 * 1024
"""The largest request body, in bytes (after gzip decoding)."""

_QUOTED = re.compile(r"'([^']+)'")
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass
class BadInput(Exception):
    """A request the service refuses: an RFC 9457 problem with per-item `errors`."""

    status: int
    title: str
    detail: str
    errors: list[dict[str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        return self.detail


def _pointer(*parts: object) -> str:
    """A JSON Pointer from path parts ('~' and '/' escaped as RFC 6901 says)."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _bad_field(exc: EventError, record: Mapping[str, Any]) -> str | None:
    """The record key an EventError is about (the first quoted name that is a key)."""
    for name in _QUOTED.findall(str(exc)):
        if name in record:
            return str(name)
    for name in ("customer_id", "ts", "type"):
        if name in str(exc):
            return name
    return None


class Mapper:
    """Turns request bodies into inbox entries for one playbook."""

    def __init__(self, loaded: LoadedPlaybook, now_text: Callable[[], str]) -> None:
        pb = loaded.model
        from sopkit._lang.clock import Calendar

        self.inputs = Inputs(Calendar(pb.playbook.timezone),
                             {name: dict(fields) for name, fields in pb.events.items()},
                             dict(pb.profile))
        self.types = set(pb.events) | CONSENT_EVENTS | {PROFILE_EVENT, STAFF_DEPARTED}
        self.segment = pb.ingest.segment or SegmentIngest()
        self.now_text = now_text

    # -- sopkit events ----------------------------------------------------------------
    def events(self, body: Any) -> list[Entry]:
        """`POST /v1/events`: one sopkit event (an object) or an array of them."""
        items = body if isinstance(body, list) else [body]
        _count(items)
        errors: list[dict[str, str]] = []
        for i, item in enumerate(items):
            at = _pointer(i) if isinstance(body, list) else ""
            if not isinstance(item, dict):
                errors.append({"pointer": at or "/", "detail": "expected a JSON object"})
                continue
            self._check(item, errors, _under(at))
        _raise(errors)
        return [Entry("events", item) for item in items]

    def _check(self, record: Mapping[str, Any], errors: list[dict[str, str]],
               where: Callable[[str], str], at: str = "") -> None:
        """Add an error for `record` if the playbook cannot type it."""
        try:
            self.inputs.parse_event(record)
        except EventError as exc:
            name = _bad_field(exc, record)
            errors.append({"pointer": where(name) if name else (at or "/"),
                           "detail": str(exc)})

    # -- Segment ----------------------------------------------------------------------
    def segment_calls(self, body: Any, kind: str | None) -> list[Entry]:
        """`/v1/track`, `/v1/identify` (`kind`) or `/v1/batch` (kind None) as entries."""
        if kind is None:
            if not isinstance(body, dict) or not isinstance(body.get("batch"), list):
                raise BadInput(400, "Bad batch", "expected an object with a `batch` array",
                               [{"pointer": "/batch", "detail": "expected an array"}])
            calls: list[Any] = body["batch"]
            _count(calls)
        else:
            calls = [body]
        errors: list[dict[str, str]] = []
        out: list[Entry] = []
        for i, call in enumerate(calls):
            at = _pointer("batch", i) if kind is None else ""
            if not isinstance(call, dict):
                errors.append({"pointer": at or "/", "detail": "expected a JSON object"})
                continue
            entry = self._segment_call(call, kind, at, errors)
            if entry is not None:
                out.append(entry)
        _raise(errors)
        return out

    def _segment_call(self, call: dict[str, Any], kind: str | None, at: str,
                      errors: list[dict[str, str]]) -> Entry | None:
        ctype = call.get("type", kind)
        if ctype not in ("track", "identify"):
            return Entry("segment", call, f"Segment call type {ctype!r} is not taken "
                         "(only track and identify)")
        user = call.get("userId")
        if user in (None, ""):
            if call.get("anonymousId") not in (None, ""):
                return Entry("segment", call, "anonymous Segment call (no userId): no "
                             "customer to apply it to")
            errors.append({"pointer": at + "/userId", "detail": "required: the customer id"})
            return None
        if not isinstance(user, str | int) or isinstance(user, bool):
            errors.append({"pointer": at + "/userId", "detail": "expected a string"})
            return None
        ts = call.get("timestamp") or call.get("originalTimestamp") or self.now_text()
        if not isinstance(ts, str):
            errors.append({"pointer": at + "/timestamp", "detail": "expected an ISO 8601 "
                           "string"})
            return None
        head: dict[str, Any] = {"customer_id": str(user), "ts": ts}
        if call.get("messageId") not in (None, ""):
            head["event_id"] = call["messageId"]
        where = {"customer_id": "/userId", "ts": "/timestamp", "event_id": "/messageId"}
        if ctype == "identify":
            traits = call.get("traits")
            if traits is None:
                context = call.get("context") or {}
                if not isinstance(context, dict):
                    errors.append({"pointer": at + "/context", "detail": "expected an object"})
                    return None
                traits = context.get("traits", {})
            if not isinstance(traits, dict):
                errors.append({"pointer": at + "/traits", "detail": "expected an object"})
                return None
            renamed: dict[str, Any] = {str(self.segment.traits.get(k, k)): v
                                       for k, v in traits.items()}
            back = {str(self.segment.traits.get(k, k)): k for k in traits}
            record = {**renamed, **head, "type": PROFILE_EVENT}
            self._check(record, errors, lambda n: at + (where.get(n) or _pointer(
                "traits", back.get(n, n))), at)
            return Entry("segment", record)
        name = call.get("event")
        if not isinstance(name, str) or not name:
            errors.append({"pointer": at + "/event", "detail": "required: the event name"})
            return None
        props = call.get("properties") or {}
        if not isinstance(props, dict):
            errors.append({"pointer": at + "/properties", "detail": "expected an object"})
            return None
        mapping = self.segment.events.get(name)
        if mapping is None and name in self.types - {PROFILE_EVENT, STAFF_DEPARTED}:
            mapping = SegmentEvent(type=name)
        if mapping is None:
            return Entry("segment", call, f"no [ingest.segment.events] mapping for Segment "
                         f"event {name!r}")
        renamed = {str(mapping.properties.get(k, k)): v for k, v in props.items()}
        back = {str(mapping.properties.get(k, k)): k for k in props}
        record = {**renamed, **head, "type": mapping.type}
        self._check(record, errors, lambda n: at + (where.get(n) or _pointer(
            "properties", back.get(n, n))), at)
        return Entry("segment", record)

    # -- CloudEvents ------------------------------------------------------------------
    def cloudevents(self, events: list[Any], batch: bool) -> list[Entry]:
        """Structured CloudEvents (one, or a batch) as entries."""
        if batch:
            _count(events)
        errors: list[dict[str, str]] = []
        out: list[Entry] = []
        for i, event in enumerate(events):
            at = _pointer(i) if batch else ""
            if not isinstance(event, dict):
                errors.append({"pointer": at or "/", "detail": "expected a JSON object"})
                continue
            entry = self._cloudevent(event, at, errors)
            if entry is not None:
                out.append(entry)
        _raise(errors)
        return out

    def _cloudevent(self, event: dict[str, Any], at: str,
                    errors: list[dict[str, str]]) -> Entry | None:
        missing = False
        for attr in ("specversion", "id", "source", "type"):
            value = event.get(attr)
            if not isinstance(value, str) or not value:
                errors.append({"pointer": at + _pointer(attr),
                               "detail": "required CloudEvents attribute (a string)"})
                missing = True
        if missing:
            return None
        if event["specversion"] != "1.0":
            errors.append({"pointer": at + "/specversion", "detail": "only 1.0 is taken"})
            return None
        if "data_base64" in event:
            errors.append({"pointer": at + "/data_base64",
                           "detail": "binary data is not taken: send JSON data"})
            return None
        data = event.get("data")
        if data is None:
            data = {}
        if not isinstance(data, dict):
            errors.append({"pointer": at + "/data", "detail": "expected a JSON object"})
            return None
        if event["type"] not in self.types:
            return Entry("cloudevents", event, f"CloudEvents type {event['type']!r} is not "
                         "an event type of the playbook")
        record: dict[str, Any] = {**data, "type": event["type"], "event_id": event["id"],
                                  "ts": event.get("time") or self.now_text()}
        if event.get("subject") not in (None, ""):
            record["customer_id"] = event["subject"]
        where = {"type": "/type", "event_id": "/id", "ts": "/time"}
        if "subject" in event:
            where["customer_id"] = "/subject"
        self._check(record, errors, lambda n: at + (where.get(n) or _pointer("data", n)), at)
        return Entry("cloudevents", record)


def lone_surrogate(body: Any, at: str = "") -> str | None:
    """The JSON Pointer of the first string (or key) in `body` holding a lone UTF-16
    surrogate (`\\ud800` without its pair): valid JSON, but no text the store can keep."""
    if isinstance(body, str):
        return at or "/" if not body.isascii() and _SURROGATE.search(body) else None
    if isinstance(body, dict):
        for key, value in body.items():
            found = lone_surrogate(key, at + _pointer(key)) or lone_surrogate(
                value, at + _pointer(key))
            if found:
                return found
    elif isinstance(body, list):
        for i, value in enumerate(body):
            found = lone_surrogate(value, at + _pointer(i))
            if found:
                return found
    return None


def _under(at: str) -> Callable[[str], str]:
    """The pointer of a record key, for a record at `at`."""
    return lambda name: at + _pointer(name)


def _count(items: list[Any]) -> None:
    if len(items) > MAX_ITEMS:
        raise BadInput(413, "Too many records", f"{len(items)} records in one request; the "
                       f"most is {MAX_ITEMS}: split the batch")


def _raise(errors: list[dict[str, str]]) -> None:
    if errors:
        raise BadInput(400, "Invalid records", f"{len(errors)} invalid record(s); nothing "
                       "of this request was accepted", errors)
