"""`sopkit simulate` from the command line: outputs, quarantine, exit codes, determinism."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sopkit._cli.app import app

ROOT = Path(__file__).resolve().parent.parent
MEMBERSHIP = ["playbooks/membership.toml", "--events", "examples/membership/events.jsonl",
              "--profiles", "examples/membership/profiles.csv", "--end", "2025-04-30"]


@pytest.fixture(autouse=True)
def _at_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


def _visit_playbook(tmp_path: Path, text: str, rule: str = "", profile: str = "") -> Path:
    """A one-rule playbook: on each `visit`, send template `text` on a console channel."""
    path = tmp_path / "p.toml"
    path.write_text(
        f'[playbook]\nname = "p"\n[profile]\n{profile}[events.visit]\n'
        f'[channels.c]\ntype = "console"\n[templates.t]\ntext = "{text}"\n'
        f'[[rules]]\nname = "r"\non = "visit"\n{rule}'
        'actions = [{ type = "send", channel = "c", template = "t" }]\n', encoding="utf-8")
    return path


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_membership_example_summary(tmp_path: Path) -> None:
    """The shipped membership example reports its reminders, nudges and the quarantined line."""
    out = tmp_path / "actions.jsonl"
    code, text = _run("simulate", *MEMBERSHIP, "--out", str(out))
    assert code == 0, text
    assert "renewal_reminder" in text and "course_nudge" in text
    assert "1 quarantined" in text
    actions = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    reminders = [a for a in actions if a["rule"] == "renewal_reminder"]
    # m005 expires 2025-03-02: reminded 15 days before, at the playbook's day start
    assert {"customer_id": "m005", "time": "2025-02-15T10:00:00+08:00"}.items() <= \
        next(a for a in reminders if a["customer_id"] == "m005").items()
    jail = [json.loads(line) for line in
            (tmp_path / "actions.quarantine.jsonl").read_text(encoding="utf-8").splitlines()]
    assert jail[0]["line"] == 86 and "bad 'ts'" in jail[0]["reason"]


def test_output_jsonl_is_one_summary_object(tmp_path: Path) -> None:
    """--output jsonl prints the summary as one JSON line for machines."""
    code, text = _run("simulate", *MEMBERSHIP, "--output", "jsonl",
                      "--quarantine", str(tmp_path / "q.jsonl"))
    assert code == 0
    summary = json.loads(text)
    assert summary["events_read"] == 86 and summary["quarantined"] == 1
    assert summary["by_rule"]["renewal_reminder"] == {"planned": 4}
    assert sum(summary["stages"].values()) == 5


def test_same_inputs_give_byte_identical_output(tmp_path: Path) -> None:
    """Two runs over the same history write byte-identical action files."""
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    for out in (first, second):
        assert _run("simulate", *MEMBERSHIP, "--out", str(out))[0] == 0
    assert first.read_bytes() == second.read_bytes()
    assert first.stat().st_size > 0


def test_phone_and_email_are_masked_unless_asked(tmp_path: Path) -> None:
    """Rendered messages mask phone numbers and e-mails; --unmasked shows them."""
    playbook = _visit_playbook(tmp_path, "call {{ profile.phone }}", profile='phone = "string"\n')
    events = tmp_path / "e.csv"
    events.write_text("customer_id,type,ts\nc1,visit,2024-01-01T10:00:00\n", encoding="utf-8")
    profiles = tmp_path / "p.jsonl"
    profiles.write_text('{"customer_id": "c1", "phone": "13812345678"}\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    base = ["simulate", str(playbook), "--events", str(events), "--profiles", str(profiles),
            "--out", str(out)]
    assert _run(*base)[0] == 0
    assert json.loads(out.read_text(encoding="utf-8"))["message"] == "call 138****5678"
    assert _run(*base, "--unmasked")[0] == 0
    assert json.loads(out.read_text(encoding="utf-8"))["message"] == "call 13812345678"


def test_csv_and_gzip_inputs(tmp_path: Path) -> None:
    """Events may be CSV or gzip-compressed JSONL; both read the same."""
    import gzip

    src = (ROOT / "examples/membership/events.jsonl").read_bytes()
    gz = tmp_path / "events.jsonl.gz"
    gz.write_bytes(gzip.compress(src))
    code, text = _run("simulate", "playbooks/membership.toml", "--events", str(gz),
                      "--profiles", "examples/membership/profiles.csv", "--end", "2025-04-30",
                      "--output", "jsonl", "--quarantine", str(tmp_path / "q.jsonl"))
    assert code == 0
    assert json.loads(text)["events_applied"] == 85


def test_bad_records_are_quarantined_and_the_run_goes_on(tmp_path: Path) -> None:
    """Malformed JSON, unknown types, bad fields and out-of-order events are each quarantined."""
    events = tmp_path / "e.jsonl"
    events.write_text("\n".join([
        '{"customer_id": "m001", "type": "login", "ts": "2025-02-01T10:00:00"}',
        '{"customer_id": "m001", "type": "login", "ts": ',
        '{"customer_id": "m001", "type": "logout", "ts": "2025-02-01T11:00:00"}',
        '{"customer_id": "m001", "type": "renewal", "ts": "2025-02-01T12:00:00", "months": "x"}',
        '{"type": "login", "ts": "2025-02-01T12:30:00"}',
        '{"customer_id": "m002", "type": "login", "ts": "2025-01-01T10:00:00"}',
        '{"customer_id": "m002", "type": "login", "ts": "2025-02-02T10:00:00"}',
    ]) + "\n", encoding="utf-8")
    jail = tmp_path / "q.jsonl"
    code, text = _run("simulate", "playbooks/membership.toml", "--events", str(events),
                      "--quarantine", str(jail), "--output", "jsonl")
    assert code == 0
    summary = json.loads(text)
    assert summary["events_applied"] == 2 and summary["quarantined"] == 5
    reasons = [json.loads(line)["reason"] for line in jail.read_text().splitlines()]
    assert reasons[0].startswith("not valid JSON")
    assert reasons[1].startswith("unknown event type 'logout'")
    assert reasons[2].startswith("field 'months': 'x' is not a valid int")
    assert reasons[3] == "missing 'customer_id'"
    assert reasons[4].startswith("out of order")


def test_invalid_playbook_exits_1_and_missing_file_exits_2(tmp_path: Path) -> None:
    """An invalid playbook exits 1 with its problems; a missing events file is a usage error."""
    bad = ROOT / "tests/cases/invalid/condition_unknown_name.toml"
    code, text = _run("simulate", str(bad), "--events", "examples/membership/events.jsonl")
    assert code == 1 and "unknown name 'days_since_purchse'" in text
    code, _ = _run("simulate", "playbooks/membership.toml", "--events", str(tmp_path / "none"))
    assert code == 2


def test_python_dash_m_and_no_progress_bar_when_piped(tmp_path: Path) -> None:
    """`python -m sopkit` works, and a piped run prints no progress-bar escape codes."""
    env = dict(os.environ, PYTHONIOENCODING="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "sopkit", "simulate", *MEMBERSHIP, "--quarantine",
         str(tmp_path / "q.jsonl")], capture_output=True, text=True, env=env, cwd=ROOT,
        check=False)
    assert proc.returncode == 0, proc.stderr
    assert "\x1b[" not in proc.stdout + proc.stderr
    assert "Actions by rule" in proc.stdout


def test_start_warms_up_without_reporting(tmp_path: Path) -> None:
    """Actions before --start are counted as warm-up and not written."""
    out = tmp_path / "a.jsonl"
    code, text = _run("simulate", *MEMBERSHIP, "--start", "2025-03-01", "--out", str(out),
                      "--output", "jsonl")
    assert code == 0
    summary = json.loads(text)
    times = [json.loads(line)["time"] for line in out.read_text().splitlines()]
    assert summary["warmup_actions"] > 0 and times and min(times) >= "2025-03-01"


def test_every_command_has_help() -> None:
    """--help works for the app and each command."""
    for args in ([], ["check"], ["simulate"], ["schema"], ["compile"]):
        code, text = _run(*args, "--help")
        assert code == 0 and "Usage" in text


def test_unreadable_inputs_are_usage_errors(tmp_path: Path) -> None:
    """A .gz that is not gzip, a bad --start and an unknown engine exit 2 with a message."""
    fake = tmp_path / "events.jsonl.gz"
    fake.write_text('{"customer_id": "m001"}\n', encoding="utf-8")
    code, text = _run("simulate", "playbooks/membership.toml", "--events", str(fake))
    assert code == 2 and "cannot read it as gzip" in text
    code, text = _run("simulate", *MEMBERSHIP, "--start", "yesterday")
    assert code == 2 and "--start 'yesterday' is not an ISO 8601" in text
    code, text = _run("simulate", *MEMBERSHIP, "--engine", "drools")
    assert code == 2 and "unknown engine 'drools'" in text


def test_a_line_that_is_not_utf8_is_quarantined(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 put that one line in quarantine; the others are applied."""
    events = tmp_path / "e.jsonl"
    events.write_bytes(
        b'{"customer_id": "m001", "type": "login", "ts": "2025-02-01T10:00:00"}\n'
        b'{"customer_id": "m\xff01", "type": "login", "ts": "2025-02-01T11:00:00"}\n'
        b'{"customer_id": "m002", "type": "login", "ts": "2025-02-01T12:00:00"}\n')
    jail = tmp_path / "q.jsonl"
    code, text = _run("simulate", "playbooks/membership.toml", "--events", str(events),
                      "--quarantine", str(jail), "--output", "jsonl")
    assert code == 0
    summary = json.loads(text)
    assert summary["events_applied"] == 2 and summary["quarantine_reasons"] == {
        "not UTF-8 text": 1}
    assert json.loads(jail.read_text(encoding="utf-8"))["line"] == 2


