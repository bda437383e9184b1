"""`sopkit run` against `sopkit simulate` on the same history: the price of the live path.

`make bench-live` (a few minutes) takes the first `--events` lines (default 20,000) of the
CDNOW demo history (data/cdnow/events.jsonl.gz) and the profiles of their customers, and the
retail playbook (playbooks/retail.toml) with its `wecom` and `sms` channels replaced by one
`jsonl` channel each (fsync on, the default). Side by side, in one invocation, it runs:

    sopkit simulate PLAYBOOK --events E --profiles P --end END --out sim.jsonl
    sopkit run PLAYBOOK --store S --events E --profiles P --once --clock END
        --lateness 0s --send-from 1990-01-01 --worker bench --quarantine Q

with S a fresh SQLite file, and a fresh database on a throwaway PostgreSQL server (started the
way tests/pg_server.py does, with `fsync` switched back on) when the server binaries are
installed. END is the day after the prefix's last event; --send-from before the history
makes every message due go out through the channels, as a live run would have sent it.

Each figure is events per second of wall time for the whole command (start-up included), and
the ratio run / simulate (the target is at least 0.6). Every command runs `--rounds` times
(default 2), interleaved, and the fastest counts: the machine's load comes and goes. Every
run is checked: the keys its jsonl files hold are exactly the `send` actions simulate
planned, each once. `--src DIR --label NAME` (repeatable) also runs the `sopkit run`
of another source tree (e.g. `git archive main | tar -x -C /tmp/base`) in the same rounds,
its rows marked (NAME), for a side-by-side A/B. Results:
benchmarks/live-results.json and live-results.md; `--profile` (on by default in `make
bench-live`) also writes benchmarks/profile-live-sqlite.txt, the cProfile of the SQLite run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import io
import json
import os
import platform
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

RESULTS = ROOT / "benchmarks" / "live-results.json"
PROFILE = ROOT / "benchmarks" / "profile-live-sqlite.txt"
TARGET = 0.6


def prepare(work: Path, events: int) -> tuple[Path, Path, Path, str, int]:
    """The prefix history, its customers' profiles and the playbook with jsonl channels."""
    ev_path, pr_path = work / "events.jsonl", work / "profiles.jsonl"
    customers: set[str] = set()
    last = ""
    count = 0
    with gzip.open(ROOT / "data" / "cdnow" / "events.jsonl.gz", "rt", encoding="utf-8") as src, \
            ev_path.open("w", encoding="utf-8") as out:
        for line in src:
            if count >= events:
                break
            record = json.loads(line)
            customers.add(record["customer_id"])
            last = max(last, record["ts"])
            out.write(line)
            count += 1
    with gzip.open(ROOT / "data" / "cdnow" / "profiles.jsonl.gz", "rt",
                   encoding="utf-8") as src, pr_path.open("w", encoding="utf-8") as out:
        for line in src:
            if json.loads(line)["customer_id"] in customers:
                out.write(line)
    end = (dt.datetime.fromisoformat(last).date() + dt.timedelta(days=1)).isoformat()
    text = (ROOT / "playbooks" / "retail.toml").read_text(encoding="utf-8")
    text = text.replace('include = ["../rules/', f'include = ["{ROOT / "rules"}/')
    for name in ("wecom", "sms"):
        text = text.replace(f'[channels.{name}]\ntype = "{name}"\n',
                            f'[channels.{name}]\ntype = "jsonl"\npath = "out-{name}.jsonl"\n')
    playbook = work / "retail-jsonl.toml"
    playbook.write_text(text, encoding="utf-8")
    return ev_path, pr_path, playbook, end, count


def sopkit_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "sopkit", *args]


def timed(command: list[str], cwd: Path, src: Path | None = None) -> float:
    """Wall seconds of `command`; with `src`, the sopkit of that source tree runs it."""
    env = None if src is None else {**os.environ, "PYTHONPATH": str(src)}
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False,
                          env=env)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr}")
    return wall


