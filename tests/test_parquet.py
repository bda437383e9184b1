"""Parquet input (issue 16, "Batch files too"): `--events`/`--profiles FILE.parquet` give the
same runs as the same data in JSONL or CSV; rows that cannot be used are quarantined with
their row number; broken files and a missing pyarrow are clear errors. Real files written
with pyarrow, the real CLI."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import json
import os
import sqlite3
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sopkit._cli.app import app
from sopkit._io import read_records

try:
    import pyarrow as pa
    import pyarrow.parquet as pq
except ImportError as exc:  # the `parquet` extra (in `dev`) is not installed
    if os.environ.get("SOPKIT_REQUIRE_PARQUET") == "1" or os.environ.get("CI"):
        raise
    pytest.skip(f"Parquet tests skipped: {exc} (pip install 'sopkit[parquet]')",
                allow_module_level=True)

ROOT = Path(__file__).resolve().parent.parent
CDNOW = ROOT / "data" / "cdnow"
RETAIL = ROOT / "playbooks" / "retail.toml"
SHANGHAI = dt.timezone(dt.timedelta(hours=8))

# a purchase of more than 100 sends at once
PLAYBOOK = """
[playbook]
name = "pq"
timezone = "Asia/Shanghai"
[profile]
vip = "bool"
[events.purchase]
amount = "decimal"
quantity = "int"
[channels.c]
type = "console"
[templates.t]
text = "谢谢惠顾"
[[rules]]
name = "big"
on = "purchase"
when = "event.amount > 100"
actions = [{ type = "send", channel = "c", template = "t" }]
"""
CLOCK = "2025-01-03T12:00:00+08:00"


def _invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def _playbook(tmp_path: Path) -> Path:
    path = tmp_path / "pq.toml"
    path.write_text(PLAYBOOK, encoding="utf-8")
    return path


def _jail(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _simulate(playbook: Path, events: Path, tmp_path: Path,
              *extra: str) -> tuple[str, dict[str, Any]]:
    """The actions file and the summary of `simulate` over `events`."""
    out = tmp_path / f"actions-{events.name}.jsonl"
    code, text = _invoke("simulate", str(playbook), "--events", str(events), "--out", str(out),
                         "--output", "jsonl", "--no-progress", "--unmasked", *extra)
    assert code == 0, text
    return out.read_text(encoding="utf-8"), json.loads(text.splitlines()[-1])


def _cdnow(customers: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The events and profiles of CDNOW customers 1..`customers`."""
    keep = {f"cdnow-{i:05d}" for i in range(1, customers + 1)}
    found = []
    for name in ("events", "profiles"):
        with gzip.open(CDNOW / f"{name}.jsonl.gz", "rt", encoding="utf-8") as src:
            found.append([r for r in map(json.loads, src) if r["customer_id"] in keep])
    return found[0], found[1]


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


def _csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    names = list(dict.fromkeys(k for r in rows for k in r))
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, names)
        writer.writeheader()
        writer.writerows({k: str(v).lower() if isinstance(v, bool) else v for k, v in r.items()}
                         for r in rows)
    return path


def _events_table(rows: list[dict[str, Any]], ts: str) -> pa.Table:
    """CDNOW events with `ts` as text, a naive or a zoned timestamp, or seconds since 1970."""
    local = [dt.datetime.fromisoformat(r["ts"]) for r in rows]
    column = {
        "text": pa.array([r["ts"] for r in rows], pa.string()),
        "naive": pa.array(local, pa.timestamp("s")),
        "zoned": pa.array([t.replace(tzinfo=SHANGHAI) for t in local],
                          pa.timestamp("ms", tz="Asia/Shanghai")),
        "seconds": pa.array([int(t.replace(tzinfo=SHANGHAI).timestamp()) for t in local],
                            pa.int64()),
    }[ts]
    return pa.table({
        "customer_id": pa.array([r["customer_id"] for r in rows], pa.string()).dictionary_encode(),
        "type": [r["type"] for r in rows],
        "ts": column,
        "amount": pa.array([r["amount"] for r in rows], pa.float64()),
        "quantity": pa.array([r["quantity"] for r in rows], pa.int32()),
    })