def test_quarantine_is_masked_and_never_stale(tmp_path: Path) -> None:
    """The quarantine file masks phones like the actions, and a clean rerun leaves none."""
    jail = tmp_path / "q.jsonl"
    events = tmp_path / "e.jsonl"
    events.write_text('{"customer_id": "m001", "type": "login", "ts": "x", '
                      '"note": "13812345678"}\n', encoding="utf-8")
    # its only record is quarantined: exit 1 (issue 12), the quarantine is still written
    assert _run("simulate", "playbooks/membership.toml", "--events", str(events),
                "--quarantine", str(jail))[0] == 1
    assert "138****5678" in jail.read_text(encoding="utf-8")
    events.write_text('{"customer_id": "m001", "type": "login", '
                      '"ts": "2025-02-01T10:00:00"}\n', encoding="utf-8")
    assert _run("simulate", "playbooks/membership.toml", "--events", str(events),
                "--quarantine", str(jail))[0] == 0
    assert not jail.exists()


def test_phone_customer_ids_are_masked_in_ids_and_keys(tmp_path: Path) -> None:
    """A phone-like customer id is masked in customer_id, in the key's customer part, and in
    the message; --unmasked writes all three in full."""
    playbook = _visit_playbook(tmp_path, "hi {{ customer_id }}")
    events = tmp_path / "e.csv"
    events.write_text("customer_id,type,ts\n13812345678,visit,2024-01-01T10:00:00\n",
                      encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert _run("simulate", str(playbook), "--events", str(events), "--out", str(out))[0] == 0
    action = json.loads(out.read_text(encoding="utf-8"))
    assert action["customer_id"] == "138****5678"
    assert action["key"] == "p:1:r:138****5678:1:0"
    assert action["message"] == "hi 138****5678"
    assert action["time"] == "2024-01-01T10:00:00+00:00"
    assert _run("simulate", str(playbook), "--events", str(events), "--out", str(out),
                "--unmasked")[0] == 0
    action = json.loads(out.read_text(encoding="utf-8"))
    assert action["customer_id"] == "13812345678" and action["key"] == "p:1:r:13812345678:1:0"


def test_delayed_actions_pending_at_the_end_are_counted(tmp_path: Path) -> None:
    """A delayed action not yet due when the simulation ends is reported as pending."""
    playbook = _visit_playbook(tmp_path, "later", rule='delay = "3d"\n')
    events = tmp_path / "e.csv"
    events.write_text("customer_id,type,ts\nc1,visit,2024-01-01T10:00:00\n"
                      "c2,visit,2024-01-05T10:00:00\n", encoding="utf-8")
    code, text = _run("simulate", str(playbook), "--events", str(events), "--output", "jsonl")
    summary = json.loads(text)
    assert code == 0 and summary["actions"] == 1 and summary["pending_at_end"] == 1
