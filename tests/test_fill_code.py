"""The facts vector is filled by code made per plan, with no playbook text in that code."""

from __future__ import annotations

from array import array
from typing import Any

from code_helpers import code_strings

from sopkit._runtime.facts import SlotPlan, engine_value
from sopkit._runtime.fillcode import compile_fill
from sopkit._runtime.records import CustomerState

HOSTILE = '"]; import os; os.system("echo pwned"); x = ["'


def _plan() -> SlotPlan:
    return SlotPlan(builtin=[(0, "stage"), (1, "today")], profile=[(2, HOSTILE, False)],
                    metric=[], score=[(3, 0)], tag=[(4, HOSTILE), (5, "vip")],
                    contains=[(6, "opt_out", HOSTILE)], rfm=[], clv=[])


def _customer() -> CustomerState:
    cs = CustomerState("c1", metrics=[], scores=[42.0], rule_truth=bytearray(),
                       fired=[], attempts=[], last_fired=array("q"))
    cs.stage = "growth"
    cs.tags = frozenset({HOSTILE})
    cs.profile = {HOSTILE: "value", "opt_out": [HOSTILE]}
    return cs




def test_code_like_names_are_read_as_data() -> None:
    """Tag, attribute and list-item names that look like code are read as the values they name."""
    fill = compile_fill(_plan(), [], lambda day: True, engine_value)
    facts: list[Any] = [None] * 7
    fill(facts, _customer(), 0, 730_000)
    assert facts == ["growth", 730_000, "value", 42.0, True, False, True]


def test_the_code_holds_no_playbook_text() -> None:
    """No name or string the playbook spells appears in the made function's code."""
    fill = compile_fill(_plan(), [], lambda day: True, engine_value)
    assert not {HOSTILE, "vip", "opt_out"} & code_strings(fill.__code__)
    assert fill.__globals__["__builtins__"] == {}  # it can call only what the plan binds
