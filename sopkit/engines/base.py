"""The seam between the runtime and a rule engine: one method."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Engine(Protocol):
    """Evaluates all predicates of one RuleIR for one customer at a time.

    `facts[i]` is slot i's value (None when missing). The result is the set of predicate ids
    that hold. An engine keeps no customer state between calls: the runtime owns state.
    """

    name: str

    def evaluate(self, facts: Sequence[object]) -> frozenset[int]: ...
