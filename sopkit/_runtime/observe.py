"""Observers: plain functions the runtime calls with what it does, as structlog's processors.

    rt = Runtime(loaded, observers=[print])      # every observation
    rt.observe(log.append, "tag")                # only net tag changes

An `Observation` has a `kind`:
- "evaluation": one evaluation of a customer ended (`customer`, `now`, `event`, `facts` the
  engine saw, `true` the predicates that held, `actions` it made);
- "tag": a net tag change of one evaluation or campaign action (`customer`, `tag`, `held`,
  `now`, `sequence`: the customer's count of observed tag changes, from 1);
- "member": a campaign firing's actions for one member (`customer`, `now`, `actions`);
- "firing": a campaign firing's reach (`report`, a FiringReport).

Observers see the runtime's own objects: they must not change them. An observer that raises
stops the call that made the observation (as a failing hook did).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sopkit._errors import UsageError

if TYPE_CHECKING:
    from sopkit._runtime.firings import FiringReport
    from sopkit._runtime.records import Action, CustomerState

KINDS = ("evaluation", "tag", "member", "firing")


@dataclass(frozen=True, slots=True)
class Observation:
    """One thing the runtime did (see the module's docstring for each kind's fields)."""

    kind: str
    now: int
    customer: CustomerState | None = None
    event: tuple[str, dict[str, Any]] | None = None
    facts: list[Any] | None = None
    true: frozenset[int] | None = None
    actions: list[Action] = field(default_factory=list)
    tag: str | None = None
    held: bool = False
    sequence: int = 0
    report: FiringReport | None = None


Observer = Callable[[Observation], object]


class Observers:
    """The observers of one runtime, by the kinds they want."""

    def __init__(self, observers: Iterable[Observer] = ()) -> None:
        self._by_kind: dict[str, list[Observer]] = {kind: [] for kind in KINDS}
        for fn in observers:
            self.add(fn)

    def add(self, fn: Observer, *kinds: str) -> None:
        """Call `fn` with every observation of these kinds (all kinds when none are named)."""
        if not callable(fn):
            raise UsageError(f"an observer is a function of one Observation, not "
                             f"{type(fn).__name__}")
        for kind in kinds or KINDS:
            if kind not in self._by_kind:
                raise UsageError(f"unknown observation kind {kind!r} (known: "
                                 f"{', '.join(KINDS)})")
            self._by_kind[kind].append(fn)

    def wants(self, kind: str) -> bool:
        """Whether anyone observes this kind (so the runtime can skip building it)."""
        return bool(self._by_kind[kind])

    def emit(self, observation: Observation) -> None:
        for fn in self._by_kind[observation.kind]:
            fn(observation)


class TagLog(list[tuple[str, str, bool, int, int]]):
    """An observer of "tag" that keeps (customer, tag, held, now, sequence) until drained
    (the live loop mirrors them to WeCom)."""

    def __call__(self, observation: Observation) -> None:
        assert observation.customer is not None and observation.tag is not None
        self.append((observation.customer.customer_id, observation.tag, observation.held,
                     observation.now, observation.sequence))


def tag_changes(observers: Observers, cs: CustomerState, before: frozenset[str],
                now: int) -> None:
    """Observe the customer's net tag changes since `before`, in tag order."""
    if before == cs.tags:
        return
    for tag in sorted(cs.tags ^ before):
        cs.tag_changes += 1
        observers.emit(Observation("tag", now, cs, tag=tag, held=tag in cs.tags,
                                   sequence=cs.tag_changes))
