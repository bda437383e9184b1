"""Checking input records (sopkit/_runtime/inputs.py), seed-23 sample of the split runtime.

Each test feeds records to a real Runtime through its public API (issue 14) and reads what
a host sees: the actions, the customer's state, or the EventError and its message.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

import sopkit

PLAYBOOK = """\
[playbook]
name = "inputs"
timezone = "Asia/Shanghai"

[profile]
name = "string"
level = "int"
interests = "list"

[tags.coffee]
when = '"咖啡" in profile.interests'

[events.purchase]

[metrics]
purchases = { kind = "count", event = "purchase" }
"""


def _runtime(tmp_path: Path) -> sopkit.Runtime:
    path = tmp_path / "inputs.toml"
    path.write_text(PLAYBOOK, encoding="utf-8")
    return sopkit.Runtime(sopkit.load_playbook(path), engine="native")


def _buy(ts: str, event_id: str) -> dict[str, str]:
    return {"customer_id": "c1", "type": "purchase", "ts": ts, "event_id": event_id}


def test_an_event_id_exactly_30_days_old_is_still_a_duplicate(tmp_path: Path) -> None:
    """An id applied exactly 30 days before is still "within the last 30 days": refused."""
    rt = _runtime(tmp_path)
    rt.ingest(_buy("2025-01-01T10:00:00", "order-1"))
    rt.ingest(_buy("2025-01-31T10:00:00", "order-2"))
    with pytest.raises(sopkit.EventError, match="duplicate event_id 'order-1'"):
        rt.ingest(_buy("2025-01-31T10:00:00", "order-1"))
    assert rt.state("c1").metrics["purchases"] == 2


def test_an_event_id_30_days_and_a_second_old_is_applied_again(tmp_path: Path) -> None:
    """One second past the 30-day window the id is forgotten and the purchase counts again."""
    rt = _runtime(tmp_path)
    rt.ingest(_buy("2025-01-01T10:00:00", "order-1"))
    rt.ingest(_buy("2025-01-31T10:00:01", "order-2"))
    rt.ingest(_buy("2025-01-31T10:00:01", "order-1"))
    assert rt.state("c1").metrics["purchases"] == 3


def test_a_staff_departure_with_a_host_datetime_hands_customers_over(tmp_path: Path) -> None:
    """A host passing its own datetime as a staff_departed `ts` gets the hand-over."""
    rt = _runtime(tmp_path)
    rt.add_profile({"customer_id": "c1", "name": "王", "owner": "zhang"})
    (moved,) = rt.ingest({"type": "staff_departed", "staff": "zhang", "to": "li",
                          "ts": dt.datetime(2025, 3, 1, 10, 0)})
    assert (moved.time, moved.details["to"]) == ("2025-03-01T10:00:00+08:00", "li")
    assert rt.state("c1").owner == "li"


def test_a_staff_departure_in_year_1800_is_refused_as_out_of_range(tmp_path: Path) -> None:
    """A staff_departed `ts` outside 1900-2999 is an EventError saying so, nobody moves."""
    rt = _runtime(tmp_path)
    rt.add_profile({"customer_id": "c1", "name": "王", "owner": "zhang"})
    with pytest.raises(sopkit.EventError, match="outside the supported time range"):
        rt.ingest({"type": "staff_departed", "staff": "zhang", "to": "li",
                   "ts": "1800-03-01T10:00:00"})
    assert rt.state("c1").owner == "zhang"


def test_a_json_object_for_a_string_attribute_is_refused(tmp_path: Path) -> None:
    """A profile `name` given as a JSON object or list is refused, not stored as its repr."""
    rt = _runtime(tmp_path)
    for bad in ({"first": "王"}, ["王"]):
        with pytest.raises(sopkit.EventError, match=r"profile attribute 'name': .* is not a "
                                                    r"valid string"):
            rt.add_profile({"customer_id": "c1", "name": bad})


def test_a_list_attribute_given_as_a_json_array_holds_its_items(tmp_path: Path) -> None:
    """`interests` given as ["茶", "咖啡"] holds 咖啡, so a tag on it is set."""
    rt = _runtime(tmp_path)
    rt.add_profile({"customer_id": "c1", "interests": ["茶", "咖啡"]})
    rt.add_profile({"customer_id": "c2", "interests": ["茶"]})
    rt.ingest(_buy("2025-01-01T10:00:00", "order-1"))
    rt.ingest({"customer_id": "c2", "type": "purchase", "ts": "2025-01-01T10:00:00"})
    assert (rt.state("c1").tags, rt.state("c2").tags) == (frozenset({"coffee"}), frozenset())


def test_a_bad_value_is_quoted_whole_up_to_60_characters_and_cut_after(tmp_path: Path) -> None:
    """A refused value's repr of 60 characters is quoted whole; one of 61 is cut to 40."""
    rt = _runtime(tmp_path)
    with pytest.raises(sopkit.EventError) as whole:
        rt.add_profile({"customer_id": "c1", "level": "x" * 58})
    assert f"'level': '{'x' * 58}' is not a valid int" in str(whole.value)
    with pytest.raises(sopkit.EventError) as cut:
        rt.add_profile({"customer_id": "c1", "level": "x" * 59})
    assert f"'level': '{'x' * 39}… (61 characters) is not a valid int" in str(cut.value)
