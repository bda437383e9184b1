"""Windows wake a customer at the departure that crosses a condition's constant (semantics.md
"Wake-ups"): the right instant, and no evaluation for departures that change nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

import sopkit
from sopkit._runtime.observe import Observation

PLAYBOOK = Path(__file__).parent / "data" / "semantics" / "window_crossing.toml"


def _runtime() -> tuple[sopkit.Runtime, list[str]]:
    """A runtime over the window playbook and the instants it evaluated customer c1 at."""
    rt = sopkit.Runtime(sopkit.load_playbook(PLAYBOOK), engine="native")
    seen: list[str] = []

    def trace(obs: Observation) -> None:
        if obs.customer is not None and obs.customer.customer_id == "c1":
            seen.append(rt.calendar.format(obs.now))

    rt.observe(trace, "evaluation")
    return rt, seen


def _buy(rt: sopkit.Runtime, day: int, amount: str) -> list[sopkit.Action]:
    return rt.ingest({"customer_id": "c1", "type": "purchase",
                      "ts": f"2024-03-{day:02d}T10:00:00", "amount": amount})


def test_count_crossing_fires_when_the_count_falls_through_the_threshold() -> None:
    """Five purchases in a 7d window: `cooling` (count < 3) fires when the third leaves,
    exactly 7 days after it, and no evaluation runs for the two departures before it."""
    rt, seen = _runtime()
    for day in (1, 2, 3, 4, 5):
        _buy(rt, day, "10")
    seen.clear()
    actions = rt.advance("2024-03-10T12:00:00")
    cooling = [a.time for a in actions if a.rule == "cooling"]
    assert cooling == ["2024-03-10T10:00:00+08:00"]
    assert seen == ["2024-03-10T10:00:00+08:00"]  # not 03-08 or 03-09
    assert rt.state("c1").metrics["purchases_7d"] == 2


@pytest.mark.parametrize(("amounts", "fires", "spend"), [
    # 165 falls to 105 when the 60 leaves on 03-08 (still above), to 75 when the 30 leaves
    (("60", "30", "40", "35"), "2024-03-09T10:00:00+08:00", 75.0),
    # landing exactly on the constant counts: 200 - 30 - 70 = 100 on 03-09
    (("30", "70", "100"), "2024-03-09T10:00:00+08:00", 100.0),
])
def test_sum_crossing_fires_when_the_total_reaches_the_threshold(
        amounts: tuple[str, ...], fires: str, spend: float) -> None:
    """`spend_7d <= 100` fires at the departure that brings the total to 100 or less, with
    the facts and text of that instant."""
    rt, _ = _runtime()
    for day, amount in enumerate(amounts, start=1):
        _buy(rt, day, amount)
    actions = rt.advance("2024-03-20T00:00:00")
    (dropped,) = [a for a in actions if a.rule == "spend_dropped"]
    assert dropped.time == fires
    assert dropped.facts == {"spend_7d": spend}
    assert f"{spend:g} 元" in dropped.details["message"]


def test_average_is_followed_through_every_departure() -> None:
    """An average is not monotone: `avg_7d > 50` re-enters when a small amount leaves."""
    rt, _ = _runtime()
    _buy(rt, 1, "10")
    _buy(rt, 2, "80")
    actions = rt.advance("2024-03-09T00:00:00")
    assert [a.time for a in actions if a.rule == "avg_high"] == ["2024-03-08T10:00:00+08:00"]


def test_departures_that_cross_nothing_run_no_evaluation() -> None:
    """Ten purchases on one day, none compared beyond 3: their ten departures at one instant
    are one evaluation, and the quiet days after them none at all."""
    rt, seen = _runtime()
    for _ in range(10):
        _buy(rt, 1, "100")
    seen.clear()
    rt.advance("2024-06-01T00:00:00")
    assert seen == ["2024-03-08T10:00:00+08:00"]
