"""Rule engines: each evaluates every predicate of a RuleIR against one customer's facts."""

from __future__ import annotations

import sys
from typing import Any

from sopkit._errors import UsageError

from .base import Engine

ENGINES = ("durable", "native")
DEFAULT = "durable"


def durable_available() -> bool:
    """Whether durable-rules can be imported here (it cannot on Python 3.13+)."""
    try:
        from . import durable  # noqa: F401  # only probing: the backend imports durable
    except ImportError:
        return False
    return True


def resolve(name: str) -> tuple[str, str | None]:
    """The engine to use for `name`, and a notice when it had to fall back."""
    if name not in ENGINES:
        raise UsageError(f"unknown engine '{name}' (known: {', '.join(ENGINES)})")
    if name == "durable" and not durable_available():
        version = ".".join(map(str, sys.version_info[:2]))
        return "native", (f"notice: durable-rules cannot be imported on Python {version}; "
                          "using the native engine (same results, see docs/engines.md)")
    return name, None


def create_engine(name: str, ir: dict[str, Any]) -> Engine:
    """An engine for `ir`: `durable` (the default) or `native`."""
    if name == "durable":
        from .durable import DurableEngine  # the only module that imports durable

        return DurableEngine(ir)
    if name == "native":
        from .native import NativeEngine

        return NativeEngine(ir)
    raise UsageError(f"unknown engine '{name}' (known: {', '.join(ENGINES)})")


__all__ = ["DEFAULT", "ENGINES", "Engine", "create_engine", "durable_available", "resolve"]
