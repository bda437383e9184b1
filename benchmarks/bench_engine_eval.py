"""One evaluation, native against durable: what the durable engine costs beyond the native one.

`make bench-engine-eval` (about 3 minutes) runs the CDNOW demo history with the retail
playbook through `sopkit.simulate` on the native engine, counting evaluations (every
`evaluate` call: an event's, a wake-up's, a settling round's) and how many of them the
durable engine would ask durable-rules (those whose comparisons' outcomes are not in its
memo), and keeping every 10th facts vector; then it times, interleaved over 5 rounds on
those vectors:

- the native engine's `evaluate` (one compiled Python function);
- the durable engine's `evaluate` as a run makes it (its memo warm: the outcomes of every
  comparison, looked up), apart the outcomes alone, and what an ask costs: the durable
  engine's evaluation with every vector asked, and its two halves, writing the fact's JSON
  (`payload`) and durable-rules' own calls (`assert_fact`, starting and completing the
  fired actions, `delete_state`);

and checks both engines fire the same rules on every vector. `evaluations × (remembered -
native) + asks × (payload + calls)` is CPU the durable engine adds to a run.
Results: engine-eval-results.json and .md, with the bound these put on durable CPU / native
CPU for the native CPU of the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import durable_rules_engine as dre

from sopkit import compile_playbook, load_playbook, simulate
from sopkit.engines import durable as _durable
from sopkit.engines import native as _native

ROOT = Path(__file__).resolve().parent.parent
PLAYBOOK = ROOT / "playbooks" / "retail.toml"
EVENTS = ROOT / "data" / "cdnow" / "events.jsonl.gz"
PROFILES = ROOT / "data" / "cdnow" / "profiles.jsonl.gz"
END = "1998-07-01T00:00:00"
KEEP_EVERY = 10


def capture() -> tuple[int, int, list[list[Any]], float]:
    """Simulate CDNOW on the native engine: (evaluations, how many of them the durable engine
    would ask durable-rules, every 10th facts vector, CPU s of the run alone)."""
    kept: list[list[Any]] = []
    count = [0, 0]  # evaluations, asks
    aside = [0.0]  # CPU s spent here on the durable engine's memo, taken off the run's
    main_predicates = compile_playbook(load_playbook(PLAYBOOK).model)["predicates"]
    plain_init = _native.NativeEngine.__init__

    def counting_init(self: _native.NativeEngine, ir: dict[str, Any]) -> None:
        plain_init(self, ir)
        inner = self.evaluate
        # the durable engine a durable run makes for this IR (a run makes one per
        # playbook part: the rules, a campaign's audience...), and its memo's keys
        durable = _durable.DurableEngine(ir)
        memos: list[set[tuple[bool, ...]]] = [set() for _ in durable._groups]

        def evaluate(facts: Any) -> frozenset[int]:
            start = time.process_time()
            count[0] += 1
            if count[0] % KEEP_EVERY == 0 and ir["predicates"] == main_predicates:
                kept.append(list(facts))
            for outcomes, memo in zip(durable._outcomes, memos, strict=True):
                key = outcomes(facts)
                if key not in memo:
                    count[1] += 1
                    if len(memo) >= _durable.MEMO:
                        memo.clear()
                    memo.add(key)
            aside[0] += time.process_time() - start
            return inner(facts)

        self.evaluate = evaluate

    _native.NativeEngine.__init__ = counting_init  # type: ignore[method-assign]  # counted
    try:
        before = resource.getrusage(resource.RUSAGE_SELF)
        with open(os.devnull, "w", encoding="utf-8") as out:
            simulate(load_playbook(PLAYBOOK), EVENTS, profiles=PROFILES, end=END, out=out,
                     engine="native", quarantine=Path(os.devnull))
        after = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        _native.NativeEngine.__init__ = plain_init  # type: ignore[method-assign]  # restored
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime) - aside[0]
    return count[0], count[1], kept, cpu


def durable_calls(engine: _durable.DurableEngine, payloads: list[list[tuple[int, str]]]
                  ) -> None:
    """durable-rules' own calls for each prepared payload, as `evaluate` makes them."""
    for group in payloads:
        for handle, payload in group:
            _, state = dre.assert_fact(handle, payload)
            result = dre.start_action_for_state(handle, state)
            while result:
                following = dre.complete_and_start_action(handle, state)
                result = (None, following) if following else None
            dre.delete_state(handle, _durable.SID)


