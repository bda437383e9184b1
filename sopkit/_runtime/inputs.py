"""Incoming records: an event or a profile checked and typed against the playbook's
declarations, or an EventError saying why it cannot be used (the caller quarantines it).

Nothing here touches a customer's state: `Inputs.parse_event` turns a record into
(customer id, type, timestamp, fields) and the runtime applies that.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from sopkit._errors import EventError
from sopkit._lang.clock import Calendar, TimeRangeError
from sopkit._runtime.policy import ALL

EVENT_ID_WINDOW = 30 * 86400  # a repeated event_id within this much event time is a duplicate
EVENT_ID_LIMIT = 10_000  # the most event ids one customer remembers (the oldest go first)
EVENT_ID = "\0event_id"  # where parse_event leaves an event's id among its fields
OWNER = "\0owner"  # where parse_event leaves a profile event's owner among its fields
PROFILE_EVENT = "profile"  # a built-in event type that updates profile attributes
STAFF_DEPARTED = "staff_departed"  # a built-in event: hand a leaving staff member's customers over
OPT_OUT_EVENT = "opt_out"  # built-in: the customer opts out of a channel (or "all")
OPT_IN_EVENT = "opt_in"  # built-in: the customer withdraws an opt-out
CONSENT_EVENTS = frozenset({OPT_OUT_EVENT, OPT_IN_EVENT})
_TRUE = {"true", "1", "yes", "y", "是", "t"}
_FALSE = {"false", "0", "no", "n", "否", "f", ""}

Event = tuple[str, str, int, dict[str, Any]]  # (customer id, type, timestamp, fields)


class Inputs:
    """Checks and types records against a playbook's events and profile declarations."""

    def __init__(self, calendar: Calendar, event_types: Mapping[str, Mapping[str, str]],
                 profile_types: Mapping[str, str]) -> None:
        self.calendar = calendar
        self.event_types = {name: dict(fields) for name, fields in event_types.items()}
        self.profile_types = dict(profile_types)

    def parse_event(self, record: Mapping[str, Any]) -> Event:
        """Check and type an event record: (customer id, type, timestamp, fields)."""
        etype = record.get("type")
        if etype == STAFF_DEPARTED:
            return self.parse_departure(record)
        customer_id = record_customer_id(record)
        if not isinstance(etype, str) or not etype:
            raise EventError("missing event 'type'")
        if etype != PROFILE_EVENT and etype not in CONSENT_EVENTS and \
                etype not in self.event_types:
            known = ", ".join(sorted(self.event_types)) or "none"
            raise EventError(f"unknown event type '{etype}' (the playbook declares: {known})",
                             f"unknown event type '{etype}'")
        raw_ts = record.get("ts")
        if isinstance(raw_ts, dt.datetime):  # a host passes its own datetime
            raw_ts = raw_ts.isoformat()
        if not isinstance(raw_ts, str) or not raw_ts:
            raise EventError("missing 'ts' (an ISO 8601 time)")
        try:
            ts = self.calendar.parse_ts(raw_ts)  # a date alone: the start of that day
        except TimeRangeError as exc:
            raise EventError(f"bad 'ts': {exc}", "time out of range") from None
        except ValueError:
            raise EventError(f"bad 'ts' '{raw_ts}': expected ISO 8601, e.g. "
                             "2024-05-01T10:00:00+08:00", "bad 'ts'") from None
        fields: dict[str, Any] = {}
        event_id = record_event_id(record)
        if event_id is not None:
            fields[EVENT_ID] = event_id
        if etype == PROFILE_EVENT:
            fields.update(self.profile_fields(record))
            if record.get("owner") not in (None, ""):
                fields[OWNER] = sys.intern(str(record["owner"]))
            return customer_id, etype, ts, fields
        if etype in CONSENT_EVENTS:
            fields["channel"] = self.consent_channels(etype, record)
            return customer_id, etype, ts, fields
        for fname, kind in self.event_types[etype].items():
            if record.get(fname) not in (None, ""):
                fields[fname] = convert(record[fname], kind, f"field '{fname}'")
        return customer_id, etype, ts, fields

    def parse_departure(self, record: Mapping[str, Any]) -> Event:
        staff = record.get("staff")
        if not isinstance(staff, str) or not staff.strip():
            raise EventError("a staff_departed event needs 'staff' (the departing staff id)",
                             "staff_departed without 'staff'")
        fields: dict[str, Any] = {"staff": staff.strip()}
        event_id = record_event_id(record)
        if event_id is not None:
            fields[EVENT_ID] = event_id
        to = record.get("to")
        if to not in (None, ""):
            if not isinstance(to, str) or to.strip() == staff.strip():
                raise EventError(f"staff_departed: bad successor 'to' {to!r}",
                                 "staff_departed with a bad 'to'")
            fields["to"] = to.strip()
        raw_ts = record.get("ts")
        if isinstance(raw_ts, dt.datetime):
            raw_ts = raw_ts.isoformat()
        try:
            ts = self.calendar.parse_ts(raw_ts) if isinstance(raw_ts, str) and raw_ts else None
        except TimeRangeError as exc:
            raise EventError(f"bad 'ts': {exc}", "time out of range") from None
        except ValueError:
            ts = None
        if ts is None:
            raise EventError(f"bad 'ts' {raw_ts!r}: expected ISO 8601", "bad 'ts'")
        return "", STAFF_DEPARTED, ts, fields

    def consent_channels(self, etype: str, record: Mapping[str, Any]) -> frozenset[str]:
        """The channels an opt_out / opt_in event names: `channel`, a name, a list or "a|b".

        An opt-out without a channel means every channel (the safe reading of "stop"); an
        opt-in must say what it re-enables.
        """
        raw = record.get("channel")
        channels = frozenset() if raw in (None, "") else convert(raw, "list", "field 'channel'")
        if channels:
            return frozenset(channels)
        if etype == OPT_OUT_EVENT:
            return frozenset({ALL})
        raise EventError("an opt_in event needs 'channel': a channel name, or \"all\"",
                         "opt_in without 'channel'")

    def profile_fields(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """The declared profile attributes a record gives, typed; None for one given as
        null or "" (missing: it is removed from the profile)."""
        out: dict[str, Any] = {}
        for attr, kind in self.profile_types.items():
            if attr in record:
                raw = record[attr]
                missing = raw is None or (isinstance(raw, str) and not raw.strip())
                out[attr] = None if missing else \
                    convert(raw, kind, f"profile attribute '{attr}'")
        return out


def record_event_id(record: Mapping[str, Any]) -> str | None:
    """An event's id: `event_id`, or Segment's `messageId`; None when it has none."""
    for name in ("event_id", "messageId"):
        value = record.get(name)
        if value in (None, ""):
            continue
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise EventError(f"bad '{name}' {value!r}: expected a string",
                             f"bad '{name}'")
        text = str(value).strip()
        if not text or len(text) > 200:
            raise EventError(f"bad '{name}': expected 1 to 200 characters", f"bad '{name}'")
        return text
    return None


def remember(seen: dict[str, int] | None, event_id: str, ts: int) -> dict[str, int]:
    """`seen` with `event_id` applied at `ts`, less the ids older than the window (or over
    the limit, oldest first)."""
    seen = {} if seen is None else seen
    seen[event_id] = ts
    horizon = ts - EVENT_ID_WINDOW
    oldest = next(iter(seen.values()))
    if oldest < horizon or len(seen) > EVENT_ID_LIMIT:
        kept = [(k, t) for k, t in seen.items() if t >= horizon]
        seen = dict(kept[-EVENT_ID_LIMIT:])
    return seen


def update_profile(profile: dict[str, Any], fields: Mapping[str, Any]) -> None:
    """Set the attributes given; one given as missing (None) is removed."""
    for attr, value in fields.items():
        if value is None:
            profile.pop(attr, None)
        else:
            profile[attr] = value


def record_customer_id(record: Mapping[str, Any]) -> str:
    value = record.get("customer_id")
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise EventError("missing 'customer_id'")
    return value.strip()


def convert(raw: Any, kind: str, what: str) -> Any:
    """A raw JSON/CSV value as the declared type; EventError naming the field otherwise.

    Numbers must fit what the engines hold: an int in 64 bits, a decimal below 10^100 in
    size with no digits past the 100th decimal place (it becomes a float for conditions).
    """
    if type(raw) is int and kind == "int" and -(2**63) <= raw < 2**63:
        return raw  # the usual case, as the checks below would answer it (bool is no int here)
    try:
        if kind == "string":
            if isinstance(raw, dict | list):
                raise ValueError
            return str(raw)
        if kind == "int":
            too_long = isinstance(raw, str) and len(raw) > 40  # int() refuses 4,300 digits
            if (isinstance(raw, float) and abs(raw) == float("inf")) or \
                    (too_long and raw.strip().lstrip("+-").isdigit()):
                raise _out_of_range(what, raw, "the 64-bit integer range")
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError
            number = int(raw)
            if not -(2**63) <= number < 2**63:
                raise _out_of_range(what, raw, "the 64-bit integer range")
            return number
        if kind == "decimal":
            if isinstance(raw, bool):
                raise ValueError
            value = Decimal(str(raw))
            if value.is_infinite():
                raise _out_of_range(what, raw, _DECIMAL_RANGE)
            if not value.is_finite():
                raise ValueError
            exponent = value.as_tuple().exponent
            if (value and value.adjusted() >= 100) or \
                    (isinstance(exponent, int) and exponent < -100):
                raise _out_of_range(what, raw, _DECIMAL_RANGE)
            return value
        if kind == "date":
            return dt.date.fromisoformat(str(raw)[:10])
        if kind == "bool":
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise ValueError
        if kind == "list":
            if isinstance(raw, list):
                return frozenset(str(x) for x in raw)
            return frozenset(x.strip() for x in str(raw).split("|") if x.strip())
    except (ValueError, InvalidOperation, TypeError, OverflowError):
        pass
    raise EventError(f"{what}: {_shown(raw)} is not a valid {kind}",
                     f"{what} is not a valid {kind}")


_DECIMAL_RANGE = "the decimal range (below 10^100, at most 100 decimal places)"


def _shown(raw: Any) -> str:
    """A raw value for a message, cut short: a 5,000-digit number is not repeated whole."""
    text = repr(raw)
    return text if len(text) <= 60 else f"{text[:40]}… ({len(text)} characters)"


def _out_of_range(what: str, raw: Any, limit: str) -> EventError:
    return EventError(f"{what}: {_shown(raw)} is outside {limit}", "number out of range")
