"""Reading event and profile records from JSONL or CSV (optionally gzip-compressed), or
Parquet (`sopkit._parquet`, with the `parquet` extra).

Records stream one at a time with their line number; a line that cannot be read becomes a
`BadRecord` so the caller can quarantine it and go on: not UTF-8, not JSON, a number of more
than 4,300 digits, containers nested more than MAX_DEPTH deep. A file of another format is a
UsageError; a gzip file that ends early is an InputError after its last whole line.
"""

from __future__ import annotations

import csv
import gzip
import json
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from sopkit import _json
from sopkit._errors import UsageError
from sopkit._mask import mask, mask_text
from sopkit._parquet import parquet_records
from sopkit._records import BadRecord as BadRecord  # re-exported: the readers' results
from sopkit._records import InputError as InputError
from sopkit._records import Record as Record
from sopkit._records import cut as _cut

MAX_DEPTH = 32  # lists and objects inside a record; a deeper one is quarantined
FORMATS = (".jsonl", ".ndjson", ".json", ".csv")  # each also with .gz
PARQUET = ".parquet"  # read with pyarrow (the `parquet` extra); never .gz
_CHUNK = 1 << 16
TRUNCATED = "truncated file"  # the kind of the partial last line of a .gz that ends early


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


# NaN and Infinity are not JSON; Python's decoder would take them as floats
_DECODER = json.JSONDecoder(parse_constant=_no_constant)


def record_format(path: Path) -> str:
    """'csv', 'jsonl' or 'parquet', from the file name (before any .gz); UsageError for
    another."""
    lower = path.name.lower()
    if lower.endswith(PARQUET):
        return "parquet"
    name = lower.removesuffix(".gz")
    for suffix in FORMATS:
        if name.endswith(suffix):
            return "csv" if suffix == ".csv" else "jsonl"
    raise UsageError(f"{path}: unknown file format '{path.suffix or path.name}'; sopkit reads "
                     f"{', '.join(FORMATS)} (JSON Lines for all but .csv), each optionally "
                     f".gz, and {PARQUET}; convert the file to JSON Lines or CSV first")


def read_records(path: Path, progress: Any = None) -> Iterator[Record | BadRecord]:
    """Yield each record of a JSONL, CSV or Parquet file; `progress(n_bytes)` is told how
    far we are.

    A line that is not UTF-8 becomes a BadRecord; a `.gz` file that is not gzip raises
    UsageError naming the file; one that ends early or is corrupt yields what it holds (the
    partial last line as a BadRecord) and then raises InputError naming the line reached.
    A Parquet file is read as `sopkit._parquet.parquet_records` says.
    """
    kind = record_format(path)
    if kind == "parquet":
        yield from parquet_records(path, progress)
        return
    with path.open("rb") as raw_file:
        bad: list[BadRecord] = []
        broken: list[str] = []

        def tell() -> None:
            if progress is not None:
                progress(raw_file.tell())

        binary = _gzip_lines(path, raw_file, bad, broken) \
            if path.name.lower().endswith(".gz") else iter(raw_file)
        if kind == "csv":
            yield from _csv_records(_decoded(binary, bad, tell), bad)
        else:
            yield from _jsonl_fast(binary, bad, tell)
        yield from bad
        tell()
        if broken:
            raise InputError(broken[0])


def _gzip_lines(path: Path, raw_file: IO[bytes], bad: list[BadRecord],
                broken: list[str]) -> Iterator[bytes]:
    """The lines of a gzip stream. If it ends early or is corrupt, the partial last line
    goes to `bad` and the reason to `broken`; a file that is not gzip at all: UsageError."""
    stream = gzip.GzipFile(fileobj=raw_file)
    rest = b""
    number = 0
    while True:
        try:
            chunk = stream.read(_CHUNK)
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
            if number == 0 and not rest and isinstance(exc, gzip.BadGzipFile):
                raise UsageError(f"{path}: cannot read it as gzip ({exc})") from None
            what = ("ends early (truncated: the file was cut short)"
                    if isinstance(exc, EOFError) else f"is corrupt ({exc})")
            if rest:
                bad.append(BadRecord(number + 1, _cut(rest.decode("utf-8", "replace").strip()),
                                     "the gzip data ends inside this line", TRUNCATED))
            broken.append(f"{path}: the gzip data {what} after line {number}; the records "
                          "up to there were used. Results are incomplete: fetch the whole "
                          "file and run again")
            return
        if not chunk:
            break
        parts = (rest + chunk).split(b"\n")
        rest = parts.pop()
        for part in parts:
            number += 1
            yield part + b"\n"
    if rest:
        yield rest


