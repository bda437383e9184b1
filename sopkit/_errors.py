"""Errors users see. Every one carries a location and, where we can, a suggestion."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Location:
    """Where in a playbook file a problem is: file, 1-based line and column, and the key path."""

    file: str
    line: int
    column: int
    key: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        return f"{where}: {self.key}" if self.key else where


@dataclass(frozen=True)
class Problem:
    """One mistake in a playbook: where it is, what is wrong, and what to do about it."""

    location: Location
    message: str
    suggestion: str = ""
    severity: str = "error"  # error: the playbook is invalid; warning: a lint (check --strict)

    def __str__(self) -> str:
        text = f"{self.location}: {self.message}"
        if self.suggestion:
            text += f" ({self.suggestion})"
        return text

    def to_json(self) -> dict[str, object]:
        return {
            "file": self.location.file,
            "line": self.location.line,
            "column": self.location.column,
            "key": self.location.key,
            "message": self.message,
            "suggestion": self.suggestion,
            "severity": self.severity,
        }


class SopkitError(Exception):
    """Base of every error sopkit raises on purpose."""

    exit_code = 1


class PlaybookError(SopkitError):
    """A playbook failed to load: one or more problems, each with a location."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class EventError(SopkitError):
    """An event or profile record cannot be used; the reason says why.

    `kind` groups reasons for counting (e.g. "bad 'ts'" for every unparseable time).
    """

    def __init__(self, reason: str, kind: str = "") -> None:
        super().__init__(reason)
        self.kind = kind or reason


class ChainError(SopkitError):
    """Forward chaining did not settle: the rules and tags named keep changing each other."""


class UsageError(SopkitError):
    """The command was called wrongly (missing file, bad option value)."""

    exit_code = 2


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """Return a suggestion naming the closest candidate, or a list of valid names."""
    pool = sorted(set(candidates))
    if not pool:
        return ""
    close = difflib.get_close_matches(name, pool, n=1, cutoff=0.5)
    if close:
        return f"did you mean '{close[0]}'?"
    if len(pool) <= 8:
        return "valid: " + ", ".join(f"'{c}'" for c in pool)
    return ""
