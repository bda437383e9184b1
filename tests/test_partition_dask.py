"""`simulate --workers N --executor dask`: partitions on a Dask cluster, the same output.

The tests start a real `LocalCluster` of two workers on 127.0.0.1 (threads of this process,
talking TCP, so it starts in about a second) and run on it through `--scheduler`; one test
lets sopkit start its own cluster of worker processes. Without the dask[distributed] packages
they are skipped, visibly; SOPKIT_REQUIRE_DASK=1 or CI=1 makes that a failure (the `dev`
extra installs them; .ci/run sets it).

Environment: SOPKIT_PARTITION_EXAMPLES=N generated cases per run (default 15; here a third).
"""

from __future__ import annotations

import ast
import gzip
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import differential_gen as gen
import pytest
from hypothesis import HealthCheck, given, note, settings
from test_partition import _cases, _membership_without_capacity, _write_case
from test_review import _history
from typer.testing import CliRunner

import sopkit
from sopkit._cli.app import app

EXAMPLES = max(1, int(os.environ.get("SOPKIT_PARTITION_EXAMPLES", "15")) // 3)
ROOT = Path(__file__).parent.parent
MEMBERSHIP = ROOT / "examples/membership"


@pytest.fixture(scope="module")
def dask_installed() -> None:
    """Skip (visibly) without the dask[distributed] packages, unless they are required."""
    try:
        import distributed  # noqa: F401  # only whether it imports
    except ImportError as exc:
        if os.environ.get("SOPKIT_REQUIRE_DASK") == "1" or os.environ.get("CI"):
            pytest.fail(f"SOPKIT_REQUIRE_DASK=1 or CI but dask cannot be imported: {exc}")
        pytest.skip(f"Dask tests skipped: {exc} (pip install 'sopkit[dask]')")


@pytest.fixture(scope="module")
def scheduler(dask_installed: None) -> Iterator[str]:
    """The TCP address of a two-worker LocalCluster for the module; skipped without dask."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, protocol="tcp",
                      host="127.0.0.1", dashboard_address=None,
                      scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}) as cluster:
        yield str(cluster.scheduler_address)


def _run(playbook: sopkit.LoadedPlaybook, folder: Path, end: str | None,
         scheduler: str | None = None) -> tuple[str, str, str]:
    """(actions JSONL, summary JSON, quarantine JSONL) of one run: one worker, or two on the
    Dask cluster at `scheduler`."""
    workers, executor = (1, "processes") if scheduler is None else (2, "dask")
    out, jail = folder / f"actions-{workers}.jsonl", folder / f"quarantine-{workers}.jsonl"
    profiles = folder / "profiles.jsonl"
    with out.open("w", encoding="utf-8") as handle:
        try:
            summary = sopkit.simulate(playbook, folder / "events.jsonl",
                                      profiles=profiles if profiles.exists() else None,
                                      end=end, out=handle, quarantine=jail,
                                      workers=workers, executor=executor,
                                      scheduler=scheduler)
        except sopkit.ChainError:  # which customer's chain is reported first may differ
            return "ChainError", "", ""
    shown = summary.to_json() | {"quarantine_file": None}
    return (out.read_text(encoding="utf-8"), json.dumps(shown, ensure_ascii=False),
            jail.read_text(encoding="utf-8") if jail.exists() else "")


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(drawn=_cases())
def test_two_dask_workers_give_the_single_run_byte_for_byte(
        scheduler: str, drawn: tuple[gen.Case, list[str]]) -> None:
    """Generated cases on a two-worker cluster write one worker's actions, summary, quarantine."""
    case, lines = drawn
    note(repr(case))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        playbook = _write_case(case, lines, folder)
        single = _run(playbook, folder, case.end)
        on_dask = _run(playbook, folder, case.end, scheduler)
        assert on_dask == single


def _cli(playbook: Path, out: Path, *options: str) -> tuple[int, str, str, str]:
    """(exit code, actions, quarantine, summary line) of `sopkit simulate` on membership."""
    result = CliRunner().invoke(app, [
        "simulate", str(playbook), "--events", str(MEMBERSHIP / "events.jsonl"),
        "--profiles", str(MEMBERSHIP / "profiles.csv"), "--end", "2025-04-30",
        "--out", str(out), "--output", "jsonl", *options])
    quarantine = out.with_name(out.stem + ".quarantine.jsonl")
    return (result.exit_code, out.read_text(encoding="utf-8") if out.exists() else "",
            quarantine.read_text(encoding="utf-8") if quarantine.exists() else "",
            result.output.replace(str(quarantine), "Q"))


def test_the_command_line_runs_on_an_existing_scheduler(scheduler: str,
                                                        tmp_path: Path) -> None:
    """`--executor dask --scheduler ADDRESS --workers 3` writes one worker's files and summary."""
    playbook = _membership_without_capacity(tmp_path)
    single = _cli(playbook, tmp_path / "one.jsonl")
    on_dask = _cli(playbook, tmp_path / "dask.jsonl", "--workers", "3", "--executor", "dask",
                   "--scheduler", scheduler)
    assert on_dask == single
    assert single[0] == 0 and single[1].count("\n") > 10 and single[2]  # actions, quarantine


def test_without_a_scheduler_sopkit_starts_a_local_cluster(dask_installed: None,
                                                          tmp_path: Path) -> None:
    """`--executor dask --workers 2` alone runs on worker processes it starts: the same files."""
    playbook = _membership_without_capacity(tmp_path)
    single = _cli(playbook, tmp_path / "one.jsonl")
    assert _cli(playbook, tmp_path / "local.jsonl", "--workers", "2",
                "--executor", "dask") == single


def test_a_truncated_history_on_dask_is_an_error_after_the_quarantine_is_written(
        scheduler: str, tmp_path: Path) -> None:
    """A .gz cut short ends a Dask run as it ends one worker's: exit 1, the same quarantine."""
    playbook = _membership_without_capacity(tmp_path)
    data = gzip.compress((MEMBERSHIP / "events.jsonl").read_bytes())
    events = tmp_path / "events.jsonl.gz"
    events.write_bytes(data[: len(data) * 2 // 3])
    outcome = []
    for options in ([], ["--workers", "2", "--executor", "dask", "--scheduler", scheduler]):
        jail = tmp_path / f"q{len(options)}.jsonl"
        result = CliRunner().invoke(app, [
            "simulate", str(playbook), "--events", str(events), "--quarantine", str(jail),
            *options])
        outcome.append((result.exit_code,
                        jail.read_text(encoding="utf-8") if jail.exists() else "",
                        result.output.replace(str(jail), "Q")))
    assert outcome[1] == outcome[0]
    assert outcome[0][0] == 1 and "truncated" in outcome[0][2].lower()


def test_an_error_in_a_partition_is_reported_as_one_worker_reports_it(
        scheduler: str, tmp_path: Path) -> None:
    """Rules that never settle end a Dask run with one worker's exit 1 and message."""
    case = ROOT / "tests/cases/differential/picked_chain_stage_score_loop"
    outcome = []
    for options in ([], ["--workers", "2", "--executor", "dask", "--scheduler", scheduler]):
        result = CliRunner().invoke(app, [
            "simulate", str(case / "playbook.toml"), "--events", str(case / "events.jsonl"),
            "--quarantine", str(tmp_path / "q.jsonl"), *options])
        outcome.append((result.exit_code, result.output))
    assert outcome[1] == outcome[0]
    assert outcome[0][0] == 1 and "did not settle" in outcome[0][1]


def test_an_input_a_worker_cannot_read_is_a_usage_error_naming_it(
        scheduler: str, tmp_path: Path) -> None:
    """A history the workers cannot read ends the run with exit 2 saying where to put it."""
    playbook = sopkit.load_playbook(_membership_without_capacity(tmp_path))
    missing = tmp_path / "elsewhere" / "events.jsonl"
    with pytest.raises(sopkit.UsageError, match="a Dask worker cannot read") as raised:
        sopkit.simulate(playbook, missing, workers=2, executor="dask", scheduler=scheduler)
    assert str(missing) in str(raised.value) and raised.value.exit_code == 2


@pytest.mark.parametrize(("options", "message"), [
    (["--workers", "2", "--scheduler", "tcp://127.0.0.1:8786"],
     "a scheduler is for --executor dask"),
    (["--executor", "dask", "--scheduler", "tcp://127.0.0.1:8786"],
     "--scheduler tcp://127.0.0.1:8786: Dask runs partitions"),
    (["--executor", "dask"], "give --workers 2 or more"),
])
def test_a_scheduler_or_executor_that_cannot_apply_is_a_usage_error(
        options: list[str], message: str, tmp_path: Path) -> None:
    """--scheduler without --executor dask, or Dask with one worker: exit 2 saying why."""
    code, actions, _, output = _cli(_membership_without_capacity(tmp_path),
                                    tmp_path / "a.jsonl", *options)
    assert code == 2 and actions == ""
    assert message in " ".join(output.split())


def test_a_scheduler_address_that_is_not_one_is_a_usage_error(dask_installed: None,
                                                              tmp_path: Path) -> None:
    """`--scheduler no-port` exits 2: the scheduler cannot be reached, and why."""
    code, _, _, output = _cli(_membership_without_capacity(tmp_path), tmp_path / "a.jsonl",
                              "--workers", "2", "--executor", "dask", "--scheduler", "no-port")
    assert code == 2
    assert "--scheduler no-port: cannot reach the Dask scheduler" in " ".join(output.split())


def test_without_dask_installed_the_executor_says_how_to_install_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With distributed not importable, `--executor dask` exits 2 naming sopkit[dask]."""
    monkeypatch.setitem(sys.modules, "distributed", None)  # `import distributed` fails
    playbook = _membership_without_capacity(tmp_path)
    code, actions, _, output = _cli(playbook, tmp_path / "a.jsonl", "--workers", "2",
                                    "--executor", "dask")
    assert code == 2 and actions == ""
    assert "install sopkit[dask]" in output


def test_importing_sopkit_does_not_load_dask() -> None:
    """`import sopkit` and a one-worker run stay free of dask (it is loaded only when used)."""
    code = ("import sys, sopkit\n"
            "from sopkit._cli.app import app\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, env=os.environ | {"PYTHONPATH": str(ROOT)})
    assert done.stdout.strip() == "[]"


def test_only_the_executor_module_imports_dask() -> None:
    """One module of sopkit imports dask or distributed: sopkit/_offline/dask_executor.py."""
    importers = set()
    for path in (ROOT / "sopkit").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n.split(".")[0] in ("dask", "distributed") for n in names):
                importers.add(path.relative_to(ROOT).as_posix())
    assert importers == {"sopkit/_offline/dask_executor.py"}


def test_the_report_on_dask_is_the_report_of_one_worker(scheduler: str,
                                                        tmp_path: Path) -> None:
    """`--report` with `--executor dask` writes the HTML page of one worker, byte for byte."""
    playbook = _membership_without_capacity(tmp_path)
    pages = []
    for options in ([], ["--workers", "2", "--executor", "dask", "--scheduler", scheduler]):
        report = tmp_path / "report.html"
        code = _cli(playbook, tmp_path / "actions.jsonl", "--report", str(report), *options)[0]
        assert code == 0
        pages.append(report.read_bytes())
    assert pages[1] == pages[0]
    assert b'id="stages"' in pages[0]


def test_diff_on_dask_prints_what_one_worker_prints(scheduler: str, tmp_path: Path) -> None:
    """`sopkit diff --executor dask` finds the differences one worker finds, in both outputs."""
    old = _membership_without_capacity(tmp_path)
    text = old.read_text(encoding="utf-8")
    new = tmp_path / "new.toml"
    new.write_text(text.replace('when = "days_to_expiry == 15"',
                                'when = "days_to_expiry == 10"'), encoding="utf-8")
    history = ["--events", str(MEMBERSHIP / "events.jsonl"),
               "--profiles", str(MEMBERSHIP / "profiles.csv"), "--end", "2025-04-30"]
    for output in ("table", "jsonl"):
        printed = []
        for options in ([], ["--workers", "2", "--executor", "dask", "--scheduler", scheduler]):
            result = CliRunner().invoke(app, ["diff", str(old), str(new), *history,
                                              "--output", output, *options])
            assert result.exit_code == 1, result.output  # there are differences
            printed.append(result.output)
        assert printed[1] == printed[0], output
        assert "moved" in printed[0]
    unreachable = CliRunner().invoke(app, ["diff", str(old), str(new), *history, "--workers",
                                           "2", "--executor", "dask", "--scheduler", "no-port"])
    assert unreachable.exit_code == 2  # the runs went to the scheduler named
    assert "cannot reach the Dask scheduler" in " ".join(unreachable.output.split())


def test_review_on_dask_gives_the_review_of_one_worker(scheduler: str, tmp_path: Path) -> None:
    """`sopkit review --executor dask` counts the arms and conversions one worker counts."""
    playbook, events = _history(tmp_path, 400, {"holdout": 0.1, "small": 0.2, "big": 0.3})
    printed = []
    for options in ([], ["--workers", "3", "--executor", "dask", "--scheduler", scheduler]):
        result = CliRunner().invoke(app, ["review", str(playbook), "--events", str(events),
                                          "--experiment", "coupon", "--output", "jsonl",
                                          *options])
        assert result.exit_code == 0, result.output
        printed.append(result.output)
    assert printed[1] == printed[0]
    assert '"holdout"' in printed[0] and '"big"' in printed[0]