def _profiles_table(rows: list[dict[str, Any]]) -> pa.Table:
    """CDNOW profiles with `joined` a date column, `birthday` a timestamp at midnight in
    Shanghai and vip a bool column."""
    names = list(dict.fromkeys(k for r in rows for k in r))
    columns: dict[str, pa.Array] = {}
    for name in names:
        values = [r.get(name) for r in rows]
        if name == "joined":
            columns[name] = pa.array([dt.date.fromisoformat(v) if v else None for v in values],
                                     pa.date32())
        elif name == "birthday":  # midnight in Shanghai: the day before in UTC
            columns[name] = pa.array(
                [dt.datetime.fromisoformat(v).replace(tzinfo=SHANGHAI) if v else None
                 for v in values], pa.timestamp("s", tz="Asia/Shanghai"))
        else:
            columns[name] = pa.array(values)
    return pa.table(columns)


@pytest.fixture(scope="module")
def cdnow(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The CDNOW slice of customers 1-400 as JSONL, CSV and Parquet, and the JSONL run."""
    tmp = tmp_path_factory.mktemp("cdnow")
    events, profiles = _cdnow(400)
    files = {"events.jsonl": _jsonl(tmp / "events.jsonl", events),
             "profiles.jsonl": _jsonl(tmp / "profiles.jsonl", profiles),
             "events.csv": _csv(tmp / "events.csv", events),
             "profiles.csv": _csv(tmp / "profiles.csv", profiles)}
    for ts in ("text", "naive", "zoned", "seconds"):
        files[f"events-{ts}.parquet"] = tmp / f"events-{ts}.parquet"
        pq.write_table(_events_table(events, ts), files[f"events-{ts}.parquet"],
                       row_group_size=700)
    files["profiles.parquet"] = tmp / "profiles.parquet"
    pq.write_table(_profiles_table(profiles), files["profiles.parquet"], row_group_size=150)
    expected = _simulate(RETAIL, files["events.jsonl"], tmp, "--profiles",
                         str(files["profiles.jsonl"]), "--end", "1998-06-30")
    return {"tmp": tmp, "files": files, "expected": expected, "events": len(events)}


@pytest.mark.parametrize("ts", ["text", "naive", "zoned", "seconds"])
def test_simulate_over_parquet_equals_jsonl_byte_for_byte(cdnow: dict[str, Any], ts: str) -> None:
    """The CDNOW slice as Parquet (ts as text, a timestamp with or without a zone, or epoch
    seconds; dates and bools as typed columns) gives the JSONL run's actions, byte for byte."""
    files = cdnow["files"]
    actions, summary = _simulate(RETAIL, files[f"events-{ts}.parquet"], cdnow["tmp"],
                                 "--profiles", str(files["profiles.parquet"]),
                                 "--end", "1998-06-30")
    expected_actions, expected_summary = cdnow["expected"]
    assert actions == expected_actions
    assert actions.count("\n") > 500
    assert summary["events_read"] == cdnow["events"] and summary["quarantined"] == 0
    assert {**summary, "quarantine_file": None} == {**expected_summary, "quarantine_file": None}


def test_a_pandas_frame_written_to_parquet_gives_the_same_run(cdnow: dict[str, Any]) -> None:
    """The slice as a pandas DataFrame (ts parsed to datetime64[ns], an index column) saved
    with `to_parquet` gives the JSONL run's actions."""
    pandas = pytest.importorskip("pandas")
    frame = pandas.read_json(cdnow["files"]["events.jsonl"], lines=True, dtype={"ts": str})
    frame["ts"] = pandas.to_datetime(frame["ts"])
    frame.index = [f"row-{i}" for i in range(len(frame))]  # stored as a column of its own
    events = cdnow["tmp"] / "pandas.parquet"
    frame.to_parquet(events)
    assert "__index_level_0__" in pq.read_schema(events).names
    actions, _ = _simulate(RETAIL, events, cdnow["tmp"], "--profiles",
                           str(cdnow["files"]["profiles.parquet"]), "--end", "1998-06-30")
    assert actions == cdnow["expected"][0]


def test_simulate_over_csv_equals_parquet(cdnow: dict[str, Any]) -> None:
    """The same slice as CSV gives the same actions as the Parquet file (and so as JSONL)."""
    files = cdnow["files"]
    from_csv, _ = _simulate(RETAIL, files["events.csv"], cdnow["tmp"], "--profiles",
                            str(files["profiles.csv"]), "--end", "1998-06-30")
    assert from_csv == cdnow["expected"][0]


def test_simulate_with_workers_reads_parquet_too(cdnow: dict[str, Any]) -> None:
    """`--workers 2` over the Parquet files gives the one-worker JSONL actions."""
    files = cdnow["files"]
    playbook = cdnow["tmp"] / "plain.toml"
    # retail's campaign and capacity need one worker; its rules alone can be partitioned
    playbook.write_text(PLAYBOOK, encoding="utf-8")
    one, _ = _simulate(playbook, files["events.jsonl"], cdnow["tmp"])
    two, summary = _simulate(playbook, files["events-naive.parquet"], cdnow["tmp"],
                             "--workers", "2")
    assert two == one and summary["events_applied"] == cdnow["events"]
    assert one.count("\n") > 30


@pytest.mark.parametrize("command", ["explain", "diff", "clv"])
def test_other_commands_read_parquet_as_jsonl(cdnow: dict[str, Any], command: str) -> None:
    """`explain`, `diff` and `clv` over the Parquet slice print what they print over JSONL
    (but the file name)."""
    files, tmp = cdnow["files"], cdnow["tmp"]
    cheaper = tmp / "cheaper.toml"
    cheaper.write_text(PLAYBOOK.replace("event.amount > 100", "event.amount > 50"), "utf-8")
    (tmp / "plain.toml").write_text(PLAYBOOK, encoding="utf-8")
    args = {"explain": ["explain", str(RETAIL), "--customer", "cdnow-00001", "--at",
                        "1998-01-01", "--unmasked"],
            "diff": ["diff", str(tmp / "plain.toml"), str(cheaper), "--output", "jsonl"],
            "clv": ["clv", "--output", "jsonl"]}[command]
    shown = {}
    for events, profiles in (("events.jsonl", "profiles.jsonl"),
                             ("events-naive.parquet", "profiles.parquet")):
        extra = [] if command == "clv" else ["--profiles", str(files[profiles])]
        code, text = _invoke(*args, "--events", str(files[events]), *extra)
        assert code in (0, 1), text  # diff: 1 when there are differences
        shown[events] = text.replace(str(files[events]), "EVENTS").replace(
            str(files[profiles]), "PROFILES")
    assert shown["events.jsonl"] == shown["events-naive.parquet"]
    assert len(shown["events.jsonl"]) > 500  # a real timeline, differences, a fit


def _purchase(customer: Any, ts: Any, amount: Any = "150") -> dict[str, Any]:
    return {"customer_id": customer, "type": "purchase", "ts": ts, "amount": amount}


def test_bad_rows_are_quarantined_with_reason_and_row_number(tmp_path: Path) -> None:
    """A ts that does not parse, a null customer id and an amount that is not a number are
    quarantined with the file and row; the good rows around them act."""
    rows = [_purchase("a", "2025-01-01T10:00:00"), _purchase("b", "yesterday"),
            _purchase(None, "2025-01-01T11:00:00"),
            _purchase("c", "2025-01-01T12:00:00", "abc"),
            _purchase("d", "2025-01-02T10:00:00")]
    events = tmp_path / "events.parquet"
    pq.write_table(pa.Table.from_pylist(rows), events, row_group_size=2)
    jail = tmp_path / "q.jsonl"
    actions, summary = _simulate(_playbook(tmp_path), events, tmp_path, "--quarantine", str(jail))
    assert [json.loads(a)["customer_id"] for a in actions.splitlines()] == ["a", "d"]
    found = _jail(jail)
    assert [(e["source"], e["line"]) for e in found] == [(str(events), n) for n in (2, 3, 4)]
    assert found[0]["reason"].startswith("bad 'ts' 'yesterday': expected ISO 8601")
    assert found[1]["reason"] == "missing 'customer_id'"
    assert found[2]["reason"] == "field 'amount': 'abc' is not a valid decimal"
    assert found[2]["record"] == {"customer_id": "c", "type": "purchase",
                                  "ts": "2025-01-01T12:00:00", "amount": "abc"}
    assert summary["quarantine_reasons"] == {
        "bad 'ts'": 1, "field 'amount' is not a valid decimal": 1, "missing 'customer_id'": 1}


def test_a_column_of_the_wrong_type_is_quarantined_row_by_row(tmp_path: Path) -> None:
    """A list where one value is expected, a float ts and epoch seconds out of range are
    quarantined per row with a reason naming the column; the other files' rows act."""
    playbook = _playbook(tmp_path)
    cases = {
        "lists.parquet": (pa.table({"customer_id": [["a"], ["b"]], "type": ["purchase"] * 2,
                                    "ts": ["2025-01-01T10:00:00"] * 2, "amount": [200, 300]}),
                          "column 'customer_id': a list where one value is expected"),
        "floats.parquet": (pa.table({"customer_id": ["a", "b"], "type": ["purchase"] * 2,
                                     "ts": [1.7e9, 1.8e9], "amount": [200, 300]}),
                           "bad 'ts' 1700000000.0: expected ISO 8601 text, a date, a "
                           "timestamp or whole seconds since 1970"),
        "bools.parquet": (pa.table({"customer_id": [True, False], "type": ["purchase"] * 2,
                                    "ts": ["2025-01-01T10:00:00"] * 2, "amount": [200, 300]}),
                          "column 'customer_id': True is not an id (text or an integer)"),
        "far.parquet": (pa.table({"customer_id": ["a", "b"], "type": ["purchase"] * 2,
                                  "ts": pa.array([10**15, 10**15], pa.timestamp("ms")),
                                  "amount": [200, 300]}),
                        "column 'ts': a timestamp is outside the years 1 to 9999"),
        "amounts.parquet": (pa.table({"customer_id": ["a", "b"], "type": ["purchase"] * 2,
                                      "ts": ["2025-01-01T10:00:00"] * 2,
                                      "amount": [[200], [300]]}),
                            "field 'amount': [200] is not a valid decimal"),
    }
    for name, (table, reason) in cases.items():
        events = tmp_path / name
        pq.write_table(table, events)
        jail = tmp_path / f"{name}.q.jsonl"
        code, text = _invoke("simulate", str(playbook), "--events", str(events),
                             "--quarantine", str(jail), "--no-progress")
        assert code == 1, text  # every record quarantined
        found = _jail(jail)
        assert [e["line"] for e in found] == [1, 2]
        assert found[0]["reason"] == reason
    seconds = tmp_path / "seconds.parquet"
    pq.write_table(pa.table({
        "customer_id": ["a", "b", "c"], "type": ["purchase"] * 3,
        "ts": pa.array([10**15, -(2**33), 1_735_696_800], pa.int64()),
        "amount": ["200", "300", "400"]}), seconds)
    jail = tmp_path / "seconds.q.jsonl"
    _, summary = _simulate(playbook, seconds, tmp_path, "--quarantine", str(jail))
    found = _jail(jail)
    assert (found[0]["line"], found[0]["reason"]) == (
        1, "column 'ts': 1000000000000000 seconds since 1970 is outside the years 1 to 9999")
    assert found[1]["line"] == 2 and found[1]["record"]["ts"] == "1697-10-17T11:03:28+00:00"
    assert "is outside the supported time range" in found[1]["reason"]
    assert summary["quarantined"] == 2 and summary["events_applied"] == 1
    assert summary["quarantine_reasons"] == {"time out of range": 2}


def test_decimal_binary_and_date_columns(tmp_path: Path) -> None:
    """A decimal column keeps its exact digits (100.01 > 100 sends), binary ids are UTF-8 text
    (one that is not is quarantined), a date ts is its day's start, one past 9999 is out of
    range."""
    events = tmp_path / "events.parquet"
    pq.write_table(pa.table({
        "customer_id": pa.array([b"a", b"\xff\xfe", b"c", "达".encode()], pa.binary()),
        "type": ["purchase"] * 4,
        "ts": pa.array([0, 1, 3_000_000, 2], pa.int32()).cast(pa.date32()),
        "amount": pa.array([Decimal("100.01")] * 3 + [Decimal("100.00")], pa.decimal128(9, 2)),
    }), events)
    playbook = tmp_path / "dated.toml"  # 1970: a zone without summer time, days from 00:00
    playbook.write_text(PLAYBOOK.replace('"Asia/Shanghai"', '"UTC"'), encoding="utf-8")
    jail = tmp_path / "q.jsonl"
    actions, summary = _simulate(playbook, events, tmp_path, "--quarantine", str(jail))
    assert [(json.loads(a)["customer_id"], json.loads(a)["time"])
            for a in actions.splitlines()] == [("a", "1970-01-01T00:00:00+00:00")]
    found = _jail(jail)
    assert [(e["line"], e["reason"]) for e in found] == [
        (2, "column 'customer_id': not UTF-8 text: invalid start byte at byte 0"),
        (3, "column 'ts': a date is outside the years 1 to 9999")]
    assert summary["events_applied"] == 2  # 达's 100.00 is not more than 100


def test_a_timestamp_without_a_zone_is_in_the_playbook_zone(tmp_path: Path) -> None:
    """A naive 10:00 is 10:00 in Shanghai, as in CSV; 10:00 UTC is 18:00 there, and 10:00
    at +05:00 13:00."""
    events = tmp_path / "events.parquet"
    naive = dt.datetime(2025, 1, 1, 10, 0)
    pq.write_table(pa.table({
        "customer_id": ["a", "b"], "type": ["purchase"] * 2,
        "ts": pa.array([naive, naive], pa.timestamp("us")),
        "amount": ["200", "300"]}), events)
    zoned = tmp_path / "zoned.parquet"
    pq.write_table(pa.table({
        "customer_id": ["c"], "type": ["purchase"],
        "ts": pa.array([naive.replace(tzinfo=dt.UTC)], pa.timestamp("ns", tz="UTC")),
        "amount": ["200"]}), zoned)
    offset = tmp_path / "offset.parquet"  # a zone given as an offset
    pq.write_table(pa.table({
        "customer_id": ["d"], "type": ["purchase"],
        "ts": pa.array([naive.replace(tzinfo=dt.timezone(dt.timedelta(hours=5)))],
                       pa.timestamp("s", tz="+05:00")),
        "amount": ["200"]}), offset)
    times = [json.loads(a)["time"] for path in (events, zoned, offset)
             for a in _simulate(_playbook(tmp_path), path, tmp_path)[0].splitlines()]
    assert times == ["2025-01-01T10:00:00+08:00", "2025-01-01T10:00:00+08:00",
                     "2025-01-01T18:00:00+08:00", "2025-01-01T13:00:00+08:00"]


def test_a_file_that_is_not_parquet_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    """Garbage, or a Parquet file cut short (no footer), exits 2 naming the file."""
    good = tmp_path / "good.parquet"
    pq.write_table(pa.Table.from_pylist([_purchase("a", "2025-01-01T10:00:00")]), good)
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(good.read_bytes()[:-20])
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"PAR1\x15\x04\x15\x10 not a parquet file")
    for events in (cut, garbage):
        code, text = _invoke("simulate", str(_playbook(tmp_path)), "--events", str(events),
                             "--no-progress")
        assert code == 2, text
        assert f"{events}: cannot read it as Parquet" in " ".join(text.split())


