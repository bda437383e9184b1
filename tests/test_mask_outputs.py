"""No phone number or e-mail address reaches an output unless --unmasked is given.

The history in tests/data/mask has customer ids that are mobile numbers (plain and
`+86 139-…`) and e-mail addresses (Chinese local part, dotless domain), profiles with phones
in spaced, prefixed and landline forms, quarantined lines that quote a phone, and a staff
hand-over. Every command that prints or writes customer data is run on it.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sopkit._cli.app import app

DATA = Path(__file__).parent / "data" / "mask"
IDS = ["13846571234", "+86 139-2468-1357", "王小明@example.com", "xiaohong@localhost"]
PHONES = ["138 9753 8642", "+86 137 3141 5926", "010-7182 8182", "15980291111"]
# what masking hides: a raw value must not appear, nor any hidden part of one (a table may
# fold a long value over two lines, so the whole value alone proves little)
HIDDEN = [*IDS, *PHONES, "4657", "2468", "9753", "3141", "7182", "8029", "zhangsan@",
          "hangsan@", "李四@", "小明@", "xiaohong@", "iaohong@"]


# a number with a decimal point is no contact, but may hold a fragment's digits: the report's
# chart coordinates (matplotlib's SVG paths: `50.846575` holds 4657)
_DECIMAL = re.compile(r"[0-9]*\.[0-9]+")


def _leaks(text: str) -> list[str]:
    text = _DECIMAL.sub(" ", text)
    return [value for value in HIDDEN if value in text]


@pytest.fixture()
def shop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The PII shop in a fresh folder (its jsonl channel writes sent.jsonl there)."""
    for name in ("pii.toml", "profiles.jsonl", "events.jsonl"):
        shutil.copy(DATA / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def _simulate(out: Path, *extra: str) -> Any:
    return _invoke("simulate", "pii.toml", "--events", "events.jsonl", "--profiles",
                   "profiles.jsonl", "--end", "2025-01-10", "--out", str(out), *extra)


@pytest.mark.parametrize("output", ["table", "jsonl"])
def test_simulate_masks_records_quarantine_report_and_summary(shop: Path, output: str) -> None:
    """Action records, the quarantine file, the HTML report and the summary hold no contact."""
    result = _simulate(shop / "out.jsonl", "--report", "report.html", "--output", output)
    assert result.exit_code == 0, result.output
    records = (shop / "out.jsonl").read_text(encoding="utf-8")
    jail = (shop / "out.quarantine.jsonl").read_text(encoding="utf-8")
    report = (shop / "report.html").read_text(encoding="utf-8")
    for text in (records, jail, report, result.output):
        assert _leaks(text) == []
    shown = [json.loads(line) for line in records.splitlines()]
    assert {r["customer_id"] for r in shown} == {"138****1234", "+86 139-****-1357",
                                                 "王***@example.com", "x***@localhost"}
    assert "pii:1:thanks:+86 139-****-1357:1:0" in {r["key"] for r in shown}
    assert len(jail.splitlines()) == 2 and "138 **** 8642" in jail


def test_simulate_unmasked_writes_everything_in_full(shop: Path) -> None:
    """--unmasked writes ids, keys, phones and e-mails as they are, quarantine included."""
    result = _simulate(shop / "out.jsonl", "--unmasked")
    assert result.exit_code == 0, result.output
    records = (shop / "out.jsonl").read_text(encoding="utf-8")
    jail = (shop / "out.quarantine.jsonl").read_text(encoding="utf-8")
    assert all(value in records for value in [*IDS, *PHONES])
    assert "pii:1:thanks:+86 139-2468-1357:1:0" in records
    assert "oops 138 9753 8642" in jail and "王小明@example.com" in jail


@pytest.mark.parametrize("customer", IDS)
@pytest.mark.parametrize("output", ["table", "jsonl"])
def test_explain_masks_the_customer_and_the_timeline(shop: Path, customer: str,
                                                      output: str) -> None:
    """explain's title, texts and data are masked; --unmasked shows the customer in full."""
    args = ["explain", "pii.toml", "--events", "events.jsonl", "--profiles", "profiles.jsonl",
            "--customer", customer, "--at", "2025-01-10", "--output", output]
    masked = _invoke(*args)
    assert masked.exit_code == 0, masked.output
    assert _leaks(masked.output) == []
    assert "None" not in masked.output and "(none) -> " in masked.output  # first owner
    unmasked = _invoke(*args, "--unmasked")
    assert customer in unmasked.output if output == "jsonl" else "****" not in unmasked.output


def test_explain_of_an_unknown_customer_masks_the_id_in_the_error(shop: Path) -> None:
    """The usage error names the customer asked for, masked."""
    result = _invoke("explain", "pii.toml", "--events", "events.jsonl", "--customer",
                     "13900000000")
    assert result.exit_code == 2
    assert "139****0000" in result.output and "13900000000" not in result.output


@pytest.fixture()
def store(shop: Path) -> Path:
    """A live store after `sopkit run` up to the hand-over, sending the whole history (so
    the jsonl channel writes); follow-ups still pending."""
    result = _invoke("run", "pii.toml", "--store", "s.db", "--events", "events.jsonl",
                     "--profiles", "profiles.jsonl", "--once", "--clock", "2025-01-05T10:30:00",
                     "--lateness", "0s", "--send-from", "2025-01-01T00:00:00", "--engine",
                     "native", "--output", "jsonl")
    assert result.exit_code == 0, result.output
    assert _leaks(result.output) == []
    assert _leaks((shop / "s.quarantine.jsonl").read_text(encoding="utf-8")) == []
    return shop / "s.db"


def test_masking_is_display_only_the_store_and_the_channel_keep_real_ids(store: Path) -> None:
    """Outbox keys and ids stay whole in the store, and the jsonl channel delivers them whole."""
    with sqlite3.connect(store) as db:
        keys = {key for (key,) in db.execute("SELECT key FROM outbox")}
    assert {"pii:1:thanks:13846571234:1:0", "pii:1:thanks:王小明@example.com:1:0"} <= keys
    sent = (store.parent / "sent.jsonl").read_text(encoding="utf-8")
    assert "13846571234" in sent and "138 9753 8642" in sent


@pytest.mark.parametrize("command", [
    ["dry-run", "pii.toml", "--store", "s.db", "--at", "2025-01-08T00:00:00", "--engine",
     "native"],
    ["outbox", "list", "--store", "s.db"],
    ["handover", "status", "pii.toml", "--store", "s.db", "--all"],
], ids=["dry-run", "outbox-list", "handover-status"])
def test_store_commands_mask_unless_asked(store: Path, command: list[str]) -> None:
    """dry-run, outbox list and handover status mask customer ids, keys and contacts, in the
    table and in JSON lines; --unmasked shows them (the store itself keeps them whole)."""
    for output in ("table", "jsonl"):
        result = _invoke(*command, "--output", output)
        assert result.exit_code in (0, 3), result.output
        assert _leaks(result.output) == [], output
        assert "****" in result.output
    shown = _invoke(*command, "--output", "jsonl", "--unmasked")
    assert shown.exit_code in (0, 3), shown.output
    assert {"+86 139-2468-1357", "王小明@example.com"} <= {
        json.loads(line).get("customer_id") or json.loads(line)["message"]["customer_id"]
        for line in shown.stdout.splitlines()}


def test_diff_masks_customer_ids_and_records(shop: Path) -> None:
    """diff lists each customer masked, and its records' keys and messages too."""
    changed = shop / "changed.toml"
    changed.write_text((shop / "pii.toml").read_text(encoding="utf-8")
                       .replace("谢谢！", "多谢！"), encoding="utf-8")
    args = ["diff", "pii.toml", str(changed), "--events", "events.jsonl", "--profiles",
            "profiles.jsonl", "--end", "2025-01-10"]
    for output in ("table", "jsonl"):
        result = _invoke(*args, "--output", output)
        assert result.exit_code == 1, result.output
        assert _leaks(result.output) == [], output
    assert "138****1234" in _invoke(*args).output
    assert "13846571234" in _invoke(*args, "--unmasked").output