def planned_sends(sim: Path) -> set[str]:
    keys = set()
    with sim.open(encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            if record["action"] == "send" and record["status"] == "planned":
                keys.add(record["key"])
    return keys


def written_keys(folder: Path) -> list[str]:
    keys: list[str] = []
    for path in sorted(folder.glob("out-*.jsonl")):
        with path.open(encoding="utf-8") as f:
            keys.extend(json.loads(line)["key"] for line in f)
    return keys


def run_args(playbook: Path, store: str, ev: Path, pr: Path, end: str, work: Path
             ) -> list[str]:
    return ["run", str(playbook), "--store", store, "--events", str(ev), "--profiles", str(pr),
            "--once", "--clock", end, "--lateness", "0s", "--send-from", "1990-01-01",
            "--worker", "bench", "--quarantine", str(work / "q.jsonl"), "--output", "jsonl"]


def live(name: str, store: str, playbook: Path, ev: Path, pr: Path, end: str, work: Path,
         expected: set[str], src: Path | None = None) -> float:
    """Run `sopkit run` (of the tree `src`, default this checkout) in a fresh folder; check
    its jsonl files against simulate."""
    folder = work / name
    folder.mkdir()
    wall = timed(sopkit_cmd(*run_args(playbook, store, ev, pr, end, folder)), folder, src)
    keys = written_keys(folder)
    if len(keys) != len(set(keys)) or set(keys) != expected:
        raise SystemExit(f"{name}: the jsonl files hold {len(set(keys))} keys ({len(keys)} "
                         f"lines), simulate planned {len(expected)} sends")
    return wall


def profile_run(playbook: Path, ev: Path, pr: Path, end: str, work: Path) -> str:
    """The cProfile of the SQLite run (its own process), top functions by cumulative and own
    time."""
    folder = work / "profile"
    folder.mkdir()
    data = folder / "run.prof"
    timed([sys.executable, "-m", "cProfile", "-o", str(data), "-m", "sopkit",
           *run_args(playbook, str(folder / "live.db"), ev, pr, end, folder)], folder)
    out = io.StringIO()
    stats = pstats.Stats(str(data), stream=out)
    stats.sort_stats("cumulative").print_stats(50)
    stats.sort_stats("tottime").print_stats(30)
    return out.getvalue().replace(str(work), "WORK").replace(str(ROOT), "ROOT")


def fresh_database(url: str, name: str) -> str:
    """A new database on the bench's server, for one run."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as db:
        db.execute(f"CREATE DATABASE {name}")
    return url.rsplit("/", 1)[0] + "/" + name


def postgres_url() -> tuple[Any, str] | None:
    try:
        import pg_server
        import psycopg
    except ImportError:
        return None
    try:
        server = pg_server.start()
    except pg_server.Unavailable as exc:
        print(f"PostgreSQL skipped: {exc}", file=sys.stderr)
        return None
    with psycopg.connect(server.url, autocommit=True) as db:  # the tests' server runs
        db.execute("ALTER SYSTEM SET fsync = on")  # without fsync: a benchmark needs it
        db.execute("SELECT pg_reload_conf()")
    return server, server.url


def commit_of() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                          capture_output=True, text=True, check=False)
    return done.stdout.strip()


def write_md(result: dict[str, Any], path: Path) -> None:
    lines = [
        "# `sopkit run` against `sopkit simulate` (bench_live.py)", "",
        f"{result['date']}, sopkit {result['commit']}, {result['machine']}, load average "
        f"{result['load_before']} before. The first {result['events']:,} events of the CDNOW "
        f"history ({result['customers']:,} customers), playbooks/retail.toml with its channels "
        f"as `jsonl` files (fsync on), end {result['end']}; {result['sends']:,} messages "
        "sent. Each run's jsonl files hold exactly the sends simulate planned, once each. "
        f"Every command ran {result['rounds']} times, interleaved; the fastest counts (all "
        "times in the last column).", "",
        "| command | wall s | events/s | run / simulate | every wall s |",
        "|---|---:|---:|---:|---|"]
    for row in result["runs"]:
        lines.append(f"| {row['name']} | {row['wall_s']:.1f} | {row['events_per_s']:,.0f} | "
                     f"{row['ratio']:.3f} | {', '.join(f'{t:.1f}' for t in row['all_walls_s'])} |")
    ours = [r for r in result["runs"][1:] if not r["name"].endswith(")")]  # not an A/B tree
    met = [r["name"] for r in ours if r["ratio"] >= TARGET]
    missed = [r["name"] for r in ours if r["ratio"] < TARGET]
    lines += ["", f"Target: run / simulate at least {TARGET}: met by "
              f"{', '.join(met) or 'none'}; missed by {', '.join(missed) or 'none'}.", ""]
    if result.get("note"):
        lines += [result["note"], ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="lines of the history")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--profile", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--postgres", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--rounds", type=int, default=2,
                        help="run every command this many times, interleaved; the fastest "
                        "counts (a shared machine's load comes and goes)")
    parser.add_argument("--src", type=Path, action="append", default=[],
                        help="another sopkit source tree whose `sopkit run` is measured "
                        "beside this checkout's, in the same rounds (A/B)")
    parser.add_argument("--label", action="append", default=[],
                        help="a name for each --src in the results (default: its path)")
    args = parser.parse_args()
    trees: dict[str, Path | None] = {"": None}
    for i, src in enumerate(args.src):
        trees[f" ({args.label[i] if i < len(args.label) else src})"] = src.resolve()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the server on the way out
    work = Path(tempfile.mkdtemp(prefix="sopkit-bench-live-"))
    server = None
    try:
        ev, pr, playbook, end, count = prepare(work, args.events)
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        if args.postgres:
            started = postgres_url()
            if started is not None:
                server, url = started
        walls: dict[str, list[float]] = {}
        expected: set[str] = set()
        for n in range(args.rounds):
            round_dir = work / f"round{n}"
            round_dir.mkdir()
            walls.setdefault("sopkit simulate", []).append(timed(sopkit_cmd(
                "simulate", str(playbook), "--events", str(ev), "--profiles", str(pr), "--end",
                end, "--out", str(round_dir / "sim.jsonl"), "--quarantine",
                str(round_dir / "sq.jsonl")), round_dir))
            expected = planned_sends(round_dir / "sim.jsonl")
            for t, (suffix, src) in enumerate(trees.items()):
                walls.setdefault(f"sopkit run, SQLite{suffix}", []).append(live(
                    f"sqlite{t}", str(round_dir / f"live{t}.db"), playbook, ev, pr, end,
                    round_dir, expected, src))
                if server is not None:
                    walls.setdefault(f"sopkit run, PostgreSQL{suffix}", []).append(live(
                        f"pg{t}", fresh_database(url, f"bench{n}_{t}"), playbook, ev, pr, end,
                        round_dir, expected, src))
        runs = [(name, min(times)) for name, times in walls.items()]
        sim_wall = runs[0][1]
        if args.profile:
            PROFILE.write_text(profile_run(playbook, ev, pr, end, work), encoding="utf-8")
        customers = sum(1 for _ in pr.open(encoding="utf-8"))
        rows = [{"name": name, "wall_s": round(wall, 2), "events_per_s": round(count / wall, 1),
                 "ratio": round(sim_wall / wall, 3),
                 "all_walls_s": [round(t, 2) for t in walls[name]]} for name, wall in runs]
        result = {
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": commit_of(), "machine": f"{platform.machine()} {os.cpu_count()} cpus, "
            f"Python {platform.python_version()}", "load_before": round(load, 2),
            "events": count, "customers": customers, "end": end, "sends": len(expected),
            "rounds": args.rounds, "runs": rows, "target": TARGET,
            "target_met": all(r["ratio"] >= TARGET for r in rows[1:]
                              if not r["name"].endswith(")")),
            "commands": {"simulate": "sopkit simulate PLAYBOOK --events E --profiles P "
                         f"--end {end} --out sim.jsonl",
                         "run": " ".join(["sopkit", *run_args(Path("PLAYBOOK"), "STORE",
                                                              Path("E"), Path("P"), end,
                                                              Path("."))])},
        }
        if len(trees) > 1:
            result["trees"] = {label.strip(" ()"): str(src) for label, src in trees.items()
                               if src is not None}
            result["note"] = ("A/B: the rows marked (NAME) ran the `sopkit run` of another "
                              "source tree, in the same rounds: " + "; ".join(
                                  f"{k}: {v}" for k, v in result["trees"].items())
                              + ". The target counts this checkout's rows.")
        args.results.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        write_md(result, args.results.with_suffix(".md"))
        print(args.results.with_suffix(".md").read_text(encoding="utf-8"))
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
