"""The benchmark suite's quick mode: it runs, and its results file is complete and consistent.

Nothing here asserts on speed: the numbers depend on the machine and on what else runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks" / "bench.py"
GENERATE = ROOT / "benchmarks" / "generate.py"
ENGINES = ("native", "durable")
RUN_NUMBERS = ("events", "wall_s", "cpu_s", "events_per_s", "events_per_cpu_s", "peak_rss_mb",
               "actions")
RUN_FIELDS = ("id", "engine", "customers", "history_years", "sim_years", "end", "status",
              "reason", "by_rule", "pending_at_end", "stages", "tags", "purpose", *RUN_NUMBERS)
TOP_FIELDS = ("schema_version", "mode", "created", "total_seconds", "machine", "sopkit",
              "playbook", "seed", "inputs", "runs", "limit_ratios", "growth", "memory", "checks",
              "targets")
RULES = ("birthday_coupon", "post_purchase_guide", "owner_call_quiet", "clear_called",
         "mild_churn_recall", "severe_churn_recall", "mature_thanks")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run `bench.py --quick` once into a temporary directory; its results JSON."""
    tmp = tmp_path_factory.mktemp("bench")
    results = tmp / "out" / "results.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--results", str(results), "--data",
         str(tmp / "data"), "--scratch", str(tmp / "scratch")],
        cwd=ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert results.with_suffix(".md").read_text(encoding="utf-8").startswith("# sopkit")
    data: dict[str, Any] = json.loads(results.read_text(encoding="utf-8"))
    return data


def _runs(results: dict[str, Any], engine: str, sim_years: int = 1,
          history_years: int = 1) -> list[dict[str, Any]]:
    return [r for r in results["runs"] if r["engine"] == engine and r["sim_years"] == sim_years
            and r["history_years"] == history_years and r["purpose"] == "timed"]


def test_results_have_every_field(quick: dict[str, Any]) -> None:
    """The results file has every top-level and per-run field, and quick mode is labelled."""
    for name in TOP_FIELDS:
        assert name in quick, name
    assert quick["mode"] == "quick"
    assert quick["runs"]
    for run in quick["runs"]:
        for name in RUN_FIELDS:
            assert name in run, (run["id"], name)
        assert run["status"] == "ok", run


def test_numbers_are_positive(quick: dict[str, Any]) -> None:
    """Every run reports positive events, times, rates, peak RSS and actions."""
    for run in quick["runs"]:
        for name in RUN_NUMBERS:
            assert isinstance(run[name], int | float) and run[name] > 0, (run["id"], name)
    for row in (*quick["limit_ratios"], *quick["growth"]):
        assert row["cpu_ratio"] > 0 and row["wall_ratio"] > 0
    for target in quick["targets"]:
        assert target["value"] > 0 and isinstance(target["pass"], bool), target


def test_every_measurement_is_present(quick: dict[str, Any]) -> None:
    """1-year, 5-year and 2-year runs exist for sopkit and the limit, with their ratios."""
    for engine in (*ENGINES, "limit"):
        assert len(_runs(quick, engine)) == 1, engine
        assert len(_runs(quick, engine, sim_years=5)) == 1, engine
    assert _runs(quick, "limit-core")
    assert _runs(quick, "native", 2, 2) and _runs(quick, "limit", 2, 2)
    assert {r["engine"] for r in quick["limit_ratios"]} == set(ENGINES)
    assert {g["engine"] for g in quick["growth"]} == {*ENGINES, "limit"}
    assert quick["memory"]["vs_customers"] and quick["memory"]["vs_history"]
    names = {t["name"].split(" ")[0] for t in quick["targets"]}
    assert names >= {"native", "durable"}
    idle = [t for t in quick["targets"] if "idle years" in t["name"]]
    assert {t["name"].split(" ")[0] for t in idle} == set(ENGINES)  # 5y/2y, beside 5y/1y


def test_engines_report_the_same_actions(quick: dict[str, Any]) -> None:
    """Both engines report the same actions per rule and status, over 1 and 5 years."""
    for years in (1, 5):
        native, durable = _runs(quick, "native", years)[0], _runs(quick, "durable", years)[0]
        assert native["actions"] == durable["actions"]
        assert native["by_rule"] == durable["by_rule"]
    assert next(c for c in quick["checks"] if c["name"] == "engines_agree")["ok"]


def test_limit_counts_match_sopkit(quick: dict[str, Any]) -> None:
    """The limit's per-rule counts, end stages and tags equal sopkit's on every input."""
    for years, history in ((1, 1), (5, 1), (2, 2)):
        limit = _runs(quick, "limit", years, history)[0]
        native = _runs(quick, "native", years, history)[0]
        assert set(limit["by_rule"]) == set(RULES)
        assert limit["by_rule"] == native["by_rule"]
        assert limit["pending_at_end"] == native["pending_at_end"]
        assert limit["stages"] == native["stages"]
        assert limit["tags"] == native["tags"]
    assert sum(limit["by_rule"]["birthday_coupon"].values()) > 0
    assert next(c for c in quick["checks"] if c["name"] == "limit_agrees")["ok"]


def test_records_are_byte_identical(quick: dict[str, Any]) -> None:
    """The limit writes exactly sopkit's action records, with either engine."""
    checks = {c["name"]: c for c in quick["checks"]}
    for engine in ENGINES:
        assert checks[f"records_identical_{engine}_limit"]["ok"], checks


def test_generator_is_deterministic_and_extends(tmp_path: Path) -> None:
    """The same seed gives the same files; a 2-year history starts with the 1-year one."""
    def generate(name: str, years: int) -> Path:
        out = tmp_path / name
        subprocess.run([sys.executable, str(GENERATE), "--customers", "50", "--years",
                        str(years), "--seed", "7", "--out", str(out)], check=True,
                       capture_output=True)
        return out

    one, again, two = generate("a", 1), generate("b", 1), generate("c", 2)
    for name in ("events.jsonl", "profiles.jsonl"):
        assert (one / name).read_bytes() == (again / name).read_bytes()
    lines = (one / "events.jsonl").read_text(encoding="utf-8").splitlines()
    assert lines == sorted(lines)  # each line starts with its ts, then the customer
    year_one = [line for line in (two / "events.jsonl").read_text(encoding="utf-8").splitlines()
                if json.loads(line)["ts"] < "2025"]
    assert year_one == lines
    meta = json.loads((one / "meta.json").read_text(encoding="utf-8"))
    assert meta["events"] == len(lines) and 10 * 50 <= meta["events"] <= 30 * 50
