"""`sopkit check` of `[ingest.segment]`: the event types and field names a mapping names.

Called by the cross-reference checker in `validate.py` with itself, so problems carry the
same locations and suggestions as every other check.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sopkit._errors import Problem, did_you_mean
from sopkit._playbook import models as m

CONSENT_FIELDS = {"opt_out": ["channel"], "opt_in": ["channel"]}
"""The built-in event types a Segment event may become, and their fields."""


def check_ingest(checker: Any) -> Iterator[Problem]:
    """Every problem of the playbook's `[ingest.segment]`; `checker` is validate's _Checker."""
    pb: m.Playbook = checker.pb
    segment = pb.ingest.segment
    if segment is None:
        return
    types = [*pb.events, *CONSENT_FIELDS]
    for name, mapping in segment.events.items():
        path = ("ingest", "segment", "events", name)
        if mapping.type not in types:
            yield checker.problem((*path, "type"), f"unknown event type '{mapping.type}'",
                                  did_you_mean(mapping.type, types) or
                                  f"declare it: [events.{mapping.type}]")
            continue
        fields = list(pb.events.get(mapping.type, {})) or CONSENT_FIELDS.get(mapping.type, [])
        for prop, target in mapping.properties.items():
            if target not in fields:
                yield checker.problem(
                    (*path, "properties", prop),
                    f"'{target}' is not a field of event '{mapping.type}'",
                    did_you_mean(target, fields) or
                    f"its fields: {', '.join(fields) or 'none'}")
    attrs = list(pb.profile)
    for trait, target in segment.traits.items():
        if target not in attrs:
            yield checker.problem(("ingest", "segment", "traits", trait),
                                  f"'{target}' is not a profile attribute",
                                  did_you_mean(target, attrs) or
                                  f"declare it: [profile] {target} = \"string\"")