def _decoded(binary: Iterator[bytes], bad: list[BadRecord],
             tell: Any) -> Iterator[tuple[int, str]]:
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


def _jsonl_fast(binary: Iterator[bytes], bad: list[BadRecord],
                tell: Any) -> Iterator[Record | BadRecord]:
    """`_jsonl_records(_decoded(binary, ...))` in one pass: a line orjson reads as a flat
    enough object, as the standard library would read it decoded and stripped, is a record
    at once; any other line (blank, padded with other whitespace, not UTF-8, not valid, not
    an object, deep, or one only the standard library decides) takes the full path."""
    known, unknown = _json.loads_known, _json.UNKNOWN
    for number, raw in enumerate(binary, start=1):
        if number % 2048 == 0:
            tell()
        if bad:
            yield from _flush(bad)
        data = known(raw, MAX_DEPTH)
        if data is not unknown and type(data) is dict:
            yield Record(number, data)
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield BadRecord(number, raw.decode("utf-8", "replace").strip(),
                            f"not UTF-8 text: {exc.reason} at byte {exc.start}",
                            "not UTF-8 text")
            continue
        yield from _jsonl_records(iter([(number, line)]), bad)


def _jsonl_records(lines: Iterator[tuple[int, str]],
                   bad: list[BadRecord]) -> Iterator[Record | BadRecord]:
    for number, line in lines:
        if bad:
            yield from _flush(bad)
        stripped = line.strip()
        if not stripped:
            continue
        try:
            # orjson where it agrees (sopkit._json); `shallow`: nesting already checked
            data, shallow = _json.loads_within(stripped, MAX_DEPTH, _DECODER)
        except json.JSONDecodeError as exc:
            yield BadRecord(number, stripped, f"not valid JSON: {exc.msg} at column {exc.colno}",
                            "not valid JSON")
            continue
        except ValueError as exc:  # an integer of more than 4,300 digits, NaN, Infinity
            if "digits" in str(exc):
                reason, kind = "number too large: an integer of more than 4,300 digits", \
                    "number too large"
            else:
                reason, kind = f"not valid JSON: {exc}", "not valid JSON"
            yield BadRecord(number, _cut(stripped), reason, kind)
            continue
        except RecursionError:
            yield BadRecord(number, _cut(stripped), f"nesting too deep: lists or objects "
                            f"more than {MAX_DEPTH} levels deep", "nesting too deep")
            continue
        if not isinstance(data, dict):
            yield BadRecord(number, _cut(stripped), "not a JSON object", "not a JSON object")
            continue
        if not shallow and not _shallow(data):
            yield BadRecord(number, _cut(stripped), f"nesting too deep: lists or objects "
                            f"more than {MAX_DEPTH} levels deep", "nesting too deep")
            continue
        yield Record(number, data)


def _shallow(data: dict[str, Any]) -> bool:
    """Whether no value of a record nests lists or objects more than MAX_DEPTH deep (checked
    without recursion; a flat record costs one type test a field)."""
    stack: list[tuple[Any, int]] = [(v, 2) for v in data.values() if isinstance(v, dict | list)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            return False
        items = value.values() if isinstance(value, dict) else value
        stack.extend((v, depth + 1) for v in items if isinstance(v, dict | list))
    return True


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
        if path is not None and not append and path.is_file():
            # a file left by an earlier run must not pass for this run's; anything else (a
            # pipe, /dev/null, a terminal) is written to as it is, never removed
            path.unlink()
        self.count = 0
        self.reasons: dict[str, int] = {}
        self._file: IO[str] | None = None

    def add(self, source: str, line: int, reason: str, record: Any, kind: str = "") -> None:
        """Keep one bad record; `kind` groups reasons in the summary (default: the reason)."""
        self.count += 1
        kind = kind or reason
        if self.masked:  # a reason may quote the record: "customer_id '138…' …"
            kind, reason, record = mask_text(kind), mask_text(reason), mask(record)
        self.reasons[kind] = self.reasons.get(kind, 0) + 1
        if self.path is None:
            return
        if self._file is None:
            self._file = self.path.open("a" if self.append else "w", encoding="utf-8")
        entry = {"source": source, "line": line, "reason": reason, "record": record}
        self._file.write(json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
