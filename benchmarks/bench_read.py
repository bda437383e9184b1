"""Reading a history, before and after issue 17's fast JSON codec and cached zone offsets.

    python benchmarks/bench_read.py [--customers 10000] [--big 100000] [--rounds 3]
                                    [--before REV] [--data DIR] [--big-data DIR]

"Before" is sopkit as of `--before` (default: the commit before sopkit/_json.py was added),
unpacked with `git archive` under benchmarks/tmp/ and put first on PYTHONPATH; "after" is
this checkout. Every measurement runs before and after in turn, round after round, so a
noisy machine slows both alike; the best of the rounds is kept.

- read + check: every record of a history read (`sopkit._io.read_records`) and checked
  (`Runtime.parse_event`: the type, the fields, the `ts`), the work each partition of
  `simulate --workers N` repeats; on the generated history (benchmarks/generate.py:
  `--customers`, and `--big` more, 0 for none) and the CDNOW demo history, in microseconds
  per record;
- simulate: `python -m sopkit simulate playbooks/retail.toml ... --engine native` on the
  generated `--customers` history, in CPU seconds (user + system of the child), and the
  sha256 of its --out and --quarantine files, which must be equal before and after.

Results: benchmarks/read-results.json and .md (`make bench-read`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import io
import json
import os
import platform
import resource
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import generate  # noqa: E402  # benchmarks/generate.py, after the path is set

PLAYBOOK = ROOT / "playbooks" / "retail.toml"
SEED = 20240101
CDNOW = ROOT / "data" / "cdnow"
READ = """\
import sys, time
from pathlib import Path
import sopkit
from sopkit._io import BadRecord, read_records
assert Path(sopkit.__file__).resolve().is_relative_to(Path(sys.argv[4]).resolve())
rt = sopkit.Runtime(sopkit.load_playbook(sys.argv[1]), engine="native")
began, n = time.perf_counter(), 0
for path, check in ((sys.argv[3], rt.parse_event), (sys.argv[2], None)):
    for item in read_records(Path(path)):
        n += 1
        if check is not None and not isinstance(item, BadRecord):
            check(item.data)
