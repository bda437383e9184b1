"""`sopkit simulate --workers N` against one worker, side by side (issue 15).

    python benchmarks/bench_partition.py [--customers 100000] [--workers 1,2] [--rounds 1]
                                         [--executor dask]

On the generated 100k-customer retail history (benchmarks/generate.py, cached under
benchmarks/data/) with benchmarks/partition.toml (the retail playbook without campaigns and
task_capacity, which need one process), each round runs every worker count in turn, so a
noisy machine slows them alike; the best wall time per count is kept. Every run's --out file
must be byte-identical to one worker's. With `--executor dask` (needs sopkit[dask]) every
count above 1 also runs as `--executor dask`, on the LocalCluster of that many worker
processes that sopkit starts (its start-up included), side by side. It also times the
feeder (the history read and checked once by the parent, local processes only) and the part
every worker repeats (the profiles, its clock through the others' events) to project 8 and
32 workers by Amdahl's law.

Results: benchmarks/partition-results.json and .md (`make bench-partition`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import generate  # noqa: E402  # benchmarks/generate.py, after the path is set

PLAYBOOK = HERE / "partition.toml"
SEED = 20240101


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _simulate(events: Path, profiles: Path, end: str, workers: int, out: Path,
              executor: str = "processes") -> tuple[float, float]:
    """(wall seconds, CPU seconds of the run and every process it started): the CPU time
    does not depend on what else the machine runs; the wall time does."""
    cmd = [sys.executable, "-m", "sopkit", "simulate", str(PLAYBOOK), "--events", str(events),
           "--profiles", str(profiles), "--end", end, "--out", str(out), "--workers",
           str(workers), "--output", "jsonl", "--no-progress", "--engine", "native",
           "--quarantine", str(out.with_suffix(".quarantine.jsonl")), "--executor", executor]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _owning_none(events: Path, profiles: Path, end: str) -> tuple[float, float]:
    """(what every worker repeats, what is done once) in seconds. With local processes the
    parent reads and checks the history once and feeds each partition its own customers'
    events and only the time of the others' (sopkit/_offline/feed.py). The feeder alone
    (every record read, parsed and checked, the streams built, one worker's pickled as it
    crosses to the worker; each further worker adds its pickling) is done once, beside the
    workers. Every worker still reads the profiles and
    takes its steps through the others' events: timed as a partition that owns no customer
    (index 0 of 2**33 partitions for the profiles; every event another's) fed from memory,
    each batch unpickled as it arrives."""
    code = ("import pickle, sys, time; from pathlib import Path\n"
            "from sopkit._io import Quarantine\n"
            "from sopkit._ir.compile import compile_playbook\n"
            "from sopkit._offline.partition import PartitionRuntime\n"
            "from sopkit._offline.simulate import _feeder, _run\n"
            "from sopkit._playbook.load import load\n"
            "playbook = load(sys.argv[1]); ir = compile_playbook(playbook.model)\n"
            "events, profiles, end = Path(sys.argv[3]), Path(sys.argv[2]), sys.argv[4]\n"
            "feeder = _feeder(playbook, ir, events, 2, profiles, end, None, Quarantine(None),\n"
            "                 False)\n"
            "feeder.owner = lambda customer_id: 1  # partition 0 owns nothing\n"
            "batches = []\n"
            "began = time.perf_counter()\n"
            "feeder.run(lambda parts: batches.append(pickle.dumps(parts[0])))\n"
            "once = time.perf_counter() - began\n"
            "runtime = PartitionRuntime(playbook, engine='native', index=0, count=1 << 33)\n"
            "began = time.perf_counter()\n"
            "summary = _run(runtime, playbook, events, profiles=profiles, start=None, end=end,\n"
            "               out=None, quarantine=None, masked=True, partition=runtime,\n"
            "               feed=(pickle.loads(b) for b in batches))\n"
            "each = time.perf_counter() - began\n"
            "assert summary.actions == 0, summary.actions\n"
            "print(each, once)\n")
    done = subprocess.run([sys.executable, "-c", code, str(PLAYBOOK), str(profiles),
                           str(events), end], check=True, cwd=ROOT, capture_output=True,
                          text=True)
    each, once = done.stdout.split()
    return float(each), float(once)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--workers", default="1,2", help="worker counts, e.g. 1,2")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--executor", choices=["processes", "dask"], default="processes",
                        help="dask: also run each count above 1 on a Dask LocalCluster")
    parser.add_argument("--data", type=Path, default=HERE / "data")
    parser.add_argument("--results", type=Path, default=HERE / "partition-results.json")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.workers.split(",")]
    data, meta = generate.ensure(args.customers, 1, SEED, args.data, print)
    events, profiles, end = data / "events.jsonl", data / "profiles.jsonl", meta["end_1y"]
    scratch = HERE / "tmp"
    scratch.mkdir(exist_ok=True)
    runs = [(str(n), n, "processes") for n in counts]  # (label, workers, executor)
    if args.executor == "dask":
        runs += [(f"{n} dask", n, "dask") for n in counts if n > 1]
        runs.sort(key=lambda run: run[1])  # side by side: 1, 2, 2 dask, 3, 3 dask
    times: dict[str, list[float]] = {label: [] for label, _, _ in runs}
    cpu: dict[str, list[float]] = {label: [] for label, _, _ in runs}
    digests: dict[str, str] = {}
    for _ in range(args.rounds):
        for label, n, executor in runs:
            out = scratch / f"partition-{label.replace(' ', '-')}.jsonl"
            wall, used = _simulate(events, profiles, end, n, out, executor)
            times[label].append(wall)
            cpu[label].append(used)
            digests[label] = _sha256(out)
            print(f"workers {label}: {wall:.1f} s, CPU {used:.1f} s", flush=True)
    identical = len(set(digests.values())) == 1
    serial, feeding = _owning_none(events, profiles, end)
    best = {label: min(t) for label, t in times.items()}
    one = best.get("1")
    fraction = serial / one if one else None
    # Amdahl's law over what every worker repeats, capped by the feeder: the parent reads
    # and checks every record while the workers run, so N workers finish no sooner than it
    projection = {str(n): round(min(1 / (fraction + (1 - fraction) / n), one / feeding), 2)
                  for n in (8, 32)} if fraction is not None and one else {}
    result: dict[str, Any] = {
        "created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": " ".join([Path(sys.argv[0]).as_posix(), *(argv or sys.argv[1:])]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "customers": meta["customers"], "events": meta["events"], "end": end,
        "playbook": str(PLAYBOOK.relative_to(ROOT)), "engine": "native",
        "executor": args.executor,
        "seconds": {n: [round(t, 2) for t in ts] for n, ts in times.items()},
        "cpu_seconds": {n: [round(t, 2) for t in ts] for n, ts in cpu.items()},
        "best_seconds": {n: round(t, 2) for n, t in best.items()},
        "speedup": {n: round(one / t, 2) for n, t in best.items()} if one else {},
        "outputs_identical": identical, "output_sha256": digests,
        "repeated_per_worker_seconds": round(serial, 2),
        "repeated_fraction": round(fraction, 4) if fraction is not None else None,
        "feeder_seconds": round(feeding, 2),
        "feeder_fraction": round(feeding / one, 4) if one else None,
        "projected_speedup": projection,
    }
    args.results.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    args.results.with_suffix(".md").write_text(_markdown(result), encoding="utf-8")
    print(json.dumps(result["speedup"]), "identical" if identical else "OUTPUTS DIFFER")
    return 0 if identical else 1


def _markdown(r: dict[str, Any]) -> str:
    rows = "\n".join(f"| {n} | {r['best_seconds'][n]} | {r['speedup'].get(n, '')}× | "
                     f"{min(r['cpu_seconds'][n])} |"
                     for n in r["best_seconds"])
    projection = ", ".join(f"{n} workers {s}×" for n, s in r["projected_speedup"].items())
    bound = round(1 / r["feeder_fraction"], 1) if r["feeder_fraction"] else "?"
    return f"""# `simulate --workers N`

Created {r['created']} by `{r['command']}` on {r['machine']['cpus']} CPUs, Python
{r['machine']['python']}: {r['customers']:,} customers, {r['events']:,} events, simulated to
{r['end']} with {r['playbook']} (engine {r['engine']}); each worker count run in turn per
round, best wall time kept (seconds per round in the JSON). "N dask": `--executor dask` on
the LocalCluster of N worker processes sopkit starts for the run, its start-up included.

| workers | wall s | speedup | CPU s (all its processes, least) |
|---:|---:|---:|---:|
{rows}

Outputs byte-identical across worker counts: **{r['outputs_identical']}**.

With more than one worker the parent process reads and checks the history once and feeds
each worker its own customers' events and only the time of the others'
(sopkit/_offline/feed.py): that feeder alone takes {r['feeder_seconds']} s (a fraction
{r['feeder_fraction']} of one worker's run) beside the workers, so it bounds the speedup at
about {bound}×. What every worker still repeats (reading the profiles, its clock and steps
through the other workers' events) is timed as a partition that owns no customer, fed from
memory: {r['repeated_per_worker_seconds']} s, a fraction {r['repeated_fraction']} of one
worker's run. By Amdahl's law over that part, capped by the feeder's bound: projected
{projection}, before the cost of merging, of the feeder's own core, of sending every event's
time to every worker (it grows with the number of workers) and of machines with fewer cores
than workers. A projection, not a measurement.
"""


if __name__ == "__main__":
    raise SystemExit(main())