def test_corrupt_data_inside_a_file_fails_after_the_rows_before(tmp_path: Path) -> None:
    """A data page broken in the second row group: the first group's rows are used, then
    exit 1 naming the file and the last row read."""
    events = tmp_path / "events.parquet"
    rows = [_purchase(f"c{i}", f"2025-01-01T10:{i:02d}:00") for i in range(6)]
    pq.write_table(pa.Table.from_pylist(rows), events, row_group_size=3, compression="none")
    page = pq.ParquetFile(events).metadata.row_group(1).column(0).data_page_offset
    data = bytearray(events.read_bytes())
    data[page:page + 8] = b"\xff" * 8
    events.write_bytes(bytes(data))
    out = tmp_path / "actions.jsonl"
    code, text = _invoke("simulate", str(_playbook(tmp_path)), "--events", str(events),
                         "--out", str(out), "--no-progress", "--unmasked")
    assert code == 1, text
    flat = " ".join(text.split())
    assert f"{events}: the Parquet data is corrupt after row 3" in flat
    assert [json.loads(a)["customer_id"] for a in out.read_text("utf-8").splitlines()] == \
        ["c0", "c1", "c2"]


def test_a_file_without_customer_id_is_a_usage_error(tmp_path: Path) -> None:
    """A Parquet file with no customer_id column exits 2 naming the file and its columns."""
    events = tmp_path / "events.parquet"
    pq.write_table(pa.table({"user": ["a"], "type": ["purchase"],
                             "ts": ["2025-01-01T10:00:00"]}), events)
    code, text = _invoke("simulate", str(_playbook(tmp_path)), "--events", str(events),
                         "--no-progress")
    flat = " ".join(text.split())
    assert code == 2, text
    assert f"{events}: no 'customer_id' column (it has: user, type, ts)" in flat


