"""The errors the runtime's public API raises besides EventError and ChainError: each a
SopkitError, and also the built-in error an `except` written before them would catch."""

from __future__ import annotations

from sopkit._errors import SopkitError, UsageError


class NotFound(SopkitError, KeyError):
    """A customer or an action key this runtime does not hold (also a KeyError)."""

    def __str__(self) -> str:  # KeyError would show the message quoted
        return str(self.args[0]) if self.args else ""


class ClockError(SopkitError, ValueError):
    """A time that cannot be used: not ISO 8601, or before the runtime's clock (also a
    ValueError)."""


class StateConflict(SopkitError):
    """Two writers: state older than what this runtime already exported was loaded over it."""


class BadArgument(UsageError, ValueError):
    """An argument that cannot work (a batch of 0, a negative limit); also a ValueError."""
