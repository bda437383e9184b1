"""What the runtime holds about the whole population, shared by its parts: the customers, the
counters a report samples, the population facts in force (RFM breakpoints, CLV parameters)
and the policy counters shared by all customers."""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sopkit._runtime.policy import PolicyState
from sopkit._runtime.records import CustomerState
from sopkit._stats import rfm as _rfm


@dataclass
class Population:
    """The state shared by the per-customer core, the action path and the coordinator."""

    customers: dict[str, CustomerState] = field(default_factory=dict)
    # customers per stage right now (None: not evaluated yet or no stage applies), kept up to
    # date as stages change so a report can sample it every day at no cost
    stage_counts: Counter[str | None] = field(default_factory=Counter)
    touched: set[str] = field(default_factory=set)  # customers changed since the last export
    policy_state: PolicyState = field(default_factory=PolicyState)
    # the population facts in force: set by the coordinator's refits, read by the core
    rfm_breaks: tuple[_rfm.Breaks, _rfm.Breaks, _rfm.Breaks] | None = None
    clv_params: tuple[Any, Any] | None = None
    seq: itertools.count[int] = field(default_factory=itertools.count)  # delayed firings
    _sets: dict[frozenset[str], frozenset[str]] = field(default_factory=dict)

    def interned(self, names: frozenset[str]) -> frozenset[str]:
        """One shared object per distinct set of names (customers' tags, sticky truths)."""
        return self._sets.setdefault(names, names)

    def set_stage(self, cs: CustomerState, stage: str | None) -> None:
        """Move the customer to `stage`, keeping the per-stage counts."""
        self.stage_counts[cs.stage] -= 1
        self.stage_counts[stage] += 1
        cs.stage = stage
