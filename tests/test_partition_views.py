"""`--report`, `diff`, `review` and `explain` on partitioned runs: the same output as one
worker's, byte for byte.

Environment: SOPKIT_PARTITION_VIEW_EXAMPLES=N generated cases per run (default 6).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import differential_gen as gen
from hypothesis import HealthCheck, given, note, settings
from test_partition import _cases, _membership_without_capacity, _write_case
from test_review import _history
from typer.testing import CliRunner

import sopkit
from sopkit._cli.app import app
from sopkit._offline.explain import explain

EXAMPLES = int(os.environ.get("SOPKIT_PARTITION_VIEW_EXAMPLES", "6"))
ROOT = Path(__file__).parent.parent
MEMBERSHIP = ROOT / "examples/membership"
HISTORY = ["--events", str(MEMBERSHIP / "events.jsonl"),
           "--profiles", str(MEMBERSHIP / "profiles.csv")]


def test_the_report_of_two_workers_is_the_report_of_one(tmp_path: Path) -> None:
    """`simulate --report --workers 2` writes the HTML page of one worker, byte for byte."""
    playbook = _membership_without_capacity(tmp_path)
    pages: dict[int, bytes] = {}
    for workers in (1, 2):
        report = tmp_path / f"report-{workers}.html"
        result = CliRunner().invoke(app, [
            "simulate", str(playbook), *HISTORY, "--end", "2025-04-30",
            "--quarantine", str(tmp_path / "q.jsonl"), "--report", str(report),
            "--workers", str(workers), "--output", "jsonl"])
        assert result.exit_code == 0, result.output
        pages[workers] = report.read_bytes()
    assert pages[2] == pages[1]
    page = pages[1].decode("utf-8")
    for section in ('id="stages"', 'id="actions"', 'id="rules"', 'id="statuses"'):
        assert section in page, section  # the merged data has every section to compare


def _report(playbook: sopkit.LoadedPlaybook, folder: Path, workers: int,
            end: str | None) -> str:
    """The HTML report of one simulation with `workers`."""
    profiles = folder / "profiles.jsonl"
    data = sopkit.ReportData()
    try:
        summary = sopkit.simulate(playbook, folder / "events.jsonl",
                                  profiles=profiles if profiles.exists() else None, end=end,
                                  quarantine=folder / "q.jsonl", report=data, workers=workers)
    except sopkit.ChainError:  # which customer's chain is reported first may differ
        return "ChainError"
    page, _notes = sopkit.render_report(summary, data)
    return page


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(_cases())
def test_generated_reports_are_the_same_with_two_workers(
        drawn: tuple[gen.Case, list[str]]) -> None:
    """Generated playbooks and histories: the report of 2 workers is the report of one."""
    case, lines = drawn
    note(repr(case))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        playbook = _write_case(case, lines, folder)
        assert _report(playbook, folder, 2, case.end) == _report(playbook, folder, 1, case.end)


def test_diff_with_two_workers_prints_what_one_worker_prints(tmp_path: Path) -> None:
    """`sopkit diff --workers 2` finds the same differences, in table and JSON lines."""
    old = _membership_without_capacity(tmp_path)
    text = old.read_text(encoding="utf-8")
    assert text.count('when = "days_to_expiry == 15"') == 1
    new = tmp_path / "new.toml"
    new.write_text(text.replace('when = "days_to_expiry == 15"',
                                'when = "days_to_expiry == 10"'), encoding="utf-8")
    for output in ("table", "jsonl"):
        printed = {}
        for workers in (1, 2):
            result = CliRunner().invoke(app, [
                "diff", str(old), str(new), *HISTORY, "--end", "2025-04-30",
                "--output", output, "--workers", str(workers)])
            assert result.exit_code == 1, result.output  # there are differences
            printed[workers] = result.output
        assert printed[2] == printed[1], output
        assert "moved" in printed[1]


def test_review_with_two_workers_gives_the_review_of_one(tmp_path: Path) -> None:
    """`sopkit review --workers 2` counts the same arms and conversions as one worker."""
    playbook, events = _history(tmp_path, 400, {"holdout": 0.1, "small": 0.2, "big": 0.3})
    for output in ("table", "jsonl"):
        printed = {}
        for workers in (1, 2):
            result = CliRunner().invoke(app, [
                "review", str(playbook), "--events", str(events), "--experiment", "coupon",
                "--output", output, "--workers", str(workers)])
            assert result.exit_code == 0, result.output
            printed[workers] = result.output
        assert printed[2] == printed[1], output
        assert "holdout" in printed[1] and "big" in printed[1]


def test_diff_of_a_playbook_with_task_capacity_on_two_workers_is_one_workers(
        tmp_path: Path) -> None:
    """membership.toml has task_capacity: `diff --workers 2` prints what one worker does."""
    old = str(ROOT / "playbooks/membership.toml")
    shown = {}
    for workers in ("1", "2"):
        result = CliRunner().invoke(app, ["diff", old, old, *HISTORY, "--workers", workers])
        assert result.exit_code == 0, result.output
        shown[workers] = result.output
    assert shown["2"] == shown["1"] and shown["1"]


def _timelines(playbook: sopkit.LoadedPlaybook, folder: Path, end: str | None,
               whole: bool) -> dict[str, list[dict[str, object]]]:
    """Every generated customer's `explain` timeline, as JSON, or the error it ends with."""
    profiles = folder / "profiles.jsonl"
    out = {}
    for customer in gen.CUSTOMERS:
        try:
            entries = explain(playbook, folder / "events.jsonl", customer,
                              profiles=profiles if profiles.exists() else None, at=end,
                              whole=whole)
        except sopkit.SopkitError as exc:
            out[customer] = [{"error": str(exc), "chain": isinstance(exc, sopkit.ChainError)}]
            continue
        out[customer] = [e.to_json() for e in entries]
    return out


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(_cases())
def test_explain_on_the_customers_partition_gives_the_full_replays_timeline(
        drawn: tuple[gen.Case, list[str]]) -> None:
    """Generated cases: explain stepping only the customer's partition equals a full replay."""
    case, lines = drawn
    note(repr(case))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        playbook = _write_case(case, lines, folder)
        alone = _timelines(playbook, folder, case.end, False)
        full = _timelines(playbook, folder, case.end, True)
        for customer in gen.CUSTOMERS:
            ended = full[customer][-1] if full[customer] else {}
            if ended.get("chain") and not str(ended["error"]).startswith(
                    f"customer {customer}:"):
                continue  # another's endless rule chain stops a full replay, not a partition
            assert alone[customer] == full[customer], customer


