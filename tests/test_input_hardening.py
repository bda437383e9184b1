"""Issue 12: one bad input line never stops `simulate` or crash-loops `run` (real files, the
real CLI, a real SQLite store), and issue 11: date-only timestamps count calendar days."""

from __future__ import annotations

import gzip
import json
import os
import sqlite3
import stat
import threading
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sopkit._cli.app import app
from sopkit._lang.clock import Calendar

# a purchase over 100 sends; `event.amount` is read by a condition, so it reaches the engine
PLAYBOOK = """
[playbook]
name = "hard"
timezone = "Asia/Shanghai"
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
when = "event.amount * event.amount * event.amount * event.amount > 100000000"
actions = [{ type = "send", channel = "c", template = "t" }]
"""

GOOD_FIRST = '{"customer_id":"a","type":"purchase","ts":"2025-01-01T10:00:00","amount":"200"}'
GOOD_LAST = '{"customer_id":"e","type":"purchase","ts":"2025-01-03T10:00:00","amount":"300"}'
BAD_LINES = {
    "number too large": '{"customer_id":"b","type":"purchase","ts":"2025-01-01T11:00:00",'
                        '"amount":' + "9" * 5000 + "}",
    "nesting too deep": "[" * 100_000 + "]" * 100_000,
    "time out of range": '{"customer_id":"c","type":"purchase",'
                         '"ts":"0001-01-01T00:00:00+14:00","amount":"5"}',
    "number out of range": '{"customer_id":"d","type":"purchase","ts":"2025-01-02T10:00:00",'
                           '"amount":"1e999999"}',
}
CLOCK = "2025-01-03T12:00:00+08:00"


def _invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def _playbook(tmp_path: Path) -> Path:
    path = tmp_path / "hard.toml"
    path.write_text(PLAYBOOK, encoding="utf-8")
    return path


