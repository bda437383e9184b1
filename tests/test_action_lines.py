"""The lines `simulate --out` writes: an action's line, masked or not, is exactly its record
masked by `mask_record` (or not) and written by `json.dumps(..., ensure_ascii=False)`,
whatever personal data, look-alikes or odd values the record holds."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sopkit._mask import mask, mask_record, writes_unmasked
from sopkit._offline.lines import action_line
from sopkit._runtime.records import Action


def expected(action: Action, masked: bool) -> str:
    record = action.to_json()
    return json.dumps(mask_record(record) if masked else record, ensure_ascii=False) + "\n"


def make(customer: str = "c0001", details: dict[str, Any] | None = None,
         facts: dict[str, Any] | None = None, key: str | None = None) -> Action:
    return Action("2024-05-01T10:00:00+08:00", customer, "recall", "send", key=key or
                  f"retail:1:recall:{customer}:1:0", details=details or {}, facts=facts or {})


CASES = [
    make(),
    make(details={"channel": "sms", "params": {"coupon": "BDAY20"}, "message": "李雷，你好"},
         facts={"stage": "seed", "days": 3, "spend": 12.5}),
    make("13812345678", details={"message": "hi"}),  # the customer id is a phone number
    make("c0000634", key="retail:1:campaign:double12:881892000:c0000634:1:0"),
    make(details={"message": "请致电 138 1234 5678"}),
    make(details={"params": {"to": "li.lei@example.com"}}),
    make(details={"13812345678": "a key that is a phone"}),
    make(facts={"mobile": 13812345678, "small": 123456789, "list": [1, "010-8888 6666"]}),
    make(facts={"pair": ("a", 13812345678), "none": None, "yes": True, "tiny": 1e-7}),
    make(details={"status": "overridden", "facts": "also", "time": "13812345678"}),
    make(details={"message": 'quote " back \\ tab \t nl \n 138\n12345678 \x01 \ud800'}),
    make(details={"message": "138-1234-5678@phone"}),
    make(details={7: "an int key", "n": 10**12}),
]


@pytest.mark.parametrize("masked", [True, False])
@pytest.mark.parametrize("action", CASES)
def test_line_is_the_record_written(action: Action, masked: bool) -> None:
    """Each sample action's line equals its (masked) record written by json.dumps."""
    assert action_line(action, masked) == expected(action, masked)


def test_a_field_that_is_not_text_is_written_as_the_record() -> None:
    """A non-str field (an int customer id) is written as the record writes it."""
    action = make()
    action.customer_id = 13812345678  # type: ignore[assignment]  # a wrong type on purpose
    assert action_line(action, True) == expected(action, True)
    assert action_line(action, False) == expected(action, False)


_TEXT = st.text(alphabet=st.sampled_from(list("0123456789 -@.+()li王李，:\"\\\n")),
                max_size=24)
_VALUE: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | _TEXT | st.integers(min_value=-10**14, max_value=10**14)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(customer=_TEXT, details=st.dictionaries(_TEXT, _VALUE, max_size=4),
       facts=st.dictionaries(_TEXT, _VALUE, max_size=4))
def test_any_record_is_written_as_masking_would(customer: str, details: dict[str, Any],
                                                facts: dict[str, Any]) -> None:
    """For any customer id, details and facts, the line equals the masked record written."""
    action = make(customer, details, facts)
    assert action_line(action, True) == expected(action, True)
    assert action_line(action, False) == expected(action, False)


@settings(max_examples=300, deadline=None)
@given(value=_VALUE)
def test_unmasked_only_when_masking_changes_nothing(value: Any) -> None:
    """writes_unmasked says True only for a value that mask writes the same."""
    text = json.dumps(value, ensure_ascii=False)
    if writes_unmasked(text):
        assert json.dumps(mask(value), ensure_ascii=False) == text