def test_explain_of_each_member_is_the_full_replays(tmp_path: Path) -> None:
    """The membership members' timelines, from their partitions alone, are the full ones."""
    playbook = sopkit.load_playbook(_membership_without_capacity(tmp_path))
    for customer in ("m001", "m002", "m003", "m004", "m005"):
        timelines = [[e.to_json() for e in explain(
            playbook, MEMBERSHIP / "events.jsonl", customer,
            profiles=MEMBERSHIP / "profiles.csv", at="2025-04-30", whole=whole)]
            for whole in (False, True)]
        assert timelines[0] == timelines[1], customer
        assert any(e["kind"] == "action" for e in timelines[0]), customer


def test_review_of_a_playbook_with_task_capacity_on_two_workers_is_one_workers(
        tmp_path: Path) -> None:
    """With task_capacity, `review --workers 2` prints the review of one worker."""
    playbook, events = _history(tmp_path, 40, {"holdout": 0.1, "small": 0.1, "big": 0.1})
    playbook.write_text(playbook.read_text(encoding="utf-8")
                        + "\n[policy]\ntask_capacity = 20\n", encoding="utf-8")
    shown = {}
    for workers in ("1", "2"):
        result = CliRunner().invoke(app, ["review", str(playbook), "--events", str(events),
                                          "--experiment", "coupon", "--workers", workers])
        assert result.exit_code == 0, result.output
        shown[workers] = result.output
    assert shown["2"] == shown["1"] and shown["1"]
