"""What the input readers yield: a record with its location, or one that cannot be used.

`sopkit._io` reads JSONL and CSV, `sopkit._parquet` Parquet; both yield these, and
`sopkit._io` re-exports them for the rest of sopkit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sopkit._errors import SopkitError


class InputError(SopkitError):
    """An input file that cannot be read to its end (a truncated or corrupt .gz or Parquet
    file): the records before the break were used."""


@dataclass(frozen=True)
class Record:
    line: int  # the line of a JSONL or CSV file, the row (from 1) of a Parquet file
    data: dict[str, Any]


@dataclass(frozen=True)
class BadRecord:
    line: int
    raw: str | dict[str, Any]  # the raw line, or a Parquet row as read
    reason: str
    kind: str


def cut(text: str, limit: int = 1000) -> str:
    """A bad line as kept in the quarantine: at most `limit` characters, and says so."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters in all)"
