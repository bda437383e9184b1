"""Property: both engines agree with sopkit's reference semantics on any condition."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sopkit._ir import semantics as _ir
from sopkit.engines.durable import DurableEngine
from sopkit.engines.native import NativeEngine

N_SLOTS = 4
numbers = st.one_of(st.none(), st.integers(-3, 12), st.sampled_from([0.5, 2.5, 7.25]))
slot = st.builds(lambda i: ["slot", i], st.integers(0, N_SLOTS - 1))
const = st.builds(lambda v: ["const", v], st.integers(-2, 10))
operand = st.recursive(
    st.one_of(slot, const),
    lambda inner: st.builds(lambda op, a, b: ["arith", op, a, b],
                            st.sampled_from(["+", "-", "*", "/"]), inner, inner),
    max_leaves=3,
)
compare = st.builds(lambda op, a, b: ["cmp", op, a, b],
                    st.sampled_from(["==", "!=", "<", "<=", ">", ">="]), operand, operand)
condition = st.recursive(
    st.one_of(compare, st.just(["true"]), st.just(["false"])),
    lambda inner: st.one_of(
        st.builds(lambda c: ["not", c], inner),
        st.builds(lambda cs: ["and", cs], st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda cs: ["or", cs], st.lists(inner, min_size=1, max_size=3)),
    ),
    max_leaves=6,
)


@pytest.mark.parametrize("engine", [DurableEngine, NativeEngine])
@settings(max_examples=300, deadline=None)
@given(st.lists(condition, min_size=1, max_size=70),
       st.lists(st.lists(numbers, min_size=N_SLOTS, max_size=N_SLOTS), min_size=1, max_size=6))
def test_engine_matches_reference(engine: Any, conds: list[Any],
                                  fact_sets: list[list[Any]]) -> None:
    """For random conditions (nulls, arithmetic, not/and/or) and facts, each engine says what
    the reference semantics say; durable-rules too when asked about every fact (the durable
    engine asks it once per combination of comparison outcomes)."""
    ir = {"predicates": [{"id": i, "cond": c, "reads": list(range(N_SLOTS))}
                         for i, c in enumerate(conds)]}
    compiled = engine(ir)
    for facts in fact_sets:
        expected = {i for i, c in enumerate(conds) if _ir.holds(c, facts)}
        assert compiled.evaluate(facts) == expected
        if isinstance(compiled, DurableEngine):  # each fact's own answer, not a remembered one
            asked = {pid for group, handle in zip(compiled._groups, compiled._handles,
                                                   strict=True)
                     for pid in compiled.ask(handle, compiled.payload(group, facts))}
            assert asked == expected


def test_native_refuses_a_slot_that_is_not_an_int() -> None:
    """A malformed IR cannot put anything but an int into the compiled code."""
    ir = {"predicates": [{"id": 0, "cond": ["cmp", ">", ["slot", "__import__('os')"],
                                            ["const", 1]], "reads": []}]}
    with pytest.raises(TypeError, match="slot index"):
        NativeEngine(ir)


def test_native_constants_are_values_not_code() -> None:
    """A string constant that looks like code is compared as text, never run."""
    text = "__import__('os').system('false')"
    ir = {"predicates": [{"id": 0, "cond": ["cmp", "==", ["slot", 0], ["const", text]],
                          "reads": [0]}]}
    engine = NativeEngine(ir)
    assert engine.evaluate([text]) == {0}
    assert engine.evaluate(["x"]) == frozenset()
