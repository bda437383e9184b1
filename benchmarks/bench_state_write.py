"""Writing a customer's stored state: microseconds per customer, this checkout against others.

`make bench-state-write` (under a minute) applies the first `--events` CDNOW events (default
20,000) with the retail playbook in one `Runtime`, then writes every customer's stored state
(`Runtime.dump_customer`, what a live run does for each customer a batch touched) `--rounds`
times; the fastest round counts. `--src DIR --label NAME` (repeatable) measures another
source tree in the same way, in turns with this checkout, each in its own child process; the
results say whether each tree's bytes equal this checkout's (a digest of every customer's
state). Results: benchmarks/state-write-results.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "state-write-results.json"

CHILD = """
import gzip, hashlib, json, sys, time
import sopkit
events, rounds = int(sys.argv[1]), int(sys.argv[2])
rt = sopkit.Runtime(sopkit.load_playbook(sys.argv[3]), engine="native")
with gzip.open(sys.argv[4], "rt", encoding="utf-8") as f:
    for _, line in zip(range(events), f):
        rt.ingest(json.loads(line))
ids = sorted(rt.customer_ids())
digest = hashlib.sha256(b"".join(rt.dump_customer(c) for c in ids)).hexdigest()
times = []
for _ in range(rounds):
    start = time.perf_counter()
    for c in ids:
        rt.dump_customer(c)
    times.append(time.perf_counter() - start)
print(json.dumps({"customers": len(ids), "seconds": times, "sha256": digest}))
"""


def measure(src: Path, events: int, rounds: int) -> dict[str, Any]:
    """One child process of the sopkit in `src`: its per-customer write times and digest."""
    done = subprocess.run(
        [sys.executable, "-P", "-c", CHILD, str(events), str(rounds),  # -P: src, not the cwd
         str(ROOT / "playbooks" / "retail.toml"), str(ROOT / "data/cdnow/events.jsonl.gz")],
        capture_output=True, text=True, check=False, env={**os.environ, "PYTHONPATH": str(src)})
    if done.returncode != 0:
        raise SystemExit(f"{src}: failed ({done.returncode}):\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--turns", type=int, default=2, help="child processes per tree")
    parser.add_argument("--src", type=Path, action="append", default=[])
    parser.add_argument("--label", action="append", default=[])
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    trees = [("this checkout", ROOT)] + [
        (args.label[i] if i < len(args.label) else str(src), src)
        for i, src in enumerate(args.src)]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in trees}
    for _ in range(args.turns):
        for name, src in trees:
            runs[name].append(measure(src, args.events, args.rounds))
    mine = runs["this checkout"][0]
    rows = []
    for name, _ in trees:
        best = min(t for run in runs[name] for t in run["seconds"])
        rows.append({"tree": name, "customers": int(runs[name][0]["customers"]),
                     "us_per_customer": best / mine["customers"] * 1e6,
                     "same_bytes": all(r["sha256"] == mine["sha256"] for r in runs[name]),
                     "every_round_s": [round(t, 4) for r in runs[name] for t in r["seconds"]]})
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True, check=False).stdout.strip()
    result = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": commit,
              "machine": f"{platform.machine()} {os.cpu_count()} cpus, Python "
                         f"{platform.python_version()}",
              "events": args.events, "sha256": mine["sha256"], "rows": rows}
    args.results.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    lines = ["# Writing a customer's stored state (bench_state_write.py)", "",
             f"{result['when']}, sopkit {commit}, {result['machine']}. The first "
             f"{args.events:,} CDNOW events with playbooks/retail.toml in one Runtime, then "
             f"every customer's state written {args.rounds} times in each of {args.turns} "
             "child processes per tree, in turns; the fastest round counts.", "",
             "| tree | customers | µs per customer | same bytes as this checkout |",
             "|---|---:|---:|---|"]
    for row in rows:
        lines.append(f"| {row['tree']} | {row['customers']:,} | {row['us_per_customer']:.1f} "
                     f"| {'yes' if row['same_bytes'] else 'no'} |")
    lines += ["", f"sha256 of every state, this checkout: {mine['sha256']}", ""]
    args.results.with_suffix(".md").write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))
    if not all(row["same_bytes"] for row in rows):
        raise SystemExit("the trees wrote different bytes")


if __name__ == "__main__":
    main()
