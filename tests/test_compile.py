"""Golden-file tests of the pure compiler: tests/cases/compile/<name>.toml -> <name>.ir.json.

Regenerate the goldens after an intended IR change with
    SOPKIT_REGEN=1 .venv/bin/python -m pytest tests/test_compile.py
and review the diff like code.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import sopkit

CASES = Path(__file__).parent / "cases" / "compile"
NAMES = sorted(p.stem for p in CASES.glob("*.toml"))  # fragments/ holds included files only
REGEN = os.environ.get("SOPKIT_REGEN") == "1"


def ir_text(ir: dict[str, Any]) -> str:
    return json.dumps(ir, ensure_ascii=False, indent=1, sort_keys=True) + "\n"


def compile_case(name: str) -> dict[str, Any]:
    return sopkit.compile_playbook(sopkit.load_playbook(CASES / f"{name}.toml").model)


def test_there_are_enough_cases() -> None:
    """The golden cases cover wake-ups, arithmetic, not/in lists, includes and actions."""
    assert {"wakeups", "arithmetic", "lists", "includes", "actions"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_compiled_ir_matches_golden(name: str) -> None:
    """Compiling a case gives exactly its checked-in .ir.json (SOPKIT_REGEN=1 rewrites it)."""
    golden = CASES / f"{name}.ir.json"
    text = ir_text(compile_case(name))
    if REGEN:
        golden.write_text(text, encoding="utf-8")
    assert golden.exists(), f"no golden for {name}: run with SOPKIT_REGEN=1"
    assert text == golden.read_text(encoding="utf-8")


@pytest.mark.parametrize("name", NAMES)
def test_ir_is_json_and_deterministic(name: str) -> None:
    """The IR survives a JSON round trip unchanged and two compilations are identical."""
    first, second = compile_case(name), compile_case(name)
    assert json.loads(json.dumps(first)) == first
    assert ir_text(first) == ir_text(second)


def test_compiling_does_not_import_durable() -> None:
    """Loading and compiling a playbook never imports the durable-rules engine."""
    script = (
        "import sys\n"
        "import sopkit._ir.compile, sopkit._playbook.load\n"
        "model = sopkit._playbook.load.load(sys.argv[1]).model\n"
        "ir = sopkit._ir.compile.compile_playbook(model)\n"
        "assert ir['rules'], ir\n"
        "assert 'durable' not in sys.modules, sorted(m for m in sys.modules if 'durable' in m)\n"
    )
    for name in ("wakeups", "includes"):
        subprocess.run([sys.executable, "-c", script, str(CASES / f"{name}.toml")],
                       check=True, capture_output=True, text=True)


# ---- a few facts the goldens show, spelled out ---------------------------------------------


def test_wakeups_list_thresholds_and_any() -> None:
    """A time-relative slot lists the constants it is compared with; arithmetic makes it `any`."""
    wakeups = compile_case("wakeups")["wakeups"]
    assert wakeups["days_since_purchase"]["thresholds"] == [30.5, 90]
    assert wakeups["days_since_purchase"]["any"] is True  # inside days_since_first - ...
    assert wakeups["days_since_first"] == {**wakeups["days_since_first"], "any": True}
    assert wakeups["days_to_birthday"]["thresholds"] == [3]
    assert wakeups["days_to_expiry"]["thresholds"] == [0, 15]
    assert wakeups["today"]["thresholds"] == [dt.date(2024, 6, 1).toordinal()]
    assert "purchases_30d" not in wakeups  # windows change by eviction, not by day


def test_includes_merge_fragment_and_event_fields() -> None:
    """An included fragment's metrics, scores and tags are compiled; event fields are merged."""
    ir = compile_case("includes")
    names = {s["name"] for s in ir["slots"]}
    assert {"days_since_purchase", "complaints_90d", "churn_risk", "tag:流失风险",
            "event:purchase.amount", "event:purchase.store"} <= names
    assert [s["name"] for s in ir["scores"]] == ["churn_risk"]
    assert ir["version"] == "3"


def test_rule_order_is_priority_then_file_order() -> None:
    """rule_order is priority (higher first) then file order; durations are in seconds."""
    ir = compile_case("actions")
    assert [ir["rules"][i]["name"] for i in ir["rule_order"]] == ["escalate", "notify", "guide"]
    guide, escalate, notify = ir["rules"]
    assert (guide["delay"], notify["cooldown"], escalate["actions"][0]["due"]) == \
        (3 * 86_400, 14 * 86_400, 12 * 3600)


def test_negative_constants_are_thresholds_not_arithmetic(tmp_path: Path) -> None:
    """`days_to_expiry <= -1` is a threshold of -1, so lapsed members are not woken daily."""
    playbook = tmp_path / "p.toml"
    playbook.write_text(
        '[playbook]\nname = "p"\n[profile]\nexpires = "date"\n[events.visit]\n'
        '[metrics]\ndays_to_expiry = { kind = "days_until", attribute = "expires" }\n'
        '[tags.lapsed]\nwhen = "days_to_expiry <= -1"\n', encoding="utf-8")
    ir = sopkit.compile_playbook(sopkit.load_playbook(playbook).model)
    assert ir["wakeups"]["days_to_expiry"]["thresholds"] == [-1]
    assert ir["wakeups"]["days_to_expiry"]["any"] is False


@pytest.mark.parametrize(("condition", "boundaries"), [
    ("days_since_purchase > 90", [90]),
    ("days_since_purchase >= 90", [89]),
    ("90 < days_since_purchase", [90]),
    ("days_since_purchase < 7", [6]),
    ("days_since_purchase <= 7", [7]),
    ("days_since_purchase == 3", [2, 3]),
    ("days_since_purchase != 3", [2, 3]),
    ("days_since_purchase > 2.5", [2]),
    ("days_since_purchase == 2.5", []),
])
def test_boundaries_follow_the_operator(tmp_path: Path, condition: str,
                                        boundaries: list[int]) -> None:
    """Each comparison wakes a customer only where its truth can change, per its operator."""
    playbook = tmp_path / "p.toml"
    playbook.write_text(
        '[playbook]\nname = "p"\n[events.purchase]\n'
        '[metrics]\ndays_since_purchase = { kind = "days_since", event = "purchase" }\n'
        f'[tags.t]\nwhen = "{condition}"\n', encoding="utf-8")
    ir = sopkit.compile_playbook(sopkit.load_playbook(playbook).model)
    assert ir["wakeups"]["days_since_purchase"]["boundaries"] == boundaries
