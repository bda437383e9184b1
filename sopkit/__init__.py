"""sopkit: customer-retention SOPs as code.

The public API is what `__all__` lists (pinned by tests/test_exported_members.py); modules
whose names start with an underscore are private.
"""

from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"

from ._compile import compile_playbook
from ._errors import (
    ChainError,
    EventError,
    Location,
    PlaybookError,
    Problem,
    SopkitError,
    UsageError,
)
from ._load import LoadedPlaybook, load
from ._runtime import Action, CustomerView, Runtime
from ._simulate import Summary, simulate


def load_playbook(path: str | Path) -> LoadedPlaybook:
    """Load and check a playbook; raise PlaybookError listing every problem found."""
    return load(path)


__all__ = [
    "Action",
    "ChainError",
    "CustomerView",
    "EventError",
    "LoadedPlaybook",
    "Location",
    "PlaybookError",
    "Problem",
    "Runtime",
    "SopkitError",
    "Summary",
    "UsageError",
    "__version__",
    "compile_playbook",
    "load_playbook",
    "simulate",
]