def test_without_pyarrow_the_error_says_what_to_install(tmp_path: Path) -> None:
    """With pyarrow not importable, a Parquet input exits 2 saying pip install
    'sopkit[parquet]'; a JSONL input still runs."""
    events = tmp_path / "events.parquet"
    pq.write_table(pa.Table.from_pylist([_purchase("a", "2025-01-01T10:00:00")]), events)
    plain = _jsonl(tmp_path / "events.jsonl", [_purchase("a", "2025-01-01T10:00:00")])
    block = ("import sys; sys.modules['pyarrow'] = None; "  # `import pyarrow` now fails
             "from sopkit._cli.app import main; sys.argv[0] = 'sopkit'; main()")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = {}
    for path in (events, plain):
        done[path] = subprocess.run(
            [sys.executable, "-c", block, "simulate", str(_playbook(tmp_path)), "--events",
             str(path), "--no-progress", "--output", "jsonl"],
            capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done[events].returncode == 2, done[events].stderr
    assert "pip install 'sopkit[parquet]'" in " ".join(done[events].stderr.split())
    assert done[plain].returncode == 0, done[plain].stderr
    assert json.loads(done[plain].stdout)["events_applied"] == 1


def _outbox(store: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(store) as db:
        return list(db.execute("SELECT customer_id, due_at FROM outbox ORDER BY 1, 2"))


def _run(playbook: Path, store: Path, events: Path, clock: str = CLOCK) -> dict[str, Any]:
    code, text = _invoke("run", str(playbook), "--store", str(store), "--once", "--clock",
                         clock, "--events", str(events), "--output", "jsonl",
                         "--quarantine", str(store.with_suffix(".q.jsonl")))
    assert code == 0, text
    return dict(json.loads(text.splitlines()[-1]))


def test_run_reads_parquet_like_jsonl_and_resumes_by_row(tmp_path: Path) -> None:
    """`sopkit run --once` over Parquet fills the outbox as over JSONL; run again over the
    file grown by 4 rows, it reads only those (its position is the row number)."""
    rows = sorted((_purchase(f"c{i}", f"2025-01-0{1 + i % 2}T1{i}:00:00")
                   for i in range(9)), key=lambda r: str(r["ts"]))
    playbook = _playbook(tmp_path)
    events = tmp_path / "events.parquet"
    pq.write_table(pa.Table.from_pylist(rows), events, row_group_size=2)
    assert _run(playbook, tmp_path / "pq.db", events)["events_applied"] == 9
    _run(playbook, tmp_path / "jsonl.db", _jsonl(tmp_path / "events.jsonl", rows))
    assert _outbox(tmp_path / "pq.db") == _outbox(tmp_path / "jsonl.db")
    assert len(_outbox(tmp_path / "pq.db")) == 9
    growing = tmp_path / "growing.parquet"
    pq.write_table(pa.Table.from_pylist(rows[:5]), growing, row_group_size=2)
    first = _run(playbook, tmp_path / "grow.db", growing, "2025-01-01T20:00:00+08:00")
    assert (first["events_read"], first["events_applied"]) == (5, 5)
    pq.write_table(pa.Table.from_pylist(rows), growing, row_group_size=2)
    second = _run(playbook, tmp_path / "grow.db", growing)
    assert (second["events_skipped"], second["events_read"], second["events_applied"]) == \
        (5, 4, 4)


def test_run_cannot_follow_a_parquet_file(tmp_path: Path) -> None:
    """`run --follow` on a Parquet file exits 2: such a file cannot grow."""
    events = tmp_path / "events.parquet"
    pq.write_table(pa.Table.from_pylist([_purchase("a", "2025-01-01T10:00:00")]), events)
    code, text = _invoke("run", str(_playbook(tmp_path)), "--store", str(tmp_path / "s.db"),
                         "--follow", "--events", str(events))
    assert code == 2
    assert "a .parquet file cannot grow" in " ".join(text.split())


def test_a_big_file_is_read_a_batch_at_a_time(tmp_path: Path) -> None:
    """Reading 300,000 rows holds a small part of the table in Arrow memory at any time."""
    count = 300_000
    table = pa.table({"customer_id": [f"customer-{i:07d}" for i in range(count)],
                      "type": pa.array(["purchase"] * count).dictionary_encode(),
                      "ts": pa.array([1_735_696_800 + i for i in range(count)], pa.int64()),
                      "amount": pa.array([i / 100 for i in range(count)], pa.float64())})
    events = tmp_path / "big.parquet"
    pq.write_table(table, events, row_group_size=20_000)
    whole = table.nbytes
    del table
    base = pa.total_allocated_bytes()
    peak, seen = 0, 0
    told: list[int] = []
    for _record in read_records(events, told.append):
        seen += 1
        if seen % 997 == 0:
            peak = max(peak, pa.total_allocated_bytes() - base)
    assert seen == count
    assert 0 < peak < whole / 5
    size = events.stat().st_size  # the progress bar: by row group, to the whole file
    assert told == sorted(told) and len(told) >= 15 and told[-1] == size
    assert told[0] < size / 10
