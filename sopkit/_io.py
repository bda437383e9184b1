"""Reading event and profile records from JSONL or CSV (optionally gzip-compressed).

Records stream one at a time with their line number; a line that cannot be read becomes a
`BadRecord` so the caller can quarantine it and go on.
"""

from __future__ import annotations

import csv
import gzip
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ._errors import UsageError
from ._mask import mask


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
    """Yield each record of a JSONL or CSV file; `progress(n_bytes)` is told how far we are.

    A line that is not UTF-8 becomes a BadRecord; a `.gz` file that is not gzip raises
    UsageError naming the file.
    """
    kind = record_format(path)
    with path.open("rb") as raw_file:
        binary: IO[bytes] = (gzip.GzipFile(fileobj=raw_file)  # type: ignore[assignment]  # a binary IO
                             if path.suffix == ".gz" else raw_file)
        bad: list[BadRecord] = []

        def tell() -> None:
            if progress is not None:
                progress(raw_file.tell())

        lines = _decoded(binary, bad, tell)
        try:
            if kind == "csv":
                yield from _csv_records(lines, bad)
            else:
                yield from _jsonl_records(lines, bad)
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
            raise UsageError(f"{path}: cannot read it as gzip ({exc})") from None
        yield from bad
        tell()


def _decoded(binary: IO[bytes], bad: list[BadRecord], tell: Any) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line; a line that is not UTF-8 goes to `bad` instead."""
    for number, raw in enumerate(binary, start=1):
        if number % 2048 == 0:
            tell()
        try:
            yield number, raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad.append(BadRecord(number, raw.decode("utf-8", "replace").strip(),
                                 f"not UTF-8 text: {exc.reason} at byte {exc.start}",
                                 "not UTF-8 text"))


def _jsonl_records(lines: Iterator[tuple[int, str]],
                   bad: list[BadRecord]) -> Iterator[Record | BadRecord]:
    for number, line in lines:
        yield from _flush(bad)
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


def _flush(bad: list[BadRecord]) -> Iterator[BadRecord]:
    while bad:
        yield bad.pop(0)


def _csv_records(lines: Iterator[tuple[int, str]],
                 bad: list[BadRecord]) -> Iterator[Record | BadRecord]:
    numbers: list[int] = []

    def texts() -> Iterator[str]:
        for number, text in lines:
            numbers.append(number)
            yield text

    header: list[str] | None = None
    for row in csv.reader(texts()):
        yield from _flush(bad)
        number = numbers[-1] if numbers else 0
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


class Quarantine:
    """Collects records that could not be used, with their reasons; writes them as JSONL."""

    def __init__(self, path: Path | None, masked: bool = False, append: bool = False) -> None:
        self.path = path
        self.masked = masked
        self.append = append  # a live run resumes: keep what earlier runs quarantined
        if path is not None and path.exists() and not append:
            path.unlink()  # a file left by an earlier run must not pass for this run's
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
            self._file = self.path.open("a" if self.append else "w", encoding="utf-8")
        entry = {"source": source, "line": line, "reason": reason,
                 "record": mask(record) if self.masked else record}
        self._file.write(json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