def _file(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _jail(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _outbox_customers(store: Path) -> list[str]:
    with sqlite3.connect(store) as db:
        return [row[0] for row in db.execute("SELECT customer_id FROM outbox ORDER BY 1")]


@pytest.mark.parametrize("engine", ["native", "durable"])
def test_simulate_quarantines_each_bad_line_and_goes_on(tmp_path: Path, engine: str) -> None:
    """Huge numbers, deep nesting, year 1 and 1e999999 are quarantined with their reasons."""
    events = _file(tmp_path / "events.jsonl", [GOOD_FIRST, *BAD_LINES.values(), GOOD_LAST])
    out, jail = tmp_path / "actions.jsonl", tmp_path / "q.jsonl"
    code, text = _invoke("simulate", str(_playbook(tmp_path)), "--events", str(events),
                         "--engine", engine, "--out", str(out), "--quarantine", str(jail),
                         "--output", "jsonl", "--no-progress")
    assert code == 0, text
    summary = json.loads(text.strip().splitlines()[-1])
    assert summary["quarantine_reasons"] == dict.fromkeys(sorted(BAD_LINES), 1)
    assert [json.loads(line)["customer_id"] for line in out.read_text().splitlines()] == \
        ["a", "e"]
    reasons = {entry["line"]: entry["reason"] for entry in _jail(jail)}
    assert "more than 4,300 digits" in reasons[2]
    assert "more than 32 levels deep" in reasons[3]
    assert "outside the supported time range" in reasons[4]
    assert "'1e999999' is outside the decimal range" in reasons[5]


@pytest.mark.parametrize("engine", ["native", "durable"])
def test_run_moves_past_bad_lines_instead_of_crash_looping(tmp_path: Path, engine: str) -> None:
    """`run` quarantines the bad lines, commits past them, and a restart does not meet them."""
    events = _file(tmp_path / "events.jsonl", [GOOD_FIRST, *BAD_LINES.values(), GOOD_LAST])
    store, jail = tmp_path / "live.db", tmp_path / "q.jsonl"
    args = ("run", str(_playbook(tmp_path)), "--store", str(store), "--events", str(events),
            "--once", "--clock", CLOCK, "--engine", engine, "--quarantine", str(jail),
            "--output", "jsonl")
    code, text = _invoke(*args)
    assert code == 0, text
    first = json.loads(text.strip().splitlines()[-1])
    assert (first["events_applied"], first["quarantined"]) == (2, 4)
    assert _outbox_customers(store) == ["a", "e"]
    code, text = _invoke(*args)
    assert code == 0, text
    again = json.loads(text.strip().splitlines()[-1])
    assert (again["events_skipped"], again["events_read"], again["quarantined"]) == (6, 0, 0)
    assert len(_jail(jail)) == 4  # nothing quarantined twice


def test_run_from_stdin_quarantines_bad_lines(tmp_path: Path) -> None:
    """`run --events -` reads the same bad lines from stdin, quarantines them, exits 0."""
    store, jail = tmp_path / "live.db", tmp_path / "q.jsonl"
    stdin = "".join(line + "\n" for line in [GOOD_FIRST, *BAD_LINES.values(), GOOD_LAST])
    result = CliRunner().invoke(app, [
        "run", str(_playbook(tmp_path)), "--store", str(store), "--events", "-", "--once",
        "--clock", CLOCK, "--quarantine", str(jail), "--output", "jsonl"], input=stdin)
    assert result.exit_code == 0, result.output
    assert _outbox_customers(store) == ["a", "e"]
    assert sorted(entry["line"] for entry in _jail(jail)) == [2, 3, 4, 5]


@pytest.mark.parametrize("engine", ["native", "durable"])
def test_int_and_decimal_fields_out_of_range(tmp_path: Path, engine: str) -> None:
    """Values the engines cannot hold are quarantined; big in-range ones act on both engines."""
    lines = [
        '{"customer_id":"a","type":"purchase","ts":"2025-01-01T10:00:00","amount":"1e99"}',
        '{"customer_id":"b","type":"purchase","ts":"2025-01-01T10:01:00","amount":1e999}',
        '{"customer_id":"c","type":"purchase","ts":"2025-01-01T10:02:00","amount":"1e100"}',
        '{"customer_id":"d","type":"purchase","ts":"2025-01-01T10:03:00","amount":"0E-999999"}',
        '{"customer_id":"e","type":"purchase","ts":"2025-01-01T10:04:00","amount":"150",'
        '"quantity":"' + "9" * 5000 + '"}',
        '{"customer_id":"f","type":"purchase","ts":"2025-01-01T10:05:00","amount":"150",'
        '"quantity":1e300}',
        '{"customer_id":"g","type":"purchase","ts":"2025-01-01T10:06:00","amount":NaN}',
        '{"customer_id":"h","type":"purchase","ts":"2025-01-01T10:07:00","amount":"150",'
        '"quantity":9223372036854775807}',
    ]
    events = _file(tmp_path / "events.jsonl", lines)
    out, jail = tmp_path / "actions.jsonl", tmp_path / "q.jsonl"
    code, text = _invoke("simulate", str(_playbook(tmp_path)), "--events", str(events),
                         "--engine", engine, "--out", str(out), "--quarantine", str(jail),
                         "--no-progress")
    assert code == 0, text
    # 1e99 ** 4 overflows a float: durable gets the largest float and agrees with native
    assert [json.loads(line)["customer_id"] for line in out.read_text().splitlines()] == \
        ["a", "h"]
    quarantined = {entry["line"]: entry["reason"] for entry in _jail(jail)}
    assert sorted(quarantined) == [2, 3, 4, 5, 6, 7]
    assert all("outside the" in quarantined[n] for n in (2, 3, 4, 5, 6))
    assert "5002 characters" in quarantined[5]  # a huge value is not repeated in full
    assert "NaN is not a JSON number" in quarantined[7]


def test_run_quarantines_a_far_future_event(tmp_path: Path) -> None:
    """A purchase stamped 2205 is quarantined; it does not move the clock past later events."""
    events = _file(tmp_path / "events.jsonl", [
        GOOD_FIRST,
        '{"customer_id":"typo","type":"purchase","ts":"2205-01-01T10:01:00","amount":"200"}',
        '{"customer_id":"c","type":"purchase","ts":"2025-01-01T10:02:00","amount":"200"}',
        '{"customer_id":"soon","type":"purchase","ts":"2025-01-01T10:11:00","amount":"200"}',
    ])
    store, jail = tmp_path / "live.db", tmp_path / "q.jsonl"
    code, text = _invoke("run", str(_playbook(tmp_path)), "--store", str(store), "--events",
                         str(events), "--once", "--clock", "2025-01-01T10:05:00+08:00",
                         "--quarantine", str(jail), "--output", "jsonl")
    assert code == 0, text
    assert _outbox_customers(store) == ["a", "c"]
    entries = _jail(jail)
    assert [e["line"] for e in entries] == [2, 4]  # 4: 10:11 is 1 minute past the 5m limit
    assert entries[0]["reason"].startswith("too far in the future: 2205-01-01T10:01:00+08:00 "
                                           "is more than 5m ahead of the clock")


def test_max_future_can_be_widened_and_a_bad_value_is_refused(tmp_path: Path) -> None:
    """--max-future 10m lets a 6-minute-early event in; a bad value is a usage error."""
    events = _file(tmp_path / "events.jsonl", [
        '{"customer_id":"soon","type":"purchase","ts":"2025-01-01T10:11:00","amount":"200"}'])
    playbook = str(_playbook(tmp_path))
    common = ("run", playbook, "--events", str(events), "--once", "--clock",
              "2025-01-01T10:05:00+08:00", "--quarantine", str(tmp_path / "q.jsonl"))
    code, text = _invoke(*common, "--store", str(tmp_path / "a.db"), "--max-future", "10m")
    assert code == 0, text
    assert _outbox_customers(tmp_path / "a.db") == ["soon"]
    code, text = _invoke(*common, "--store", str(tmp_path / "b.db"), "--max-future", "soon")
    assert code == 2 and "--max-future" in text


def test_simulate_accepts_far_future_events_unless_limited(tmp_path: Path) -> None:
    """simulate has no future limit by default; --max-future 30d quarantines the 2205 typo."""
    events = _file(tmp_path / "events.jsonl", [
        GOOD_FIRST,
        '{"customer_id":"typo","type":"purchase","ts":"2205-01-01T10:01:00","amount":"200"}',
        GOOD_LAST,
    ])
    base = ("simulate", str(_playbook(tmp_path)), "--events", str(events), "--output", "jsonl",
            "--no-progress", "--quarantine", str(tmp_path / "q.jsonl"))
    code, text = _invoke(*base)
    assert code == 0, text
    assert json.loads(text)["quarantine_reasons"] == {"out of order": 1}  # the typo won
    code, text = _invoke(*base, "--max-future", "30d")
    assert code == 0, text
    summary = json.loads(text)
    assert summary["quarantine_reasons"] == {"too far in the future": 1}
    assert summary["events_applied"] == 2 and summary["end"] == "2025-01-03T10:00:00+08:00"


def _truncated_gzip(tmp_path: Path) -> tuple[Path, list[str]]:
    lines = [f'{{"customer_id":"c{i:04d}","type":"purchase",'
             f'"ts":"2025-01-01T{10 + i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}",'
             f'"amount":"150"}}' for i in range(6000)]
    whole = gzip.compress("".join(line + "\n" for line in lines).encode())
    path = tmp_path / "events.jsonl.gz"
    path.write_bytes(whole[: len(whole) // 2])
    return path, lines


def test_simulate_names_the_file_and_line_where_a_gzip_file_ends_early(tmp_path: Path) -> None:
    """A truncated .gz: exit 1, the file and last line named, earlier records used."""
    events, _ = _truncated_gzip(tmp_path)
    out, jail = tmp_path / "actions.jsonl", tmp_path / "q.jsonl"
    code, text = _invoke("simulate", str(_playbook(tmp_path)), "--events", str(events),
                         "--out", str(out), "--quarantine", str(jail), "--no-progress")
    assert code == 1
    assert f"{events}: the gzip data ends early" in text
    reached = int(text.split("after line ")[1].split(";")[0])
    assert 1000 < reached < 6000
    assert len(out.read_text().splitlines()) == reached  # every whole line acted on
    partial = _jail(jail)
    assert [(e["line"], e["reason"]) for e in partial] == \
        [(reached + 1, "the gzip data ends inside this line")]


def test_run_commits_what_a_truncated_gzip_held_then_resumes(tmp_path: Path) -> None:
    """`run` on a truncated .gz exits 1 after committing its whole lines; the full file then
    resumes after them."""
    events, lines = _truncated_gzip(tmp_path)
    store = tmp_path / "live.db"
    args = ("run", str(_playbook(tmp_path)), "--store", str(store), "--once", "--clock",
            CLOCK, "--quarantine", str(tmp_path / "q.jsonl"), "--output", "jsonl")
    code, text = _invoke(*args, "--events", str(events))
    assert code == 1 and "ends early" in text
    reached = int(text.split("after line ")[1].split(";")[0])
    assert len(_outbox_customers(store)) == reached
    events.write_bytes(gzip.compress("".join(line + "\n" for line in lines).encode()))
    code, text = _invoke(*args, "--events", str(events))
    assert code == 0, text
    assert len(set(_outbox_customers(store))) == 6000


@pytest.mark.parametrize("command", ["simulate", "run"])
def test_an_unknown_format_is_a_usage_error(tmp_path: Path, command: str) -> None:
    """An .orc file exits 2 listing the formats sopkit reads, before anything runs."""
    events = tmp_path / "events.orc"
    events.write_bytes(b"ORC\x15\x04\x15\x10")
    extra = ("--store", str(tmp_path / "s.db"), "--once") if command == "run" else ()
    code, text = _invoke(command, str(_playbook(tmp_path)), "--events", str(events), *extra)
    assert code == 2
    assert "unknown file format '.orc'" in text
    assert all(fmt in text for fmt in (".jsonl", ".json", ".csv", ".gz"))


def test_json_and_ndjson_names_are_read_as_json_lines(tmp_path: Path) -> None:
    """Events named .json or .ndjson.gz are JSON Lines like .jsonl."""
    plain = _file(tmp_path / "events.json", [GOOD_FIRST, GOOD_LAST])
    packed = tmp_path / "events.ndjson.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    for events in (plain, packed):
        code, text = _invoke("simulate", str(_playbook(tmp_path)), "--events", str(events),
                             "--output", "jsonl", "--no-progress")
        assert code == 0, text
        assert json.loads(text)["events_applied"] == 2


@pytest.mark.parametrize("command", ["simulate", "run"])
def test_a_run_whose_every_record_is_quarantined_exits_1(tmp_path: Path, command: str) -> None:
    """Every event quarantined (wrong event type): a message on stderr and exit 1."""
    events = _file(tmp_path / "events.jsonl", [
        '{"customer_id":"a","type":"visit","ts":"2025-01-01T10:00:00"}'] * 3)
    extra = (("--store", str(tmp_path / "s.db"), "--once", "--clock", CLOCK)
             if command == "run" else ("--no-progress",))
    jail = tmp_path / "q.jsonl"
    code, text = _invoke(command, str(_playbook(tmp_path)), "--events", str(events),
                         "--quarantine", str(jail), *extra)
    assert code == 1
    assert "all 3 event records were quarantined (unknown event type 'visit' (3))" in text
    assert len(_jail(jail)) == 3


# -- issue 11: date-only timestamps -------------------------------------------------------

SEMANTICS = Path(__file__).parent / "data" / "semantics"


@pytest.mark.parametrize("ts", ["2025-01-01", "2025-01-01T09:00:00", "2025-01-01T23:00:00"])
def test_a_date_only_purchase_counts_calendar_days(tmp_path: Path, ts: str) -> None:
    """With day_starts 09:00, a purchase dated 2025-01-01 is "已 90 天未购买" on 1 April."""
    events = _file(tmp_path / "events.jsonl", [
        f'{{"customer_id":"c1","type":"purchase","ts":"{ts}","amount":"10"}}'])
    out = tmp_path / "actions.jsonl"
    code, text = _invoke("simulate", str(SEMANTICS / "calendar.toml"), "--events", str(events),
                         "--end", "2025-04-05T00:00:00", "--out", str(out), "--no-progress")
    assert code == 0, text
    quiet = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()
             if '"quiet_90"' in line]
    assert [(a["time"], a["note"]) for a in quiet] == \
        [("2025-04-01T09:00:00+08:00", "c1 已 90 天未购买")]


def test_a_date_alone_is_the_start_of_that_playbook_day() -> None:
    """A record's ts 2025-01-01 is its day_starts instant; an option's bare date stays 00:00."""
    cal = Calendar("Asia/Shanghai", day_starts_minutes=9 * 60)
    assert cal.format(cal.parse_ts("2025-01-01")) == "2025-01-01T09:00:00+08:00"
    assert cal.day_index(cal.parse_ts("2025-01-01")) == cal.day_index(
        cal.parse_ts("2025-01-01T12:00:00"))
    assert cal.format(cal.parse_ts("2025-01-01T00:00:00")) == "2025-01-01T00:00:00+08:00"
    assert cal.format(cal.parse("2025-01-01")) == "2025-01-01T00:00:00+08:00"


@pytest.mark.parametrize("text", ["0001-01-01T00:00:00+14:00", "0001-01-01", "1899-12-31",
                                  "3000-01-01T00:00:00Z", "9999-12-31T23:59:59-12:00"])
def test_times_outside_1900_to_2999_are_refused(text: str) -> None:
    """Times the calendar cannot do day arithmetic around raise a clear ValueError."""
    cal = Calendar("Asia/Shanghai", day_starts_minutes=9 * 60)
    for parse in (cal.parse, cal.parse_ts):
        with pytest.raises(ValueError, match="outside the supported time range"):
            parse(text)


def test_a_quarantine_that_is_a_pipe_is_written_to_not_replaced(tmp_path: Path) -> None:
    """`--quarantine` naming a pipe (as /dev/null) keeps it: the bad lines go through it."""
    events = _file(tmp_path / "events.jsonl", [GOOD_FIRST, BAD_LINES["time out of range"],
                                               GOOD_LAST])
    pipe = tmp_path / "q.pipe"
    os.mkfifo(pipe)
    read: list[str] = []
    reader = threading.Thread(target=lambda: read.extend(pipe.read_text().splitlines()),
                              daemon=True)  # a pipe removed by mistake would hold it forever
    reader.start()
    code, text = _invoke("simulate", str(_playbook(tmp_path)), "--events", str(events),
                         "--out", str(tmp_path / "actions.jsonl"), "--quarantine", str(pipe),
                         "--output", "jsonl", "--no-progress")
    reader.join(timeout=20)
    assert code == 0, text
    assert stat.S_ISFIFO(pipe.stat().st_mode)
    assert [json.loads(line)["line"] for line in read] == [2]
