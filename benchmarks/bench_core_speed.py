"""Native simulation CPU before and after a change, side by side, against the limit.

Runs, interleaved round by round (the machine is shared: each round measures every command
once, so load drifts hit both sides alike), for each input:

- before: `python -m sopkit simulate ... --engine native` from another checkout (`--before`,
  a clone at the base commit), run by this checkout's venv python (same packages);
- after: the same from this checkout;
- the limit: `benchmarks/limit.py` on the same input (plain JSONL: CDNOW is decompressed
  into benchmarks/tmp/ first);
- with `--durable`, the durable engine from this checkout too.

CPU is user + system of the child, from `os.wait4`. After the rounds, the after side and the
limit write their records once more, to files, which must be byte-identical (the limit is
only a limit if it does the same work); a difference fails the run. Writes
core-speed-results.json and .md (medians, every run's figures, the records' digests).
Inputs: the CDNOW demo history (data/cdnow) and the generated 10k-customer history
(benchmarks/generate.py, cached under benchmarks/data/).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import generate  # noqa: E402  # benchmarks/ is not a package

SEED = 20240101


def cpu(cmd: list[str], cwd: Path) -> float:
    """The CPU seconds (user + system) of `cmd` run as one child in `cwd`."""
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if status != 0:
        raise SystemExit(f"failed ({status}): {' '.join(cmd)}\n{err}")
    return float(usage.ru_utime + usage.ru_stime)


def plain(path: Path, out: Path) -> Path:
    """`path` decompressed into `out` (once), for the limit, which reads plain JSONL."""
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(path, "rb") as src, out.open("wb") as dst:
            shutil.copyfileobj(src, dst)
    return out


def inputs() -> dict[str, tuple[Path, Path, str]]:
    """name -> (events, profiles, end) for the two inputs."""
    cdnow = ROOT / "data" / "cdnow"
    tmp = HERE / "tmp" / "cdnow"
    gen, _ = generate.ensure(10_000, 1, SEED, HERE / "data", print)
    return {
        "cdnow": (plain(cdnow / "events.jsonl.gz", tmp / "events.jsonl"),
                  plain(cdnow / "profiles.jsonl.gz", tmp / "profiles.jsonl"),
                  "1998-07-01T00:00:00"),
        "generated-10k": (gen / "events.jsonl", gen / "profiles.jsonl",
                          generate.end_of(1)),
    }


def simulate(python: str, events: Path, profiles: Path, end: str, engine: str,
             out: str = os.devnull) -> list[str]:
    return [python, "-m", "sopkit", "simulate", str(ROOT / "playbooks" / "retail.toml"),
            "--events", str(events), "--profiles", str(profiles), "--end", end,
            "--engine", engine, "--output", "jsonl", "--out", out,
            "--quarantine", str(HERE / "tmp" / "core-speed.quarantine.jsonl"), "--no-progress"]


def limit(python: str, events: Path, profiles: Path, end: str,
          out: str = os.devnull) -> list[str]:
    return [python, str(HERE / "limit.py"), "--events", str(events), "--profiles",
            str(profiles), "--end", end, "--out", out]


def same_records(python: str, after: Path, name: str, events: Path, profiles: Path,
                 end: str) -> dict[str, Any]:
    """The after side's and the limit's records of one input, written to files: their
    sha256 digests and whether they are the same bytes."""
    digests: dict[str, str] = {}
    for label in ("after native", "limit"):
        path = HERE / "tmp" / f"core-speed-{name}-{label.replace(' ', '-')}.jsonl"
        if label == "limit":
            cmd, cwd = limit(python, events, profiles, end, str(path)), ROOT
        else:
            cmd, cwd = simulate(python, events, profiles, end, "native", str(path)), after
        cpu(cmd, cwd)
        digests[label] = hashlib.sha256(path.read_bytes()).hexdigest()
        path.unlink()
    return {"same": digests["after native"] == digests["limit"], "sha256": digests}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True,
                        help="the checkout to compare with (a clone at the base commit: a "
                             "checkout that others merge into moves during the run)")
    parser.add_argument("--after", type=Path, default=ROOT,
                        help="the checkout measured as after (default: this one; a copy keeps "
                             "edits made during the run out of it); this venv's python runs it")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--durable", action="store_true", help="measure the durable engine too")
    parser.add_argument("--results", type=Path, default=HERE / "core-speed-results.json")
    args = parser.parse_args()
    # one interpreter and one set of packages for both sides: only the code differs
    after_py = before_py = str(ROOT / ".venv" / "bin" / "python")
    runs: dict[str, dict[str, list[float]]] = {}
    for name, (events, profiles, end) in inputs().items():
        cmds: dict[str, tuple[list[str], Path]] = {
            "before native": (simulate(before_py, events, profiles, end, "native"), args.before),
            "after native": (simulate(after_py, events, profiles, end, "native"), args.after),
            "limit": (limit(after_py, events, profiles, end), ROOT),
        }
        if args.durable:
            cmds["after durable"] = (simulate(after_py, events, profiles, end, "durable"),
                                     args.after)
        runs[name] = {label: [] for label in cmds}
        for r in range(args.rounds):
            for label, (cmd, cwd) in cmds.items():
                seconds = cpu(cmd, cwd)
                runs[name][label].append(round(seconds, 2))
                print(f"{name} round {r + 1} {label}: {seconds:.2f} s CPU", flush=True)
    records = {name: same_records(after_py, args.after, name, events, profiles, end)
               for name, (events, profiles, end) in inputs().items()}
    write(args, runs, records)
    different = [name for name, r in records.items() if not r["same"]]
    if different:
        raise SystemExit(f"the after side's and the limit's records differ: {different}")


def write(args: argparse.Namespace, runs: dict[str, dict[str, list[float]]],
          records: dict[str, dict[str, Any]]) -> None:
    commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=args.after,
                            capture_output=True, text=True, check=False).stdout.strip()
    before = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=args.before,
                            capture_output=True, text=True, check=False).stdout.strip()
    medians = {name: {label: statistics.median(v) for label, v in by.items()}
               for name, by in runs.items()}
    results: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "after_commit": commit, "before_commit": before, "rounds": args.rounds,
        "load_average": os.getloadavg(), "runs": runs, "medians": medians,
        "records": records,
    }
    args.results.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    lines = [
        "# Native simulation CPU: before and after (issue 17)", "",
        f"{results['when']}; after = sopkit {commit}, before = "
        f"{before}; {args.rounds} interleaved rounds, medians of CPU seconds (user + system, "
        f"`os.wait4`); load average at the end {', '.join(f'{x:.1f}' for x in os.getloadavg())}."
        " Written by `make bench-core-speed` "
        f"(`benchmarks/bench_core_speed.py --before <clone at {before}> --after <clone at "
        f"{commit}>`).", "",
        "| input | before native | after native | limit | before / limit | after / limit "
        "| after / before |" + (" after durable | durable / native |" if args.durable else ""),
        "|---|---|---|---|---|---|---|" + ("---|---|" if args.durable else ""),
    ]
    for name, m in medians.items():
        b, a, lim = m["before native"], m["after native"], m["limit"]
        row = (f"| {name} | {b:.2f} | {a:.2f} | {lim:.2f} | {b / lim:.2f}x | {a / lim:.2f}x "
               f"| {a / b:.3f} |")
        if args.durable:
            row += f" {m['after durable']:.2f} | {m['after durable'] / a:.2f}x |"
        lines.append(row)
    lines += ["", "Every run (CPU seconds, in round order):", ""]
    for name, by in runs.items():
        for label, values in by.items():
            lines.append(f"- {name}, {label}: {', '.join(f'{v:.2f}' for v in values)}")
    lines += ["", "Records (`--out` of the after side and of the limit, sha256):", ""]
    for name, r in records.items():
        digest = r["sha256"]["limit"][:16]
        lines.append(f"- {name}: " + (f"byte-identical ({digest}…)" if r["same"] else
                                      f"DIFFERENT (after {r['sha256']['after native'][:16]}…, "
                                      f"limit {digest}…)"))
    args.results.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
