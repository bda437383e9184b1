"""Reading event and profile records from JSONL or CSV (optionally gzip-compressed).

Records stream one at a time with their line number; a line that cannot be read becomes a
`BadRecord` so the caller can quarantine it and go on.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any


@dataclass(frozen=True)
class Record:
    line: int
    data: dict[str, Any]


@dataclass(frozen=True)
class BadRecord:
    line: int
    raw: str
    reason: str
    kind: str


def record_format(path: Path) -> str:
    """'csv' or 'jsonl', from the file name (before any .gz)."""
    name = path.name.removesuffix(".gz")
    return "csv" if name.endswith(".csv") else "jsonl"


def read_records(path: Path, progress: Any = None) -> Iterator[Record | BadRecord]:
    """Yield each record of a JSONL or CSV file; `progress(n_bytes)` is told how far we are."""
    kind = record_format(path)
    with path.open("rb") as raw_file:
        compressed = path.suffix == ".gz"
        binary: IO[bytes] = (gzip.GzipFile(fileobj=raw_file) if compressed  # type: ignore[assignment]  # GzipFile is a binary IO
                             else raw_file)
        text = io.TextIOWrapper(binary, encoding="utf-8", newline="")

        def tell() -> None:
            if progress is not None:
                progress(raw_file.tell())

        if kind == "csv":
            yield from _csv_records(text, tell)
        else:
            yield from _jsonl_records(text, tell)


def _jsonl_records(text: IO[str], tell: Any) -> Iterator[Record | BadRecord]:
    for number, line in enumerate(text, start=1):
        if number % 2048 == 0:
            tell()
        stripped = line.strip()
        if not stripped:
            continue
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError as exc:
            yield BadRecord(number, stripped, f"not valid JSON: {exc.msg} at column {exc.colno}",
                            "not valid JSON")
            continue
        if not isinstance(data, dict):
            yield BadRecord(number, stripped, "not a JSON object", "not a JSON object")
            continue
        yield Record(number, data)
    tell()


def _csv_records(text: IO[str], tell: Any) -> Iterator[Record | BadRecord]:
    reader = csv.reader(text)
    header: list[str] | None = None
    for row in reader:
        number = reader.line_num
        if number % 2048 == 0:
            tell()
        if not row or all(not cell.strip() for cell in row):
            continue
        if header is None:
            header = [cell.strip() for cell in row]
            continue
        if len(row) != len(header):
            yield BadRecord(number, ",".join(row),
                            f"has {len(row)} columns, the header has {len(header)}",
                            "wrong number of columns")
            continue
        yield Record(number, {k: v for k, v in zip(header, row, strict=True) if v != ""})
    tell()


class Quarantine:
    """Collects records that could not be used, with their reasons; writes them as JSONL."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.count = 0
        self.reasons: dict[str, int] = {}
        self._file: IO[str] | None = None

    def add(self, source: str, line: int, reason: str, record: Any, kind: str = "") -> None:
        """Keep one bad record; `kind` groups reasons in the summary (default: the reason)."""
        self.count += 1
        kind = kind or reason
        self.reasons[kind] = self.reasons.get(kind, 0) + 1
        if self.path is None:
            return
        if self._file is None:
            self._file = self.path.open("w", encoding="utf-8")
        entry = {"source": source, "line": line, "reason": reason, "record": record}
        self._file.write(json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
