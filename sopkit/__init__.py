"""sopkit: customer-retention SOPs as code.

The public API is what `__all__` lists (pinned by tests/test_exported_members.py); modules
whose names start with an underscore are private.
"""

import os as _os

__version__ = "0.1.0"

from ._codec import StateError
from ._compile import compile_playbook
from ._dispatch import DispatchStats, Outbox
from ._embed import ClockError, NotFound, Scheduled, StateConflict, StateExport
from ._errors import (
    ChainError,
    EventError,
    Location,
    PlaybookError,
    Problem,
    SopkitError,
    UsageError,
)
from ._load import LoadedPlaybook
from ._load import load as _load_playbook
from ._outbox import Dispatcher
from ._runtime import Action, CustomerView, Runtime
from ._simulate import Summary, simulate
from ._store import OutboxRow, open_store
from ._upgrade import Upgrade, upgrade


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
    "Outbox",
    "OutboxRow",
    "PlaybookError",
    "Problem",
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
    "simulate",
    "upgrade",
]
