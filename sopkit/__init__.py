"""sopkit: customer-retention SOPs as code.

The public API is what `__all__` lists (pinned by tests/test_exported_members.py); modules
whose names start with an underscore are private.
"""

import os as _os

from sopkit._errors import (
    ChainError,
    EventError,
    Location,
    PlaybookError,
    Problem,
    SopkitError,
    UsageError,
)
from sopkit._ir.compile import compile_playbook
from sopkit._live.dispatch import DispatchStats, Outbox
from sopkit._live.openstore import open_store
from sopkit._live.outbox import Dispatcher
from sopkit._live.store import OutboxRow
from sopkit._live.upgrade import Upgrade, upgrade
from sopkit._offline.report import ReportData, render_report, write_report
from sopkit._offline.simulate import Summary, simulate
from sopkit._playbook.load import LoadedPlaybook
from sopkit._playbook.load import load as _load_playbook
from sopkit._runtime.codec import StateError
from sopkit._runtime.embed import Scheduled, StateExport
from sopkit._runtime.errors import ClockError, NotFound, StateConflict
from sopkit._runtime.observe import Observation
from sopkit._runtime.records import Action, CustomerView
from sopkit._runtime.runtime import Runtime
from sopkit._version import __version__


def load_playbook(path: str | _os.PathLike[str]) -> LoadedPlaybook:
    """Load and check a playbook; raise PlaybookError listing every problem found."""
    return _load_playbook(_os.fspath(path))


__all__ = [
    "Action",
    "ChainError",
    "ClockError",
    "CustomerView",
    "DispatchStats",
    "Dispatcher",
    "EventError",
    "LoadedPlaybook",
    "Location",
    "NotFound",
    "Observation",
    "Outbox",
    "OutboxRow",
    "PlaybookError",
    "Problem",
    "ReportData",
    "Runtime",
    "Scheduled",
    "SopkitError",
    "StateConflict",
    "StateError",
    "StateExport",
    "Summary",
    "Upgrade",
    "UsageError",
    "__version__",
    "compile_playbook",
    "load_playbook",
    "open_store",
    "render_report",
    "simulate",
    "upgrade",
    "write_report",
]
