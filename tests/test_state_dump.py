"""A customer's stored state is laid out by code made per playbook and written as the standard
library would write it, whatever the names and values."""

from __future__ import annotations

import datetime as dt
from array import array
from pathlib import Path
from typing import Any

import pytest
from code_helpers import code_strings
from hypothesis import given, settings
from hypothesis import strategies as st

from sopkit._playbook.load import load
from sopkit._runtime import codec
from sopkit._runtime.dumpcode import compile_dump
from sopkit._runtime.metrics import build
from sopkit._runtime.records import NO_TIME, CustomerState
from sopkit._runtime.runtime import Runtime

HOSTILE = "'] = 1; import os; os.system('echo pwned'); x = ['"




PLAYBOOK = """
[playbook]
name = "dump"
timezone = "Asia/Shanghai"

[events.purchase]
amount = "decimal"

[metrics]
purchases = { kind = "count", event = "purchase" }
spend = { kind = "sum", event = "purchase", field = "amount" }

[scores.risk]
factors = [{ when = "purchases == 0", points = 30, label = "no purchase" }]

[channels.sms]
type = "sms"

[templates.thanks]
text = "谢谢"

[[rules]]
name = "RULE"
when = "purchases >= 1"
actions = [{ type = "send", channel = "sms", template = "thanks" }]
"""


def _runtime(folder: Path, rule: str) -> Runtime:
    path = folder / f"dump-{len(rule)}.toml"
    path.write_text(PLAYBOOK.replace("RULE", rule), encoding="utf-8")
    return Runtime(load(path), engine="native")


def test_code_like_names_are_written_as_data() -> None:
    """Rule, metric and score names that look like code are the stored state's keys, not code."""
    metric = build({"name": HOSTILE + "m", "kind": "count", "event": "purchase",
                    "field": None, "attribute": None, "window": None})
    dump = compile_dump([{"name": HOSTILE}], [metric], [{"name": HOSTILE + "s"}], 3)
    cs = CustomerState("c1", metrics=[4], scores=[1.5], rule_truth=bytearray([1]), fired=[2],
                       attempts=[3], last_fired=array("q", [NO_TIME]))
    out, _ = dump(cs)
    assert out["rules"] == {HOSTILE: {"armed_true": True, "fired": 2, "attempts": 3,
                                      "last": None}}
    assert out["metrics"] == {HOSTILE + "m": 4}
    assert out["scores"] == {HOSTILE + "s": 1.5}
    assert not {HOSTILE, HOSTILE + "m", HOSTILE + "s"} & code_strings(dump.__code__)
    assert dump.__globals__["__builtins__"] == {}  # it calls only what it was given


def _same(a: Any, b: Any) -> bool:
    """Equal, with the same types all the way down (a tuple is not a list, 1.0 not 1)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=4),
    st.decimals(allow_nan=False, allow_infinity=False, places=3),
    st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2100, 1, 1)))
_keys = st.one_of(st.text(max_size=3), st.sampled_from(["$dec", "$x", "name"]))
_values = st.recursive(_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.tuples(inner, inner),
    st.dictionaries(_keys, inner, max_size=3)), max_leaves=8)


@pytest.fixture(scope="module")
def plain(tmp_path_factory: Any) -> Runtime:
    return _runtime(tmp_path_factory.mktemp("dump"), "thanks")


def _check_written(rt: Runtime, profile: dict[str, Any], score: float) -> None:
    cs = rt.core.blank("c1")
    rt._adopt(cs)
    cs.profile = profile
    cs.scores[0] = score
    blob = rt.dump_customer("c1")
    read = codec.loads(blob)
    assert _same(read.get("profile", {}), profile)
    assert _same(read.get("scores", {}).get("risk", 0.0), score) or score == 0.0
    # the same bytes as the standard library writes for what was read
    assert blob == codec._ENCODER.encode(codec.encode(read)).encode()


@settings(max_examples=150, deadline=None)
@given(profile=st.dictionaries(_keys, _values, max_size=4),
       score=st.floats(allow_nan=False, allow_infinity=False))
def test_the_state_is_written_as_the_standard_library_writes_it(
        plain: Runtime, profile: dict[str, Any], score: float) -> None:
    """Tiny and huge floats, tuples, "$" keys, big ints, decimals and dates in a customer's
    profile and scores read back as they were, in the standard library's bytes."""
    _check_written(plain, profile, score)


@settings(max_examples=40, deadline=None)
@given(profile=st.dictionaries(_keys, _values, max_size=3))
def test_a_rule_named_with_a_dollar_is_stored_by_name(tmp_path_factory: Any,
                                                       profile: dict[str, Any]) -> None:
    """A rule whose name starts with "$" is kept under that name and read back."""
    folder = tmp_path_factory.mktemp("dump")
    rt = _runtime(folder, "$odd")
    cs = rt.core.blank("c1")
    rt._adopt(cs)
    out, check = rt.dump_layout(cs)
    assert any(item is out for item in check)  # the whole state is looked at
    cs.profile = profile
    cs.fired[0] = 1
    blob = rt.dump_customer("c1")
    read = codec.loads(blob)
    assert read["rules"] == {"$odd": {"armed_true": False, "fired": 1, "attempts": 0,
                                      "last": None}}
    assert blob == codec._ENCODER.encode(codec.encode(read)).encode()
    again = _runtime(folder, "$odd")
    again.restore(None, [("c1", blob)])
    assert again.dump_customer("c1") == blob


@pytest.mark.parametrize("edit", [{"sticky": [1e-05]}, {"tags": [2e-05]}, {"wake_at": 3e-05},
                                  {"owner": 4e-05}, {"stage": 5e-05}])
def test_an_edited_store_is_written_back_as_the_standard_library_writes_it(
        tmp_path: Path, edit: dict[str, Any]) -> None:
    """An odd value an edited store holds where sopkit writes only names and ints (a tiny
    float as a sticky tag, a wake-up or an owner) is written back in the standard library's
    bytes."""
    rt = _runtime(tmp_path, "thanks")
    rt._adopt(rt.core.blank("c1"))
    stored = codec.loads(rt.dump_customer("c1"))
    stored.update(edit)
    blob = codec._ENCODER.encode(codec.encode(stored)).encode()
    again = _runtime(tmp_path, "thanks")
    again.restore(None, [("c1", blob)])
    assert again.dump_customer("c1") == blob
