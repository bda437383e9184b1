"""The durable-rules backend is immune to the defects measured in durable-rules 2.0.28."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

import sopkit
from sopkit._ir import semantics as _ir
from sopkit.engines.durable import RULES_PER_RULESET, DurableEngine

DATA = Path(__file__).parent / "data"
COLLIDING = ("cust-462789", "cust-679192")  # same 32-bit sid hash inside durable-rules


def _purchase(customer: str, ts: str, amount: str = "10") -> dict[str, Any]:
    return {"customer_id": customer, "type": "purchase", "ts": ts, "amount": amount}


def test_raw_durable_mixes_colliding_sessions() -> None:
    """Without sopkit's guard, durable-rules joins facts of the two colliding sids (the defect)."""
    from durable import engine

    class Quiet(engine.Host):  # type: ignore[misc]  # durable is untyped
        def _run(self) -> None:
            return None

    pairs: list[tuple[str, str]] = []
    rule = {"all": [{"a": {"k": "a"}}, {"b": {"k": "b"}}],
            "run": lambda c: pairs.append((c.a.sid, c.b.sid))}
    host = Quiet({"collide": {"pair": rule}})
    host.assert_fact("collide", {"sid": COLLIDING[0], "k": "a"})
    host.assert_fact("collide", {"sid": COLLIDING[1], "k": "b"})
    assert pairs == [COLLIDING]


def test_colliding_customers_never_see_each_others_facts() -> None:
    """cust-462789 and cust-679192 each buy once: neither becomes a repeat customer."""
    rt = sopkit.Runtime(sopkit.load_playbook(DATA / "tiny.toml"))
    actions = []
    for day in range(1, 4):
        for customer in COLLIDING:
            actions += rt.ingest(_purchase(customer, f"2024-03-0{day}T10:00:00", "20"))
    # each customer bought three times: each gets exactly one second_purchase, for itself
    fired = [(a.customer_id, a.rule, a.details["message"]) for a in actions]
    assert fired == [
        (COLLIDING[0], "second_purchase", "谢谢第 2 次光临"),
        (COLLIDING[1], "second_purchase", "谢谢第 2 次光临"),
    ]
    assert rt.state(COLLIDING[0]).metrics["purchases"] == 3
    assert rt.state(COLLIDING[1]).metrics["purchases"] == 3


def test_one_purchase_each_does_not_leak_between_colliding_customers() -> None:
    """Interleaved single purchases of the colliding pair never fire a two-purchase rule."""
    rt = sopkit.Runtime(sopkit.load_playbook(DATA / "tiny.toml"))
    out = rt.ingest(_purchase(COLLIDING[0], "2024-03-01T10:00:00", "60"))
    out += rt.ingest(_purchase(COLLIDING[1], "2024-03-01T10:00:01", "60"))
    assert out == []
    assert "回头客" not in rt.state(COLLIDING[0]).tags


def test_no_background_threads() -> None:
    """Creating and using the engine starts no threads (durable's Host would start two)."""
    before = threading.active_count()
    rt = sopkit.Runtime(sopkit.load_playbook(DATA / "tiny.toml"))
    rt.ingest(_purchase("c1", "2024-03-01T10:00:00"))
    rt.advance("2024-06-01T00:00:00")
    assert threading.active_count() == before


