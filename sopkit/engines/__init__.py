"""Rule engines: each evaluates every predicate of a RuleIR against one customer's facts."""

from __future__ import annotations

from typing import Any

from .._errors import UsageError
from .base import Engine

ENGINES = ("durable",)


def create_engine(name: str, ir: dict[str, Any]) -> Engine:
    """An engine for `ir`; `durable` is the default and the only one so far."""
    if name == "durable":
        from .durable import DurableEngine  # the only module that imports durable

        return DurableEngine(ir)
    raise UsageError(f"unknown engine '{name}' (known: {', '.join(ENGINES)})")


__all__ = ["ENGINES", "Engine", "create_engine"]
