"""`simulate --workers N`: customers split among processes, the output byte for byte the same.

Generated playbooks and histories (tests/differential_gen.py) with refusals mixed in (a
redelivered event_id, an event out of order, an unreadable line, a record without a
customer, sometimes --max-future) run with 1, 2, 3 and 5 workers; actions, summary and
quarantine must be identical. With local processes the parent reads and checks the history
and feeds the partitions (feed.py); these cases run that way.

Environment: SOPKIT_PARTITION_EXAMPLES=N generated cases per run (default 15).
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import differential_gen as gen
import pytest
from hypothesis import HealthCheck, assume, given, note, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import sopkit
from sopkit._cli.app import app

EXAMPLES = int(os.environ.get("SOPKIT_PARTITION_EXAMPLES", "15"))
ROOT = Path(__file__).parent.parent
MEMBERSHIP = ROOT / "examples/membership"


def _run(playbook: sopkit.LoadedPlaybook, folder: Path, workers: int,
         end: str | None, max_future: int | None = None) -> tuple[str, str, str]:
    """(actions JSONL, summary JSON, quarantine JSONL) of one simulation with `workers`."""
    out = folder / f"actions-{workers}.jsonl"
    jail = folder / f"quarantine-{workers}.jsonl"
    profiles = folder / "profiles.jsonl"
    with out.open("w", encoding="utf-8") as handle:
        try:
            summary = sopkit.simulate(playbook, folder / "events.jsonl",
                                      profiles=profiles if profiles.exists() else None,
                                      end=end, out=handle, quarantine=jail, workers=workers,
                                      max_future=max_future)
        except sopkit.ChainError:  # which customer's chain is reported first may differ
            return "ChainError", "", ""
    shown = summary.to_json() | {"quarantine_file": None}
    return (out.read_text(encoding="utf-8"), json.dumps(shown, ensure_ascii=False),
            jail.read_text(encoding="utf-8") if jail.exists() else "")


@st.composite
def _cases(draw: st.DrawFn) -> tuple[gen.Case, list[str]]:
    """A generated case and its event lines, with refusals a single run quarantines."""
    case = draw(gen.cases(frozenset()))
    lines = [json.dumps(e, ensure_ascii=False) for e in case.events]
    if case.events and draw(st.booleans()):  # a redelivery: the same event_id twice
        at = draw(st.integers(0, len(case.events) - 1))
        first = dict(case.events[at], event_id="redelivered")
        lines[at:at + 1] = [json.dumps(first, ensure_ascii=False)] * 2
    if len(case.events) > 2 and draw(st.booleans()):  # an event older than the clock
        late = dict(case.events[0], customer_id=draw(st.sampled_from(gen.CUSTOMERS)))
        lines.insert(draw(st.integers(2, len(lines))), json.dumps(late, ensure_ascii=False))
    if draw(st.booleans()):
        lines.insert(draw(st.integers(0, len(lines))), "{not json")
        lines.insert(draw(st.integers(0, len(lines))), '{"type": "purchase"}')
    return case, lines


def _write_case(case: gen.Case, lines: list[str], folder: Path) -> sopkit.LoadedPlaybook:
    """Write a drawn case into `folder` (playbook.toml, events.jsonl, profiles.jsonl) and load
    its playbook; a playbook the loader rejects (rare by design) is not a case."""
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
    return playbook


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(_cases(), st.sampled_from([None, None, 3600, 3 * 86400]))
def test_any_number_of_workers_gives_the_single_run_byte_for_byte(
        drawn: tuple[gen.Case, list[str]], max_future: int | None) -> None:
    """1, 2, 3 and 5 workers write the same actions, summary and quarantine (with
    --max-future too)."""
    case, lines = drawn
    note(repr(case))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        playbook = _write_case(case, lines, folder)
        single = _run(playbook, folder, 1, case.end, max_future)
        for workers in (2, 3, 5):
            assert _run(playbook, folder, workers, case.end, max_future) == single, workers


def _membership_without_capacity(tmp: Path) -> Path:
    """The membership playbook without task_capacity (its staff put customers together)."""
    text = (ROOT / "playbooks/membership.toml").read_text(encoding="utf-8")
    path = tmp / "membership.toml"
    path.write_text("\n".join(line for line in text.splitlines()
                              if not line.startswith("task_capacity")) + "\n", encoding="utf-8")
    return path


def test_the_command_line_writes_the_same_files_with_two_workers(tmp_path: Path) -> None:
    """`sopkit simulate --workers 2` writes the --out and quarantine files of one worker."""
    playbook = _membership_without_capacity(tmp_path)
    written: dict[int, tuple[str, str, str]] = {}
    for workers in (1, 2):
        out = tmp_path / f"actions-{workers}.jsonl"
        result = CliRunner().invoke(app, [
            "simulate", str(playbook), "--events", str(MEMBERSHIP / "events.jsonl"),
            "--profiles", str(MEMBERSHIP / "profiles.csv"), "--end", "2025-04-30",
            "--out", str(out), "--workers", str(workers), "--output", "jsonl"])
        assert result.exit_code == 0, result.output
        quarantine = out.with_name(out.stem + ".quarantine.jsonl")
        written[workers] = (out.read_text(encoding="utf-8"),
                            quarantine.read_text(encoding="utf-8"),
                            result.output.replace(str(quarantine), "Q"))
    assert written[2] == written[1]
    assert written[1][0].count("\n") > 10 and written[1][1]  # actions and a quarantined line


def test_a_truncated_history_is_an_error_after_the_quarantine_is_written(
        tmp_path: Path) -> None:
    """A .gz cut short ends a two-worker run as it ends one: exit 1, quarantine written."""
    playbook = _membership_without_capacity(tmp_path)
    data = gzip.compress((MEMBERSHIP / "events.jsonl").read_bytes())
    events = tmp_path / "events.jsonl.gz"
    events.write_bytes(data[: len(data) * 2 // 3])
    outcome: dict[int, Any] = {}
    for workers in (1, 2):
        jail = tmp_path / f"q{workers}.jsonl"
        result = CliRunner().invoke(app, [
            "simulate", str(playbook), "--events", str(events), "--quarantine", str(jail),
            "--workers", str(workers)])
        outcome[workers] = (result.exit_code,
                            jail.read_text(encoding="utf-8") if jail.exists() else "",
                            result.output.splitlines()[-1])
    assert outcome[2] == outcome[1]
    assert outcome[1][0] == 1 and "truncated" in outcome[1][2].lower()


@pytest.mark.parametrize("workers", ["0", "-1"])
def test_workers_below_one_is_a_usage_error(workers: str) -> None:
    """--workers takes 1 or more."""
    result = CliRunner().invoke(app, ["simulate", str(ROOT / "playbooks/membership.toml"),
                                      "--events", str(MEMBERSHIP / "events.jsonl"),
                                      "--workers", workers])
    assert result.exit_code == 2


_KEYS = st.tuples(st.integers(0, 10**6), st.integers(-2_208_988_800, 32_503_680_000),
                  st.integers(0, 40), st.text(max_size=6))


@settings(max_examples=200, deadline=None)
@given(st.lists(_KEYS, max_size=40), st.integers(2, 4))
def test_the_merge_orders_lines_as_their_keys_whatever_the_customer_id(
        keys: list[tuple[int, int, int, str]], count: int) -> None:
    """Merged partition files come out by (step, time, phase, customer id), ties in order,
    for any customer id (prefixes, CJK, lone surrogates) and times before 1970."""
    from types import SimpleNamespace

    from sopkit._offline.partition import keyed_line, merge_actions, partition_of

    ordered = sorted(enumerate(keys), key=lambda item: (item[1], item[0]))
    parts: dict[int, list[str]] = {i: [] for i in range(count)}
    for n, (step, ts, phase, customer) in ordered:
        part = parts[partition_of(repr(customer), count)]
        action = SimpleNamespace(ts=ts, customer_id=customer)
        part.append(keyed_line(step, action, f"{n}\n", phase, len(part)))  # type: ignore[arg-type]  # only ts and customer_id are read
    with tempfile.TemporaryDirectory() as tmp:
        paths = [Path(tmp) / f"{i}.tsv" for i in range(count)]
        for path, lines in zip(paths, parts.values(), strict=True):
            path.write_text("".join(lines), encoding="utf-8")
        merged = Path(tmp) / "merged.txt"
        with merged.open("w", encoding="utf-8") as out:
            merge_actions(paths, out)
        assert merged.read_text(encoding="utf-8") == "".join(f"{n}\n" for n, _ in ordered)


def test_a_refit_action_lends_its_phase_to_no_later_action() -> None:
    """An action marked as a refit's, then dropped, leaves later actions in the wake-up phase
    (its address, reused by CPython, must not carry its phase: that reorders the merge)."""
    from sopkit._offline.partition import PHASE_RFM, PHASE_WAKE, PartitionRuntime, _marked
    from sopkit._playbook.load import load
    from sopkit._runtime.records import Action

    runtime = PartitionRuntime(load(ROOT / "playbooks/membership.toml"), engine="native",
                               index=0, count=2)
    for n in range(100):
        _marked([Action(time="t", customer_id=f"c{n}", rule="r", action="send")], PHASE_RFM,
                runtime.phases)
        later = Action(time="t", customer_id=f"d{n}", rule="w", action="send")
        assert runtime.phase(later) == PHASE_WAKE
    kept = _marked([Action(time="t", customer_id="e", rule="r", action="send")], PHASE_RFM,
                   runtime.phases)
    assert runtime.phase(kept[0]) == PHASE_RFM
