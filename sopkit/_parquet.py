"""Reading event and profile records from Parquet files (the `parquet` extra: pyarrow).

The columns are those of a CSV file: `customer_id`, `type`, `ts`, the declared fields. The
file is read a batch of rows at a time, so a big file takes little memory; each row becomes a
`Record` with its row number (from 1) as its line, and the values plain JSON ones, as a JSONL
line would give: a timestamp or date column becomes ISO 8601 text (a timestamp without a time
zone stays without an offset: the playbook's time zone, as a CSV `ts` without one), a decimal
its text, binary data UTF-8 text. An integer `ts` is whole seconds since 1970-01-01 UTC.

A row whose value cannot be used (a `ts` of another type, a list where one value is
expected, binary data that is not UTF-8, a time out of range) is a `BadRecord` with its
reason; a file that is not Parquet or has no `customer_id` column is a UsageError naming the
file; one whose data breaks part-way raises InputError after the rows before the break.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sopkit._errors import UsageError
from sopkit._records import BadRecord, InputError, Record, cut

INSTALL = "reading Parquet needs pyarrow: pip install 'sopkit[parquet]'"
BATCH_ROWS = 4096  # rows converted at a time
# columns that hold one value; a list or a record there is quarantined
SINGLE = ("customer_id", "type", "ts", "event_id", "messageId", "owner", "staff", "to")
_PER_SECOND = {"s": 1, "ms": 1000, "us": 1_000_000, "ns": 1_000_000_000}
_EPOCH = dt.datetime(1970, 1, 1)
_EPOCH_DAY = _EPOCH.date().toordinal()
_OFFSET = re.compile(r"([+-])(\d\d):?(\d\d)")
_TS_TYPES = "ISO 8601 text, a date, a timestamp or whole seconds since 1970"


class _Unusable:
    """A value that cannot be used, and why: its row is quarantined."""

    __slots__ = ("kind", "reason", "shown")

    def __init__(self, reason: str, kind: str, shown: Any) -> None:
        self.reason, self.kind, self.shown = reason, kind, shown


def parquet_records(path: Path, progress: Callable[[int], None] | None = None
                    ) -> Iterator[Record | BadRecord]:
    """Each row of a Parquet file as a Record, or a BadRecord saying why it cannot be used;
    `progress(n_bytes)` hears how far we are (the share of rows read, in bytes)."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UsageError(f"{path}: {INSTALL}") from None
    try:
        source = pq.ParquetFile(path)
        schema = source.schema_arrow
    except (pa.ArrowException, OSError) as exc:
        raise UsageError(f"{path}: cannot read it as Parquet ({exc})") from None
    names: list[str] = list(schema.names)
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UsageError(f"{path}: more than one column named {', '.join(map(repr, twice))}")
    if "customer_id" not in names:
        raise UsageError(f"{path}: no 'customer_id' column (it has: {', '.join(names) or 'none'})"
                         "; sopkit reads the columns of a CSV file: customer_id, type, ts and "
                         "the declared fields")
    zones = {name: _zone(path, name, schema.field(name).type) for name in names}
    total = max(source.metadata.num_rows, 1)
    size = path.stat().st_size
    number = 0
    batches = _batches(source)
    while True:
        try:
            batch = next(batches, None)
            if batch is None:
                break
            columns = [_values(batch.column(i), name, zones[name])
                       for i, name in enumerate(names)]
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"{path}: the Parquet data is corrupt after row {number} ({exc}); "
                             "the records up to there were used. Results are incomplete: "
                             "fetch the whole file and run again") from None
        for values in zip(*columns, strict=True):
            number += 1
            yield _row(number, dict(zip(names, values, strict=True)))
        if progress is not None:
            progress(size * number // total)


def _batches(source: Any) -> Iterator[Any]:
    """The record batches of a file, one row group after the other (a batch never spans two,
    so a broken row group fails after the rows of those before it)."""
    for group in range(source.metadata.num_row_groups):
        yield from source.iter_batches(batch_size=BATCH_ROWS, row_groups=[group],
                                       use_threads=False)


def _row(number: int, row: dict[str, Any]) -> Record | BadRecord:
    """A row as a Record, or the first reason (by column) it cannot be used."""
    data = {k: v for k, v in row.items() if v is not None}
    bad = next((v for v in data.values() if type(v) is _Unusable), None)
    if bad is None:
        return Record(number, data)
    shown = {k: (v.shown if type(v) is _Unusable else v) for k, v in data.items()}
    if len(json.dumps(shown, ensure_ascii=False)) > 1000:
        shown = {"row": cut(json.dumps(shown, ensure_ascii=False, sort_keys=True))}
    return BadRecord(number, shown, bad.reason, bad.kind)


def _zone(path: Path, name: str, kind: Any) -> dt.tzinfo | None:
    """The time zone of a timestamp column that has one; None for another column."""
    kind = getattr(kind, "value_type", kind)  # a dictionary of timestamps: theirs
    tz = getattr(kind, "tz", None)
    if not tz:
        return None
    offset = _OFFSET.fullmatch(tz)
    if offset:
        sign, hours, minutes = offset.groups()
        delta = dt.timedelta(hours=int(hours), minutes=int(minutes))
        return dt.timezone(-delta if sign == "-" else delta)
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageError(f"{path}: column '{name}' has the time zone '{tz}', which this "
                         "machine does not know") from None


def _values(column: Any, name: str, zone: dt.tzinfo | None) -> list[Any]:
    """A column of a batch as plain values, or `_Unusable` for one that cannot be used."""
    import pyarrow as pa
    import pyarrow.types as types

    kind = column.type
    if types.is_dictionary(kind):
        column = column.dictionary_decode()
        kind = column.type
    if types.is_timestamp(kind):
        per = _PER_SECOND[kind.unit]
        return [_timestamp(v, per, zone, name) for v in column.cast(pa.int64()).to_pylist()]
    if types.is_date32(kind):
        return [_date(v, name) for v in column.cast(pa.int32()).to_pylist()]
    if types.is_date64(kind):
        return [_date(None if v is None else v // 86_400_000, name)
                for v in column.cast(pa.int64()).to_pylist()]
    try:
        values = column.to_pylist()
    except (pa.ArrowException, ValueError, OverflowError):  # e.g. a time out of range inside
        values = [_scalar(column, i, name) for i in range(len(column))]
    if name == "ts" and types.is_integer(kind):
        return [_timestamp(v, 1, dt.UTC, name) for v in values]
    if types.is_string(kind) or types.is_large_string(kind) or \
            (types.is_integer(kind) and name != "ts"):
        return list(values)  # plain already, and fit for any column
    out = [_plain(v, name) for v in values]
    if name in SINGLE:
        out = [_single(v, name) for v in out]
    return out


def _scalar(column: Any, index: int, name: str) -> Any:
    """One value of a column whose values could not be read all at once."""
    import pyarrow as pa

    try:
        return column[index].as_py()
    except (pa.ArrowException, ValueError, OverflowError) as exc:
        return _Unusable(f"column '{name}': the value cannot be read ({exc})",
                         f"column '{name}' cannot be read", "(unreadable)")


def _timestamp(value: int | None, per: int, zone: dt.tzinfo | None, name: str) -> Any:
    """A timestamp (`per` units a second since 1970) as ISO 8601 text: local to `zone`, or
    without an offset for a naive timestamp."""
    if value is None:
        return None
    seconds, rest = divmod(value, per)
    try:
        if zone is None:
            moment = _EPOCH + dt.timedelta(seconds=seconds)
        else:
            moment = dt.datetime.fromtimestamp(seconds, zone)
        if rest:
            moment = moment.replace(microsecond=rest * 1_000_000 // per)
    except (OverflowError, ValueError, OSError):  # fromtimestamp's ways of saying "too far"
        what = f"{value} seconds since 1970" if per == 1 else "a timestamp"
        return _Unusable(f"column '{name}': {what} is outside the years 1 to 9999",
                         "time out of range", str(value))
    return moment.isoformat()


def _date(days: int | None, name: str) -> Any:
    """A date column's value (days since 1970) as ISO 8601 text."""
    if days is None:
        return None
    try:
        return dt.date.fromordinal(_EPOCH_DAY + days).isoformat()
    except (ValueError, OverflowError):
        return _Unusable(f"column '{name}': a date is outside the years 1 to 9999",
                         "time out of range", str(days))


def _plain(value: Any, name: str) -> Any:
    """A value as JSON would hold it (a decimal as text, a time as ISO 8601 text …)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)  # NaN is not JSON: "nan"
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as exc:
            return _Unusable(f"column '{name}': not UTF-8 text: {exc.reason} at byte "
                             f"{exc.start}", "not UTF-8 text",
                             value.decode("utf-8", "replace"))
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, dict):
        items = {str(k): _plain(v, name) for k, v in value.items()}
        return _first_unusable(items.values()) or items
    if isinstance(value, list | tuple):
        listed = [_plain(v, name) for v in value]
        return _first_unusable(listed) or listed
    return str(value)


def _first_unusable(values: Any) -> _Unusable | None:
    return next((v for v in values if isinstance(v, _Unusable)), None)


def _single(value: Any, name: str) -> Any:
    """A value of a column that holds one value (`SINGLE`): a list or a record is unusable,
    and so is a `ts` that is not text (the ts types were turned into text before) or a
    `customer_id` that is neither text nor an integer."""
    if value is None or isinstance(value, _Unusable):
        return value
    if isinstance(value, dict | list):
        what = "a list" if isinstance(value, list) else "a record"
        return _Unusable(f"column '{name}': {what} where one value is expected",
                         f"column '{name}' is not a single value", value)
    if name == "ts" and not isinstance(value, str):
        return _Unusable(f"bad 'ts' {value!r}: expected {_TS_TYPES}", "bad 'ts'", value)
    if name == "customer_id" and (isinstance(value, bool) or not isinstance(value, str | int)):
        return _Unusable(f"column 'customer_id': {value!r} is not an id (text or an integer)",
                         "column 'customer_id' is not an id", value)
    return value