print(time.perf_counter() - began, n)
"""


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True,
                          text=True).stdout.strip()


def _before_tree(rev: str | None) -> tuple[str, Path]:
    """The sopkit package as of `rev`, unpacked under benchmarks/tmp/ (cached)."""
    if rev is None:
        added = _git("log", "--diff-filter=A", "--format=%H", "--", "sopkit/_json.py")
        rev = added.splitlines()[-1] + "^"
    sha = _git("rev-parse", rev)
    where = HERE / "tmp" / f"before-{sha[:12]}"
    if not (where / "sopkit" / "__init__.py").exists():
        archive = subprocess.run(["git", "archive", "--format=tar", sha, "sopkit"], cwd=ROOT,
                                 check=True, capture_output=True).stdout
        where.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(where, filter="data")
    return sha, where


def _env(tree: Path) -> dict[str, str]:  # run in `tree` too: python puts its cwd first
    return {**os.environ, "PYTHONPATH": str(tree)}


def _read(tree: Path, events: Path, profiles: Path) -> tuple[float, int]:
    done = subprocess.run([sys.executable, "-c", READ, str(PLAYBOOK), str(profiles),
                           str(events), str(tree / "sopkit")], check=True, cwd=tree,
                          capture_output=True, text=True, env=_env(tree))
    seconds, count = done.stdout.split()
    return float(seconds), int(count)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "(none)"


def _simulate(tree: Path, events: Path, profiles: Path, end: str,
              out: Path) -> tuple[float, float, str, str]:
    """CPU seconds, wall seconds, sha256 of --out and of --quarantine."""
    quarantine = out.with_suffix(".quarantine.jsonl")
    cmd = [sys.executable, "-m", "sopkit", "simulate", str(PLAYBOOK), "--events", str(events),
           "--profiles", str(profiles), "--end", end, "--out", str(out), "--output", "jsonl",
           "--no-progress", "--engine", "native", "--quarantine", str(quarantine)]
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=tree, stdout=subprocess.DEVNULL, env=_env(tree))
    wall = time.perf_counter() - began
    now = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = now.ru_utime - used.ru_utime + now.ru_stime - used.ru_stime
    return cpu, wall, _sha256(out), _sha256(quarantine)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--big", type=int, default=100_000,
                        help="customers of a second, read-only history (0: none)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", default=None, help="the git revision to compare with")
    parser.add_argument("--data", type=Path, default=HERE / "data")
    parser.add_argument("--big-data", type=Path, default=None,
                        help="where the --big history is (or goes); default --data")
    parser.add_argument("--results", type=Path, default=HERE / "read-results.json")
    args = parser.parse_args(argv)
    sha, old = _before_tree(args.before)
    trees = {"before": old, "after": ROOT}
    small, meta = generate.ensure(args.customers, 1, SEED, args.data, print)
    histories = {f"generated {args.customers:,}": (small / "events.jsonl",
                                                   small / "profiles.jsonl")}
    if args.big:
        big, _ = generate.ensure(args.big, 1, SEED, args.big_data or args.data, print)
        histories[f"generated {args.big:,}"] = (big / "events.jsonl", big / "profiles.jsonl")
    histories["CDNOW"] = (CDNOW / "events.jsonl.gz", CDNOW / "profiles.jsonl.gz")
    scratch = HERE / "tmp"
    scratch.mkdir(exist_ok=True)
    reads: dict[str, dict[str, list[float]]] = {h: {t: [] for t in trees} for h in histories}
    records: dict[str, int] = {}
    cpu: dict[str, list[float]] = {t: [] for t in trees}
    wall: dict[str, list[float]] = {t: [] for t in trees}
    digests: dict[str, set[tuple[str, str]]] = {t: set() for t in trees}
    for round_ in range(1, args.rounds + 1):
        for name, (events, profiles) in histories.items():
            for label, tree in trees.items():
                seconds, records[name] = _read(tree, events, profiles)
                reads[name][label].append(seconds)
                print(f"round {round_} read {name} {label}: {seconds:.2f} s", flush=True)
        for label, tree in trees.items():
            out = scratch / f"read-simulate-{label}.jsonl"
            used, took, out_sha, quarantine_sha = _simulate(
                tree, small / "events.jsonl", small / "profiles.jsonl", meta["end_1y"], out)
            cpu[label].append(used)
            wall[label].append(took)
            digests[label].add((out_sha, quarantine_sha))
            print(f"round {round_} simulate {label}: {used:.2f} CPU s", flush=True)
    identical = len(digests["before"] | digests["after"]) == 1
    per_record = {name: {label: round(min(ts) / records[name] * 1e6, 3)
                         for label, ts in by.items()} for name, by in reads.items()}
    result: dict[str, Any] = {
        "created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": " ".join([Path(sys.argv[0]).as_posix(), *(argv or sys.argv[1:])]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "before": sha, "after": _git("rev-parse", "HEAD") + (
            " + uncommitted changes" if _git("status", "--porcelain", "sopkit") else ""),
        "playbook": str(PLAYBOOK.relative_to(ROOT)), "rounds": args.rounds,
        "records": records,
        "read_check_seconds": {n: {t: [round(s, 3) for s in ts] for t, ts in by.items()}
                               for n, by in reads.items()},
        "read_check_us_per_record": per_record,
        "read_check_speedup": {n: round(v["before"] / v["after"], 2)
                               for n, v in per_record.items()},
        "simulate": {"customers": meta["customers"], "events": meta["events"],
                     "end": meta["end_1y"],
                     "cpu_seconds": {t: [round(s, 2) for s in v] for t, v in cpu.items()},
                     "best_cpu_seconds": {t: round(min(v), 2) for t, v in cpu.items()},
                     "wall_seconds": {t: [round(s, 2) for s in v] for t, v in wall.items()},
                     "sha256": {t: sorted(v) for t, v in digests.items()},
                     "outputs_identical": identical},
    }
    args.results.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    args.results.with_suffix(".md").write_text(_markdown(result), encoding="utf-8")
    print(json.dumps(result["read_check_speedup"]), "identical" if identical else
          "OUTPUTS DIFFER")
    return 0 if identical else 1


def _markdown(r: dict[str, Any]) -> str:
    rows = "\n".join(
        f"| {name} | {r['records'][name]:,} | {v['before']} | {v['after']} | "
        f"{r['read_check_speedup'][name]}× |"
        for name, v in r["read_check_us_per_record"].items())
    s = r["simulate"]
    cpu = s["best_cpu_seconds"]
    return f"""# Reading a history: before and after issue 17

Created {r['created']} by `{r['command']}` on {r['machine']['cpus']} CPUs, Python
{r['machine']['python']}. Before: `{r['before'][:12]}`; after: `{r['after']}`. Before and
after run in turn, {r['rounds']} rounds; the best kept (every round in the JSON).

Reading and checking every record (`read_records` + `Runtime.parse_event`, what every
partition of `simulate --workers N` repeats), {r['playbook']}:

| history | records | before µs/record | after µs/record | speedup |
|---|---:|---:|---:|---:|
{rows}

`sopkit simulate {r['playbook']} --engine native` over the generated
{s['customers']:,}-customer history ({s['events']:,} events, to {s['end']}): best
{cpu['before']} CPU s before, {cpu['after']} CPU s after
({round(cpu['before'] / cpu['after'], 2)}×). `--out` and `--quarantine` byte-identical before
and after in every round: **{s['outputs_identical']}**.
"""


if __name__ == "__main__":
    raise SystemExit(main())
