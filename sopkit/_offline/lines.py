"""The JSON lines `sopkit simulate --out` writes: one action record a line, masked or not.

The layout is fixed: the standard library's `json.dumps(record, ensure_ascii=False)` (", "
and ": " between items, keys in insertion order). `action_line` writes an action's record
without building the record's dict and, when masking, without masking it field by field:
when the customer id and every string, key and number the record's details and facts are
written with are ones masking leaves as they are (`sopkit._mask.writes_unmasked`, an exact
pre-check), the masked record is the record, so its line is written as is; otherwise the
record is masked (`mask_record`) and written, as before.
"""

from __future__ import annotations

import json
import json.encoder
from collections.abc import Callable
from typing import Any

from sopkit._mask import mask_record, mask_text, writes_unmasked
from sopkit._runtime.records import Action

_ENCODER = json.JSONEncoder(ensure_ascii=False)  # json.dumps(..., ensure_ascii=False)
_text: Callable[[str], str] = json.encoder.encode_basestring  # a str as JSON, as is
# The standard library's C encoder for that layout, made once: JSONEncoder.encode makes one
# a call. Without circularity markers: records are trees the runtime builds afresh.
_make = getattr(json.encoder, "c_make_encoder", None)
_chunks: Callable[[Any, int], Any] | None = None if _make is None else _make(
    None, _ENCODER.default, _text, None, ": ", ", ", False, False, True)


def _write(value: dict[str, Any]) -> str:
    """`_ENCODER.encode(value)` for a dict."""
    if _chunks is None:  # an interpreter without the C encoder
        return _ENCODER.encode(value)
    return "".join(_chunks(value, 0))


# Action.to_json's own fields: a detail with one of these names takes its place in the record
_OWN = frozenset({"time", "customer_id", "rule", "action", "status", "trigger", "key", "facts"})


def action_line(action: Action, masked: bool) -> str:
    """The line of `mask_record(action.to_json())` (of `action.to_json()` when not
    `masked`) in sopkit's fixed layout: the same text, in one pass where it can."""
    details = action.details
    if _OWN.isdisjoint(details):
        customer = action.customer_id
        try:
            head = (f'{{"time": {_text(action.time)}, "customer_id": {_text(customer)}, '
                    f'"rule": {_text(action.rule)}, "action": {_text(action.action)}, '
                    f'"status": {_text(action.status)}, "trigger": {_text(action.trigger)}, '
                    f'"key": {_text(action.key)}')
        except TypeError:  # a field that is not a str: the record's own way
            pass
        else:
            rest = dict(details)
            rest["facts"] = action.facts
            body = _write(rest)  # never "{}": it holds the facts
            # masking keeps the time, rule, action, status and trigger, and the key when it
            # keeps the customer id (mask_record)
            if not masked or (mask_text(customer) == customer and writes_unmasked(body)):
                return f"{head}, {body[1:]}\n"
    record = action.to_json()
    return _write(mask_record(record) if masked else record) + "\n"
