"""`--report`, `diff`, `review` and `explain` on partitioned runs: the same output as one
worker's, byte for byte.

Environment: SOPKIT_PARTITION_VIEW_EXAMPLES=N generated cases per run (default 6).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import differential_gen as gen
from hypothesis import HealthCheck, assume, given, note, settings
from test_partition import _cases, _membership_without_capacity
from typer.testing import CliRunner

import sopkit
from sopkit._cli.app import app

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
        path = folder / "playbook.toml"
        path.write_text(case.toml(), encoding="utf-8")
        try:
            playbook = sopkit.load_playbook(path)
        except sopkit.PlaybookError:
            assume(False)
            raise
        (folder / "events.jsonl").write_text("".join(line + "\n" for line in lines),
                                             encoding="utf-8")
        if case.profiles:
            (folder / "profiles.jsonl").write_text(
                "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in case.profiles),
                encoding="utf-8")
        assert _report(playbook, folder, 2, case.end) == _report(playbook, folder, 1, case.end)