def measure(rounds: int) -> dict[str, Any]:
    evaluations, asks, vectors, native_run_cpu = capture()
    ir: dict[str, Any] = dict(compile_playbook(load_playbook(PLAYBOOK).model))
    native = _native.NativeEngine(ir)
    durable = _durable.DurableEngine(ir)
    groups = list(zip(durable._groups, durable._handles, strict=True))  # its parts
    assert all(native.evaluate(v) == durable.evaluate(v) for v in vectors), \
        "the engines disagree"
    payloads = [[(h, durable.payload(g, v)) for g, h in groups] for v in vectors]

    def run_payload() -> None:
        for v in vectors:
            for g, _ in groups:
                durable.payload(g, v)

    durable.evaluate(vectors[0])
    parts: dict[str, Callable[[], object]] = {
        "native evaluate": lambda: [native.evaluate(v) for v in vectors],
        "durable evaluate, remembered": lambda: [durable.evaluate(v) for v in vectors],
        "durable outcomes (sopkit)": lambda: [[o(v) for o in durable._outcomes]
                                              for v in vectors],
        "durable evaluate, asked": lambda: [
            [durable.ask(h, durable.payload(g, v)) for g, h in groups] for v in vectors],
        "durable payload (sopkit)": run_payload,
        "durable-rules calls": lambda: durable_calls(durable, payloads),
    }
    times: dict[str, list[float]] = {name: [] for name in parts}
    for _ in range(rounds):
        for name, work in parts.items():
            start = time.process_time()
            work()
            times[name].append((time.process_time() - start) / len(vectors) * 1e6)
    us = {name: statistics.median(v) for name, v in times.items()}
    # every evaluation computes its comparisons' outcomes and looks them up; only those the
    # memo misses write the fact (payload) and ask durable-rules
    calls = asks * (us["durable payload (sopkit)"] + us["durable-rules calls"]) / 1e6
    extra = evaluations * (us["durable evaluate, remembered"] - us["native evaluate"]) / 1e6 \
        + calls
    return {
        "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
                   f"{platform.python_version()}",
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "evaluations": evaluations, "asks": asks, "vectors_timed": len(vectors),
        "rounds": rounds,
        "durable_groups": len(groups),
        "us_per_evaluation": {k: round(v, 2) for k, v in us.items()},
        "us_each_round": {k: [round(x, 2) for x in v] for k, v in times.items()},
        "native_run_cpu_s": round(native_run_cpu, 2),
        "durable_adds_cpu_s": round(extra, 2),
        "durable_asks_cpu_s": round(calls, 2),
        "durable_over_native_expected": round((native_run_cpu + extra) / native_run_cpu, 3),
    }


def markdown(r: dict[str, Any]) -> str:
    us = r["us_per_evaluation"]
    rows = "\n".join(f"| {name} | {value} | {', '.join(map(str, r['us_each_round'][name]))} |"
                     for name, value in us.items())
    return f"""# One evaluation: native against durable (issue 17)

{r['created']}, {r['machine']}, load average {r['load_average']} (`make bench-engine-eval`,
benchmarks/bench_engine_eval.py; raw data: engine-eval-results.json).

The CDNOW demo history with playbooks/retail.toml, simulated on the native engine to
{END}: **{r['evaluations']:,} evaluations** (events, wake-ups and settling rounds) in
{r['native_run_cpu_s']} s of CPU (this process, the count included). Every
{KEEP_EVERY}th facts vector ({r['vectors_timed']:,}) was kept and evaluated again by each
engine ({r['durable_groups']} durable ruleset(s); both engines fire the same rules on every
vector), {r['rounds']} interleaved rounds, CPU µs an evaluation (median, then each round):

| part | µs | each round |
|---|---:|---|
{rows}

- The durable engine computes the outcome of each comparison its rulesets make and asks
  durable-rules only for a combination of outcomes that is not among the last
  {_durable.MEMO:,} it answered (its memo): here **{r['asks']:,} asks**
  ({100 * r['asks'] / r['evaluations']:.3f}% of evaluations).
- So it adds {r['evaluations']:,} × ({us['durable evaluate, remembered']} −
  {us['native evaluate']}) µs + {r['asks']:,} × ({us['durable payload (sopkit)']} +
  {us['durable-rules calls']}) µs = **{r['durable_adds_cpu_s']} s** of CPU to this run
  (the asks: {r['durable_asks_cpu_s']} s): durable CPU / native CPU
  of about **{r['durable_over_native_expected']}** with the native CPU measured here (the
  issue's target: 1.5).
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--results", type=Path,
                        default=ROOT / "benchmarks" / "engine-eval-results.json")
    args = parser.parse_args()
    results = measure(args.rounds)
    args.results.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    args.results.with_suffix(".md").write_text(markdown(results), encoding="utf-8")
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