def test_hundred_thousand_customers_in_one_process(tmp_path: Path) -> None:
    """100,000 customers (past durable's 1,024-session cap) simulate correctly in one process."""
    events = tmp_path / "events.jsonl"
    n = 100_000
    with events.open("w", encoding="utf-8") as f:
        for round_ in range(2):
            for i in range(n):
                amount = "150" if i % 10 == 0 else "5"
                rec = _purchase(f"c{i:06d}", f"2024-01-0{round_ + 1}T{10 + i % 8}:00:00", amount)
                f.write(json.dumps(rec) + "\n")
    # events within one round are not in ts order: sort them the way a user must
    lines = sorted(events.read_text().splitlines(), key=lambda s: json.loads(s)["ts"])
    events.write_text("\n".join(lines) + "\n")
    summary = sopkit.simulate(sopkit.load_playbook(DATA / "tiny.toml"), events)
    assert summary.customers == n
    assert summary.events_applied == 2 * n
    assert summary.quarantined == 0
    assert summary.by_rule["second_purchase"] == {"planned": n}
    assert summary.by_rule["big_spender"] == {"planned": n // 10}
    assert summary.tags == {"回头客": n}


def _wide_ir(n_rules: int) -> dict[str, Any]:
    predicates = [{"id": i, "cond": ["cmp", ">", ["slot", 0], ["const", i]], "reads": [0]}
                  for i in range(n_rules)]
    return {"predicates": predicates}


def test_rulesets_split_below_the_hang_bound() -> None:
    """600 predicates, 300 true at once, evaluate (durable hangs at 512, crashes at 64 fired)."""
    engine = DurableEngine(_wide_ir(600))
    assert all(len(rules) <= RULES_PER_RULESET + 1 for rules in engine.definitions.values())
    assert len(engine.definitions) == 10
    for _ in range(3):
        assert engine.evaluate([300]) == frozenset(range(300))


def test_facts_split_below_the_property_bound() -> None:
    """Predicates over 400 distinct facts evaluate (a durable fact holds at most 255 fields)."""
    predicates = [{"id": i, "cond": ["not", ["cmp", ">", ["slot", i], ["const", 0]]],
                   "reads": [i]} for i in range(400)]
    engine = DurableEngine({"predicates": predicates})
    facts: list[object] = [1] * 400
    facts[7] = None
    facts[399] = 0
    assert engine.evaluate(facts) == frozenset({7, 399})


def test_missing_facts_never_use_exists_operators() -> None:
    """Lowered rules avoid $ex/$nex (they misfire); `not` of a missing fact still holds."""
    cond = ["not", ["cmp", ">", ["slot", 0], ["const", 5]]]
    engine = DurableEngine({"predicates": [{"id": 0, "cond": cond, "reads": [0]}]})
    text = json.dumps(engine.definitions)
    assert "$ex" not in text and "$nex" not in text
    for value in (None, 3, 7):
        assert (0 in engine.evaluate([value])) == _ir.holds(cond, [value])


@pytest.mark.parametrize(
    ("cond", "facts"),
    [
        (["cmp", ">", ["arith", "/", ["slot", 0], ["slot", 1]], ["const", 2]], [10, 4]),
        (["cmp", ">", ["arith", "/", ["slot", 0], ["slot", 1]], ["const", 2]], [10, 0]),
        (["not", ["cmp", ">", ["arith", "/", ["slot", 0], ["slot", 1]], ["const", 2]]], [10, 0]),
        (["cmp", "<", ["const", 3], ["slot", 0]], [4, None]),
        (["cmp", "==", ["slot", 0], ["slot", 1]], ["北京", "北京"]),
        (["not", ["or", [["cmp", "==", ["slot", 0], ["const", "a"]], ["false"]]]], [None, None]),
        (["and", [["true"], ["cmp", "!=", ["slot", 0], ["const", 1]]]], [None, None]),
    ],
)
def test_lowering_agrees_with_reference_semantics(cond: list[Any], facts: list[Any]) -> None:
    """Arithmetic, flipped comparisons, nulls and constants evaluate as sopkit defines them."""
    engine = DurableEngine({"predicates": [{"id": 0, "cond": cond, "reads": [0, 1]}]})
    assert (0 in engine.evaluate(facts)) == _ir.holds(cond, facts)


def test_engine_errors_raise_instead_of_vanishing(monkeypatch: pytest.MonkeyPatch) -> None:
    """A durable failure (here: a fact past its 255-field bound) raises; nothing is swallowed."""
    from sopkit.engines import durable as backend

    monkeypatch.setattr(backend, "FIELDS_PER_FACT", 10_000)  # switch the guard off
    monkeypatch.setattr(backend, "RULES_PER_RULESET", 10_000)
    predicates = [{"id": i, "cond": ["cmp", ">", ["slot", i], ["const", 0]], "reads": [i]}
                  for i in range(300)]
    engine = backend.DurableEngine({"predicates": predicates})
    with pytest.raises(Exception, match="error code"):
        engine.evaluate([0] * 300)


def test_remembered_answers_stay_right_past_the_memo_bound(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Facts are answered by the outcomes of their comparisons: durable-rules is asked once
    per combination, and answers stay right before and after the bounded memo is cleared."""
    from sopkit.engines import durable as backend

    asked: list[str] = []
    ask = backend.DurableEngine.ask
    monkeypatch.setattr(backend.DurableEngine, "ask",
                        staticmethod(lambda handle, payload: asked.append(payload)
                                     or ask(handle, payload)))
    width = 13  # 2**13 combinations: more than the memo holds
    conds = [["cmp", ">", ["slot", i], ["const", 5]] for i in range(width)]
    conds.append(["and", [["cmp", "==", ["slot", width], ["const", "vip"]],
                          ["not", ["cmp", "<", ["slot", 0], ["slot", 1]]]]])
    engine = DurableEngine({"predicates": [{"id": i, "cond": c, "reads": list(range(width + 1))}
                                           for i, c in enumerate(conds)]})

    def facts(n: int, low: float, vip: str | None) -> list[object]:
        """Slot i above 5 where bit i of n is set; `low` below it otherwise."""
        return [8 + i if n >> i & 1 else low for i in range(width)] + [vip]

    same = [facts(n, low, vip) for n in (0, 1, 2, 3) for low in (1, 2.5, None)
            for vip in ("vip", None)]
    leaves = [*conds[:width], ["cmp", "==", ["slot", width], ["const", "vip"]],
              ["cmp", "<", ["slot", 0], ["slot", 1]]]
    combinations = {tuple(_ir.holds(leaf, v) for leaf in leaves) for v in same}
    wide = [facts(n, 0, None) for n in range(backend.MEMO + 50)]  # the memo fills
    for round_, vectors in enumerate((same, wide, same, wide[:20], same)):
        for vector in vectors:
            want = {i for i, c in enumerate(conds) if _ir.holds(c, vector)}
            assert engine.evaluate(vector) == frozenset(want), vector
        if round_ == 0:  # 48 facts, asked once per combination of outcomes
            assert len(asked) == len(combinations) == 10


def test_a_dropped_engine_gives_its_rulesets_back_to_durable() -> None:
    """Rulesets of an engine no longer referenced are deleted in durable-rules (a process
    that reloads playbooks does not keep every old rete network nor run out of handles)."""
    import gc

    import durable_rules_engine as dre

    cond = ["cmp", ">", ["slot", 0], ["const", 5]]
    engine = DurableEngine({"predicates": [{"id": 0, "cond": cond, "reads": [0]}]})
    handles = list(engine._handles)
    assert engine.evaluate([6]) == frozenset({0})
    with pytest.raises(Exception, match="309"):  # a live ruleset without a session
        dre.delete_state(handles[0], "0")
    del engine
    gc.collect()
    for handle in handles:
        with pytest.raises(Exception, match="111"):  # durable's ERR_INVALID_HANDLE
            dre.delete_state(handle, "0")
    kept = DurableEngine({"predicates": [{"id": 0, "cond": cond, "reads": [0]}]})
    assert kept.evaluate([6]) == frozenset({0}) and kept.evaluate([5]) == frozenset()
