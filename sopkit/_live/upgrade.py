"""Deploy a new playbook version onto state a host keeps in its own tables.

The same decisions as `sopkit migrate` (docs/live.md#deploying-a-new-version), made over the
host's exports instead of sopkit's store: `_migrate.plan` reads the running version through
a small adapter, and the host writes the result in one transaction of its own.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sopkit._runtime.embed import BadArgument, StateExport

if TYPE_CHECKING:
    from sopkit._live.store import OutboxRow
    from sopkit._playbook.load import LoadedPlaybook
    from sopkit._runtime.runtime import Runtime


@dataclass
class Upgrade:
    """A new version worked out over the host's state; nothing is written.

    Commit, in one transaction: `exports` (every customer, each the next version), `clock`,
    `json.dumps(runtime.ir)` as the playbook now running, the `rows` (actions of removed
    rules recorded `cancelled`, `backfill = "qualifying"` firings), and cancel the pending
    outbox rows of each rule in `cancel_rules` with its reason. Then run `runtime`.
    """

    runtime: Runtime
    exports: list[StateExport]
    clock: bytes
    rows: list[OutboxRow]
    cancel_rules: dict[str, str]
    changes: list[dict[str, Any]] = field(default_factory=list)


class _Tables:
    """The running version as `_migrate.plan` reads a store."""

    url = "the host's tables"

    def __init__(self, ir: Mapping[str, Any], clock: bytes,
                 customers: list[StateExport]) -> None:
        from sopkit._live.loop import fingerprint

        self.meta = {"playbook": f"{ir['playbook']}:{ir['version']}",
                     "ir": json.dumps(ir, ensure_ascii=False), "runtime": clock.decode(),
                     "fingerprint": fingerprint(ir)}
        self.customers = customers

    def get_meta(self, key: str) -> str | None:
        return self.meta.get(key)

    def load_customers(self) -> Iterator[tuple[str, bytes]]:
        return ((e.customer_id, e.data) for e in self.customers)


def upgrade(playbook: LoadedPlaybook, *, previous_ir: Mapping[str, Any], clock: bytes,
            customers: Iterable[StateExport], events: str | Path | None = None,
            engine: str = "native") -> Upgrade:
    """Deploy `playbook` over the state the previous version (`previous_ir`, its
    `Runtime.ir`) left: every customer's export and the clock. `events` is the history,
    replayed into new or redefined metrics (nothing is sent)."""
    from sopkit._live.migrate import plan

    if not isinstance(previous_ir, Mapping) or "rules" not in previous_ir:
        raise BadArgument("upgrade(previous_ir=...) takes the running version's Runtime.ir "
                          "(as stored with json.dumps at its deploy)")
    held = list(customers)
    tables: Any = _Tables(previous_ir, clock, held)  # the reads plan makes of a Store
    migration = plan(playbook, tables, engine=engine,
                     events=None if events is None else Path(events))
    rt = migration.runtime
    for item in held:
        rt.versions[item.customer_id] = item.version
    rt.touched.update(rt.customers)
    return Upgrade(rt, rt.export_changed(), rt.export_clock(), migration.rows,
                   {rule: reason for rule, (reason, _) in migration.cancel.items()},
                   [c.to_json(unmasked=True) for c in migration.changes])
