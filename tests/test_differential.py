"""Differential tests: the durable and native engines do the same on whole playbooks.

Hypothesis generates playbooks (tests/differential_gen.py: metrics, scorecards, dynamic,
sticky and manual tags, stages with a catch-all, rules with chains, priorities, cooldowns,
max_times, delays with cancel_if, `on` rules with `event.<field>` filters) and histories
(a handful of customers, idle stretches, birthdays on 29 February). Each case runs through a
fresh `Runtime` per engine; the action streams, any ChainError and every customer's final
state must be identical.

Golden cases live in tests/cases/differential/<name>/: playbook.toml (a header line
`# advance-to: <ts>` says where time runs to after the events), events.jsonl, optionally
profiles.jsonl, and expected.jsonl, the agreed stream (written by the native engine; a last
line `{"error": ...}` if the run ends in an error). Each is replayed with both engines and
compared byte for byte. `KNOWN_BUGS` lists the cases that pin an engine disagreement.

Environment:
- SOPKIT_DIFF_EXAMPLES=N     generated cases per run (default 500; `make test-deep` 2000;
                             `make valgrind` uses few);
- SOPKIT_DIFF_KNOWN_BUGS=exponent,escape,bigint   generate the values that once made the
                             engines disagree (the default: all three; set it to "" to leave
                             them out; see tests/differential_gen.py);
- SOPKIT_DIFF_SAVE=DIR       write the last failing generated case to DIR (a golden-case
                             layout: move it under tests/cases/differential/ and regenerate);
- SOPKIT_REGEN=1             rewrite every golden expected.jsonl from the native engine (then
                             read `git diff tests/cases/differential` before committing).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import differential_gen as gen
import pytest
from hypothesis import HealthCheck, assume, event, given, note, settings

import sopkit

CASES = Path(__file__).parent / "cases" / "differential"
EXAMPLES = int(os.environ.get("SOPKIT_DIFF_EXAMPLES", "500"))
BUGS = frozenset(b for b in os.environ.get("SOPKIT_DIFF_KNOWN_BUGS",
                                           "exponent,escape,bigint").split(",") if b)
REGEN = os.environ.get("SOPKIT_REGEN") == "1"
ENGINES = ("native", "durable")

# golden cases that pin a bug: name -> (the engines whose replay fails, why)
KNOWN_BUGS: dict[str, tuple[tuple[str, ...], str]] = {}


def _playbook(case: gen.Case) -> sopkit.LoadedPlaybook:
    """The case's playbook, loaded from a file as users load theirs; a playbook the loader
    rejects (e.g. a static rule cycle: rare by design) is not a case."""
    note(repr(case))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "playbook.toml"
        path.write_text(case.toml(), encoding="utf-8")
        try:
            return sopkit.load_playbook(path)
        except sopkit.PlaybookError as exc:
            event("rejected by load_playbook")
            note(str(exc))
            assume(False)
            raise  # not reached: assume(False) ends the example


@settings(max_examples=EXAMPLES, deadline=None, derandomize=False,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(gen.cases(BUGS))
def test_engines_agree_on_generated_playbooks(case: gen.Case) -> None:
    """Both engines give the same actions, ChainError and final states on generated cases."""
    playbook = _playbook(case)
    native = gen.run(playbook, case.profiles, case.events, case.end, "native")
    durable = gen.run(playbook, case.profiles, case.events, case.end, "durable")
    event("ChainError" if native.lines and native.lines[-1].startswith('{"error"')
          else f"{min(len(native.lines), 10)}{'+' if len(native.lines) >= 10 else ''} actions")
    if (native.lines, native.states) != (durable.lines, durable.states) and \
            os.environ.get("SOPKIT_DIFF_SAVE"):
        gen.write_case(case, Path(os.environ["SOPKIT_DIFF_SAVE"]),
                       "a generated case on which the engines disagree")
    assert durable.lines == native.lines
    assert durable.states == native.states


@settings(max_examples=EXAMPLES, deadline=None, derandomize=False,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(gen.cases(gen.NO_BUGS))
def test_window_wakeups_at_crossings_lose_nothing(case: gen.Case) -> None:
    """Waking a customer only when a window's value crosses a constant gives the same actions
    and final states as waking it at every event that leaves a window."""
    playbook = _playbook(case)
    event("windows compared" if sopkit.compile_playbook(playbook.model)["windows"]
          else "no window compared")
    crossings = gen.run(playbook, case.profiles, case.events, case.end, "native")
    every = gen.run(playbook, case.profiles, case.events, case.end, "native",
                    every_departure=True)
    assert crossings.lines == every.lines
    assert crossings.states == every.states


@settings(max_examples=EXAMPLES, deadline=None, derandomize=False,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(gen.cases(gen.NO_BUGS))
def test_skipped_anniversary_jumps_lose_nothing(case: gen.Case) -> None:
    """Not waking on the day after an anniversary when no comparison flips gives the same
    actions and final states as waking on every such day."""
    playbook = _playbook(case)
    skipping = gen.run(playbook, case.profiles, case.events, case.end, "native")
    every = gen.run(playbook, case.profiles, case.events, case.end, "native", every_jump=True)
    assert skipping.lines == every.lines
    assert skipping.states == every.states


def _golden_params() -> list[object]:
    params = []
    for directory in sorted(p for p in CASES.iterdir() if p.is_dir()):
        for engine in ENGINES:
            marks = []
            engines, reason = KNOWN_BUGS.get(directory.name, ((), ""))
            if engine in engines:
                marks.append(pytest.mark.xfail(strict=True, reason=reason))
            params.append(pytest.param(directory.name, engine, marks=marks,
                                       id=f"{directory.name}-{engine}"))
    return params


@pytest.mark.parametrize(("name", "engine"), _golden_params())
def test_golden_case(name: str, engine: str) -> None:
    """A golden case replays to exactly its expected.jsonl with this engine."""
    directory = CASES / name
    path, profiles, events, end = gen.read_case(directory)
    playbook = sopkit.load_playbook(path)
    expected = directory / "expected.jsonl"
    if REGEN:
        try:
            agreed = gen.run(playbook, profiles, events, end, "native").text()
        except Exception:  # a case pinning a runtime bug keeps its hand-written expected.jsonl
            agreed = None
        if agreed is not None and (not expected.exists() or
                                   expected.read_text(encoding="utf-8") != agreed):
            expected.write_text(agreed, encoding="utf-8", newline="\n")
    got = gen.run(playbook, profiles, events, end, engine)
    assert got.text() == expected.read_text(encoding="utf-8")
    if engine == "durable":
        assert got.states == gen.run(playbook, profiles, events, end, "native").states
