"""Every error the Runtime's public methods raise on purpose is a SopkitError, and also the
built-in error an `except` written before that would have caught."""

from __future__ import annotations

from pathlib import Path

import pytest

import sopkit

ROOT = Path(__file__).resolve().parent.parent


def _runtime() -> sopkit.Runtime:
    return sopkit.Runtime(sopkit.load_playbook(ROOT / "playbooks/retail.toml"), engine="native")


def _buy(rt: sopkit.Runtime, ts: str) -> None:
    rt.ingest({"customer_id": "c1", "type": "purchase", "ts": ts, "amount": "10"})


def test_advance_backwards_is_a_sopkit_error_and_a_value_error() -> None:
    """advance() to before the clock raises ClockError: a SopkitError and a ValueError."""
    rt = _runtime()
    _buy(rt, "2024-05-01T10:00:00")
    with pytest.raises(sopkit.ClockError) as caught:
        rt.advance("2024-04-01T00:00:00")
    assert isinstance(caught.value, sopkit.SopkitError)
    assert isinstance(caught.value, ValueError)
    assert "time only goes forward" in str(caught.value)
    assert rt.now is not None and rt.now.isoformat().startswith("2024-05-01T10:00")


def test_a_bad_time_is_a_clock_error() -> None:
    """advance() to text that is no time raises ClockError naming the text."""
    with pytest.raises(sopkit.ClockError, match="not-a-time"):
        _runtime().advance("not-a-time")


def test_state_of_an_unknown_customer_is_a_sopkit_error_and_a_key_error() -> None:
    """state() of a customer never seen raises NotFound: a SopkitError and a KeyError."""
    rt = _runtime()
    with pytest.raises(sopkit.NotFound) as caught:
        rt.state("nobody")
    assert isinstance(caught.value, sopkit.SopkitError)
    assert isinstance(caught.value, KeyError)
    assert str(caught.value).startswith("customer 'nobody' is not in this runtime")


def test_an_event_out_of_order_is_an_event_error() -> None:
    """An event before the clock raises EventError (a SopkitError) and changes nothing."""
    rt = _runtime()
    _buy(rt, "2024-05-01T10:00:00")
    before = rt.state("c1")
    with pytest.raises(sopkit.EventError, match="out of order"):
        _buy(rt, "2024-04-01T10:00:00")
    assert rt.state("c1") == before


def test_a_record_that_is_no_mapping_is_an_event_error() -> None:
    """ingest() of a list instead of a dict raises EventError, not a TypeError."""
    with pytest.raises(sopkit.EventError, match="not list"):
        _runtime().ingest(["c1", "purchase"])  # type: ignore[arg-type]  # a wrong call, on purpose


def test_an_unknown_observation_kind_is_a_usage_error() -> None:
    """observe() with a kind the runtime never emits raises UsageError naming the known ones."""
    with pytest.raises(sopkit.UsageError, match="evaluation, tag, member, firing"):
        _runtime().observe(print, "evaluations")


def test_observers_see_the_evaluation_an_event_makes() -> None:
    """An observer given to Runtime is called with the purchase's evaluation of c1."""
    seen: list[sopkit.Observation] = []
    loaded = sopkit.load_playbook(ROOT / "playbooks/retail.toml")
    rt = sopkit.Runtime(loaded, engine="native", observers=[seen.append])
    _buy(rt, "2024-05-01T10:00:00")
    evaluations = [o for o in seen if o.kind == "evaluation"]
    assert evaluations, [o.kind for o in seen]
    first = evaluations[0]
    assert first.customer is not None and first.customer.customer_id == "c1"
    assert first.event is not None and first.event[0] == "purchase"
    assert rt.calendar.format(first.now).startswith("2024-05-01T10:00:00")


MISUSES = {
    "unknown engine": lambda pb: sopkit.Runtime(pb, engine="bogus"),
    "clock bytes that are not state": lambda pb: sopkit.Runtime(pb).load_clock(b"garbage"),
    "cancel of an unknown key": lambda pb: sopkit.Runtime(pb).cancel("x", "why"),
    "a negative limit": lambda pb: sopkit.Runtime(pb).due(limit=-1),
    "advance to no time": lambda pb: sopkit.Runtime(pb).advance(None),
    "IR of another version": lambda pb: sopkit.Runtime(pb, ir={"ir_version": 0}),
    "pending of an unknown customer": lambda pb: sopkit.Runtime(pb).pending("nobody"),
    "export of an unknown customer": lambda pb: sopkit.Runtime(pb).export("nobody"),
}


@pytest.mark.parametrize("misuse", sorted(MISUSES))
def test_every_misuse_of_the_runtime_is_a_sopkit_error(misuse: str) -> None:
    """Each wrong call of a public Runtime method raises a SopkitError with a message."""
    loaded = sopkit.load_playbook(ROOT / "playbooks/retail.toml")
    with pytest.raises(sopkit.SopkitError) as caught:
        MISUSES[misuse](loaded)
    assert str(caught.value).strip()
