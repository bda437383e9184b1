"""End-to-end benchmarks of `sopkit simulate` with the retail playbook (issue 3, items 3-4).

    python benchmarks/bench.py                      # the full suite (`make bench`)
    python benchmarks/bench.py --quick              # 300 customers, seconds (`make bench-quick`)
    python benchmarks/bench.py --sizes 10k --engines native --no-profile

Each measurement runs one simulation as a child process,

    python -m sopkit simulate playbooks/retail.toml --events E --profiles P --end END \
        --engine ENGINE --output jsonl --out /dev/null --no-progress

(or `benchmarks/limit.py`, the hand-written limit, with the same inputs), and reads its wall
time, its CPU time (user + system) and its peak RSS from `os.wait4`, which reports the
rusage of that one child (`getrusage(RUSAGE_CHILDREN).ru_maxrss` is the largest of all
children waited for so far, so it cannot tell a small run after a big one). The child's
summary (stdout) gives the events applied and the actions per rule and status.

Inputs come from `benchmarks/generate.py` (seeded, cached under `benchmarks/data/`). What is
measured, for N customers with about 20 events each:

- throughput: events applied per second of wall time, one process, 1-year history and
  simulation (`--end` one year after the start), for each engine and N;
- the limit: `benchmarks/limit.py` on the same input, writing the same records (its output
  is byte-identical to sopkit's, checked at the verification size) and, as `limit-core`,
  counting them only; sopkit/limit is a ratio of CPU times (robust when other processes
  share the machine; wall-time ratios are in the JSON too);
- cost growth: the same events simulated until 5 years after the start (`--end` 4 years
  later, no extra events), 5y/1y time ratio; the limit's own 5y/1y ratio is the floor this
  input allows (after the last event every customer still goes through the churn rules);
- memory: peak RSS vs N, and vs history length (the same customers with a second year of
  events, so twice the events; `generate.py --years 2`).

By default the suite runs 10k and 100k customers with both engines and 1M with the native
engine, the 5-year variants at 10k and 100k and the 2-year history at 10k, a byte-for-byte
comparison of the action records of both engines and the limit at 10k, and a cProfile of the
native run at 10k (`benchmarks/profile-native.txt`). A run whose projected time (from the
measured rate of the same engine at the next smaller size) exceeds `--budget-minutes`
(default 45) is skipped
and reported with the projection. Results go to `benchmarks/results.json` and
`benchmarks/results.md` (with `--quick`: `benchmarks/tmp/results-quick.json`).
"""

from __future__ import annotations

import argparse
import compileall
import datetime as dt
import hashlib
import io
import json
import os
import platform
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import generate  # noqa: E402  # benchmarks/ is not a package

PLAYBOOK = "playbooks/retail.toml"
SEED = 20240101
ENGINES = ("native", "durable")
DEFAULT_PLAN = {10_000: ["native", "durable"], 100_000: ["native", "durable"],
                1_000_000: ["native"]}
QUICK_CUSTOMERS = 300
SCHEMA_VERSION = 1

# the targets
TARGET_NATIVE_RATE = 100_000.0
TARGET_NATIVE_VS_LIMIT = 3.0
TARGET_DURABLE_RATE = 15_000.0
TARGET_RSS_1M_MB = 4096.0
TARGET_GROWTH = 1.3

RUN_FIELDS = ("id", "engine", "customers", "history_years", "sim_years", "end", "status",
              "events", "wall_s", "cpu_s", "events_per_s", "events_per_cpu_s", "peak_rss_mb",
              "actions", "by_rule", "pending_at_end")


def label(n: int) -> str:
    """10000 -> '10k', 1000000 -> '1M', 300 -> '300'."""
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1_000 and n % 1_000 == 0:
        return f"{n // 1_000}k"
    return str(n)


def parse_size(text: str) -> int:
    text = text.strip().lower().replace("_", "").replace(",", "")
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def log(text: str) -> None:
    print(f"[{dt.datetime.now():%H:%M:%S}] {text}", file=sys.stderr, flush=True)


SNAPSHOT_DIRS = ("sopkit", "playbooks", "rules")


def tree_hash(root: Path) -> str:
    """A hash of the sources sopkit runs from under `root`: its package and the playbook."""
    digest = hashlib.sha256()
    for name in SNAPSHOT_DIRS:
        for path in sorted((root / name).rglob("*")):
            if path.is_file() and path.suffix in (".py", ".toml"):
                digest.update(path.relative_to(root).as_posix().encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()


def snapshot(target: Path) -> Path:
    """Copy sopkit/, playbooks/ and rules/ as they are now (uncommitted edits included).

    The sopkit runs start in this directory, so `python -m sopkit` imports the copy (the
    current directory comes before the editable install on sys.path): every run of a suite
    measures the same code even while others edit the working tree.
    """
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for name in SNAPSHOT_DIRS:
        shutil.copytree(ROOT / name, target / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    compileall.compile_dir(target / "sopkit", quiet=1)  # no run pays for compiling
    return target


def sopkit_identity() -> dict[str, Any]:
    """The sopkit code in the working tree: commit, uncommitted files, a hash of the sources."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                                  check=False).stdout.strip()
        except OSError:
            return ""

    dirty = [line[3:] for line in git("status", "--porcelain", "--", *SNAPSHOT_DIRS)
             .splitlines()]
    return {"commit": git("rev-parse", "HEAD"), "dirty": dirty, "tree_sha256": tree_hash(ROOT)}


@dataclass
class Run:
    """One measured (or skipped) child process."""

    id: str
    engine: str  # native | durable | limit | limit-core
    customers: int
    history_years: int
    sim_years: int
    end: str
    status: str = "ok"  # ok | skipped | failed
    reason: str = ""
    events: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    sys_s: float = 0.0
    events_per_s: float = 0.0
    events_per_cpu_s: float = 0.0
    peak_rss_mb: float = 0.0
    actions: int = 0
    by_rule: dict[str, dict[str, int]] = field(default_factory=dict)
    pending_at_end: int = 0
    stages: dict[str, int] = field(default_factory=dict)
    tags: dict[str, int] = field(default_factory=dict)
    engine_used: str = ""
    purpose: str = "timed"  # timed | verify (writes records for the byte comparison)
    records: str = os.devnull
    loadavg_before: list[float] = field(default_factory=list)
    sopkit_tree: str = ""
    sopkit_changed_during_run: bool = False
    env: dict[str, str] = field(default_factory=dict)
    command: list[str] = field(default_factory=list)


@dataclass
class Measured:
    """What one child process cost, from os.wait4, and what it printed."""

    code: int
    wall: float
    cpu: float
    sys: float
    rss_mb: float
    stdout: str
    stderr: str


def measure(cmd: list[str], cwd: Path = ROOT, env: dict[str, str] | None = None) -> Measured:
    """Run `cmd` as a child and wait for it with os.wait4 (its own rusage)."""
    with tempfile.TemporaryFile("w+", encoding="utf-8") as out, \
            tempfile.TemporaryFile("w+", encoding="utf-8") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=err,
                                env={**os.environ, **env} if env else None)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Measured(proc.returncode, wall, usage.ru_utime + usage.ru_stime, usage.ru_stime,
                        usage.ru_maxrss / 1024.0, out.read(), err.read())


class Suite:
    """Runs the plan, keeps every Run, and derives the ratios, checks and targets."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.quick: bool = args.quick
        self.data_root: Path = args.data
        self.scratch: Path = args.scratch
        self.runs: list[Run] = []
        self.inputs: dict[str, dict[str, Any]] = {}
        self.checks: list[dict[str, Any]] = []
        self.identity = sopkit_identity()
        self.code = ROOT
        if not args.live:
            self.code = snapshot(self.scratch / "sopkit-snapshot")
            self.identity["snapshot"] = os.path.relpath(self.code, ROOT)
            self.identity["snapshot_sha256"] = tree_hash(self.code)
        self.python = sys.executable

    # ---- inputs ------------------------------------------------------------------------

    def data(self, customers: int, years: int) -> tuple[Path, dict[str, Any]]:
        path, meta = generate.ensure(customers, years, self.args.seed, self.data_root, log)
        self.inputs[f"{label(customers)}-{years}y"] = meta
        return path, meta

    # ---- one run -----------------------------------------------------------------------

    def run(self, engine: str, customers: int, history_years: int, sim_years: int,
            records: Path | None = None, purpose: str = "timed",
            env: dict[str, str] | None = None) -> Run:
        run_id = f"{engine}-{label(customers)}-{history_years}y"
        if sim_years != history_years:
            run_id += f"-end{sim_years}y"
        if purpose != "timed":
            run_id += f"-{purpose}"
        end = generate.end_of(sim_years)
        run = Run(run_id, engine, customers, history_years, sim_years, end, purpose=purpose,
                  env=dict(env or {}))
        skip = self.over_budget(run)
        if skip:
            run.status, run.reason = "skipped", skip
            log(f"{run_id}: skipped: {skip}")
            self.runs.append(run)
            return run
        path, meta = self.data(customers, history_years)
        events, profiles = path / "events.jsonl", path / "profiles.jsonl"
        sink = str(records) if records is not None else os.devnull
        run.records = sink
        if engine in ENGINES:
            quarantine = self.scratch / f"{run_id}.quarantine.jsonl"
            cmd = [self.python, "-m", "sopkit", "simulate", PLAYBOOK, "--events", str(events),
                   "--profiles", str(profiles), "--end", end, "--engine", engine,
                   "--output", "jsonl", "--out", sink, "--quarantine", str(quarantine),
                   "--no-progress"]
        else:
            cmd = [self.python, str(HERE / "limit.py"), "--events", str(events),
                   "--profiles", str(profiles), "--end", end]
            cmd += ["--no-records"] if engine == "limit-core" else ["--out", sink]
        run.command = [os.path.relpath(c, ROOT) if c.startswith(str(ROOT)) else c
                       for c in cmd]
        run.loadavg_before = [round(x, 2) for x in os.getloadavg()]
        log(f"{run_id}: {meta['events']:,} events, {customers:,} customers, until {end} ...")
        if engine in ENGINES:
            run.sopkit_tree = tree_hash(self.code)
        result = measure(cmd, self.code, env)
        code, wall, cpu, rss = result.code, result.wall, result.cpu, result.rss_mb
        stdout, stderr = result.stdout, result.stderr
        if engine in ENGINES:
            run.sopkit_changed_during_run = tree_hash(self.code) != run.sopkit_tree
        run.wall_s, run.cpu_s, run.peak_rss_mb = round(wall, 3), round(cpu, 3), round(rss, 1)
        run.sys_s = round(result.sys, 3)
        summary: dict[str, Any] = {}
        lines = [line for line in stdout.splitlines() if line.startswith("{")]
        if code == 0 and lines:
            summary = json.loads(lines[-1])
        else:
            run.status = "failed"
            run.reason = f"exit code {code}: {(stderr or stdout).strip()[-2000:]}"
            log(f"{run_id}: FAILED ({run.reason})")
            self.runs.append(run)
            return run
        run.events = int(summary["events_applied"])
        run.actions = int(summary["actions"])
        run.by_rule = summary["by_rule"]
        run.pending_at_end = int(summary["pending_at_end"])
        run.stages = summary["stages"]
        run.tags = summary["tags"]
        run.engine_used = str(summary.get("engine", engine))
        if engine in ENGINES and run.engine_used != engine:
            run.reason = f"sopkit used the {run.engine_used} engine: {summary.get('notice')}"
        run.events_per_s = round(run.events / wall, 1) if wall > 0 else 0.0
        run.events_per_cpu_s = round(run.events / cpu, 1) if cpu > 0 else 0.0
        log(f"{run_id}: {wall:.1f} s wall, {cpu:.1f} s CPU ({run.sys_s:.1f} system), "
            f"{run.events_per_s:,.0f} events/s, "
            f"peak RSS {rss:,.0f} MB, {run.actions:,} actions")
        self.runs.append(run)
        return run

    def find(self, engine: str, customers: int, history_years: int = 1,
             sim_years: int = 1) -> Run | None:
        """The timed run of `engine` on this input, if it ran."""
        for run in self.runs:
            if (run.engine, run.customers, run.history_years, run.sim_years, run.status,
                    run.purpose) == (engine, customers, history_years, sim_years, "ok",
                                     "timed"):
                return run
        return None

    def over_budget(self, run: Run) -> str:
        """Why `run` is skipped ('' to run it): its projected time exceeds the budget.

        A run to the end of its history is projected from the events/s of the same engine's
        largest smaller run (customers x history years); a run past its last event (5 years)
        from the 1-year run of this size times the 5y/1y ratio measured at a smaller size.
        """
        budget = self.args.budget_minutes * 60
        if self.quick or budget <= 0:
            return ""
        if run.sim_years == run.history_years:
            volume = run.customers * run.history_years
            smaller = [r for r in self.runs
                       if r.engine == run.engine and r.status == "ok" and r.purpose == "timed"
                       and r.sim_years == r.history_years
                       and r.customers * r.history_years < volume]
            if not smaller:
                return ""
            same = [r for r in smaller if r.history_years == run.history_years]
            base = max(same or smaller, key=lambda r: r.customers * r.history_years)
            events = base.events * volume / (base.customers * base.history_years)
            seconds = events / base.events_per_s
            basis = (f"{base.events_per_s:,.0f} events/s measured by {base.id} x "
                     f"{events:,.0f} events")
        else:
            one = self.find(run.engine, run.customers, run.history_years, run.history_years)
            if one is None:
                return "no run of this engine and input to the end of its history"
            growth = [g for g in self.growth_ratios()
                      if g["engine"] == run.engine and g["customers"] < run.customers]
            factor = max(growth, key=lambda g: g["customers"])["wall_ratio"] if growth else 1.0
            seconds = one.wall_s * factor
            basis = f"{one.wall_s:,.0f} s for 1 year x {factor:.2f} (5y/1y at a smaller size)"
        if seconds > budget:
            return (f"projected {seconds / 60:,.0f} min > --budget-minutes "
                    f"{self.args.budget_minutes:g} ({basis})")
        return ""

    # ---- the plan ----------------------------------------------------------------------

    def plan(self) -> dict[int, list[str]]:
        args = self.args
        if self.quick:
            return {QUICK_CUSTOMERS: list(args.engines or ENGINES)}
        if args.sizes is None:
            engines = args.engines or list(ENGINES)
            return {n: [e for e in engines if e in default]
                    for n, default in DEFAULT_PLAN.items()
                    if any(e in default for e in engines)}
        return {n: list(args.engines or ENGINES) for n in sorted(args.sizes)}

    def execute(self) -> None:
        self.scratch.mkdir(parents=True, exist_ok=True)
        plan = self.plan()
        growth_sizes = set(plan) if self.quick or self.args.growth_sizes is None \
            else set(self.args.growth_sizes)
        history_sizes = set(plan) if self.quick or self.args.history_sizes is None \
            else set(self.args.history_sizes)
        if not self.quick and self.args.growth_sizes is None:
            growth_sizes = {n for n in plan if n <= 100_000}
        if not self.quick and self.args.history_sizes is None:
            history_sizes = {n for n in plan if n <= 10_000}
        records_dir = self.scratch / "records"
        records_dir.mkdir(parents=True, exist_ok=True)
        for customers, engines in sorted(plan.items()):
            # in quick mode the timed runs write their records, for the byte comparison
            def sink(engine: str, n: int = customers) -> Path | None:
                return records_dir / f"{engine}-{label(n)}.jsonl" if self.quick else None

            ran = [self.run(e, customers, 1, 1, sink(e)) for e in engines]
            if not any(r.status == "ok" for r in ran):
                continue
            if "durable" in engines and customers == min(plan) and self.args.malloc_diagnostic:
                # durable's run time depends on glibc trimming the heap after each evaluation
                self.run("durable", customers, 1, 1, purpose="malloc-top-pad",
                         env={"MALLOC_TOP_PAD_": str(64 << 20)})
            self.run("limit", customers, 1, 1, sink("limit"))
            self.run("limit-core", customers, 1, 1)
            if customers in growth_sizes:
                for engine in [*engines, "limit"]:
                    self.run(engine, customers, 1, 2)  # the churn tail after the last event
                    self.run(engine, customers, 1, 5)  # ... and three more quiet years
            if customers in history_sizes:
                for engine in [e for e in engines if e == "native"] or engines[:1]:
                    self.run(engine, customers, 2, 2)
                self.run("limit", customers, 2, 2)
        self.verify(plan, records_dir)
        self.compare_counts()
        if self.args.profile and not self.quick:
            self.profile(plan)

    # ---- checks ------------------------------------------------------------------------

    def verify(self, plan: dict[int, list[str]], records_dir: Path) -> None:
        """Byte-compare the action records of every engine and the limit at one size."""
        if self.args.no_verify:
            return
        sizes = sorted(plan)
        size = QUICK_CUSTOMERS if self.quick else min(
            [n for n in sizes if n <= self.args.verify_size] or sizes[:1])
        if not self.quick:
            for engine in [*plan[size], "limit"]:
                self.run(engine, size, 1, 1, records_dir / f"{engine}-{label(size)}.jsonl",
                         purpose="verify")
        files = {e: records_dir / f"{e}-{label(size)}.jsonl" for e in [*plan[size], "limit"]}
        digests: dict[str, str] = {}
        for engine, path in files.items():
            if path.exists():
                digests[engine] = hashlib.sha256(path.read_bytes()).hexdigest()
        reference = digests.get("limit")
        for engine in plan[size]:
            if engine not in digests or reference is None:
                continue
            same = digests[engine] == reference
            detail = (f"{label(size)} customers: {engine} and limit records are "
                      f"byte-identical ({files[engine].stat().st_size:,} bytes, sha256 "
                      f"{reference[:16]}…)" if same else first_difference(files[engine],
                                                                          files["limit"]))
            self.checks.append({"name": f"records_identical_{engine}_limit", "ok": same,
                                "detail": detail})
        if not self.args.keep_records:
            for path in files.values():
                path.unlink(missing_ok=True)

    def compare_counts(self) -> None:
        """Both engines, and the limit, must report the same actions per rule and status."""
        groups: dict[tuple[int, int, int], list[Run]] = {}
        for run in self.runs:
            if run.status == "ok" and run.engine != "limit-core":
                groups.setdefault((run.customers, run.history_years, run.sim_years),
                                  []).append(run)
        engines_ok: list[str] = []
        engines_bad: list[str] = []
        limit_ok: list[str] = []
        limit_bad: list[str] = []
        for (n, hy, sy), runs in sorted(groups.items()):
            name = f"{label(n)} {hy}y history until {sy}y"
            sopkit_runs = [r for r in runs if r.engine in ENGINES]
            limits = [r for r in runs if r.engine == "limit"]
            for a in sopkit_runs[1:]:
                b = sopkit_runs[0]
                (engines_ok if same_counts(a, b) else engines_bad).append(
                    f"{name}: {b.id} vs {a.id}" + ("" if same_counts(a, b)
                                                    else ": " + count_diff(b, a)))
            for lim in limits:
                for s in sopkit_runs:
                    (limit_ok if same_counts(lim, s) else limit_bad).append(
                        f"{name}: {s.id} vs {lim.id}" + ("" if same_counts(lim, s)
                                                         else ": " + count_diff(s, lim)))
        self.checks.append({"name": "engines_agree", "ok": not engines_bad and bool(engines_ok),
                            "detail": "; ".join(engines_bad or engines_ok) or "nothing to compare"})
        self.checks.append({"name": "limit_agrees", "ok": not limit_bad and bool(limit_ok),
                            "detail": "; ".join(limit_bad or limit_ok) or "nothing to compare"})
        changed = [r.id for r in self.runs if r.sopkit_changed_during_run]
        trees = {r.sopkit_tree for r in self.runs if r.sopkit_tree}
        detail = (f"sopkit/ changed during {', '.join(changed)}; " if changed else "")
        detail += (f"the runs measured {len(trees)} different versions of sopkit/ (others "
                   "were editing it)" if len(trees) > 1 else
                   "every run measured the same sopkit/ sources (hashed before and after)")
        live = sopkit_identity()
        if self.code != ROOT:
            detail += (f"; the runs used a snapshot of the working tree taken when the suite "
                       f"started (sopkit {self.identity['commit'][:12]}"
                       + (f" + uncommitted {', '.join(self.identity['dirty'])}"
                          if self.identity["dirty"] else "") + ")")
            if live["tree_sha256"] != self.identity["tree_sha256"]:
                detail += "; the working tree has changed since (others are editing it)"
        self.checks.append({"name": "same_sopkit_for_all_runs",
                            "ok": not changed and len(trees) <= 1, "detail": detail})

    def profile(self, plan: dict[int, list[str]]) -> None:
        """cProfile of the native run at the profile size: top 25 by tottime."""
        sizes = [n for n, engines in plan.items()
                 if "native" in engines and n <= self.args.profile_size]
        if not sizes:
            return
        size = max(sizes)
        if self.find("native", size) is None:
            return
        path, meta = self.data(size, 1)
        raw = self.scratch / "profile-native.prof"
        cmd = [self.python, "-m", "cProfile", "-o", str(raw), "-m", "sopkit", "simulate",
               PLAYBOOK, "--events", str(path / "events.jsonl"), "--profiles",
               str(path / "profiles.jsonl"), "--end", generate.end_of(1), "--engine", "native",
               "--output", "jsonl", "--out", os.devnull, "--quarantine",
               str(self.scratch / "profile.quarantine.jsonl"), "--no-progress"]
        log(f"profile: native {label(size)} under cProfile ...")
        result = measure(cmd, self.code)
        wall, cpu = result.wall, result.cpu
        if result.code != 0:
            log(f"profile failed: {result.stderr[-500:]}")
            return
        target = HERE / "profile-native.txt"
        with target.open("w", encoding="utf-8") as handle:
            shown = " ".join(os.path.relpath(c, ROOT) if c.startswith(str(ROOT)) else c
                             for c in cmd[1:])
            handle.write(f"# python {shown}\n# (-o then pstats, sorted by tottime as with "
                         f"-s tottime; top 25)\n# sopkit {self.identity['commit'][:12]}"
                         f"{' + uncommitted changes' if self.identity['dirty'] else ''}; "
                         f"{meta['events']:,} events, {size:,} customers; {wall:.0f} s wall "
                         f"under the profiler ({cpu:.0f} s CPU)\n\n")
            buffer = io.StringIO()
            stats = pstats.Stats(str(raw), stream=buffer)
            stats.sort_stats("tottime").print_stats(25)
            handle.write(buffer.getvalue().replace(str(self.code) + os.sep, ""))
        raw.unlink(missing_ok=True)
        log(f"profile: {target.relative_to(ROOT)}")

    # ---- derived figures ---------------------------------------------------------------

    def growth_ratios(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for run in self.runs:
            if run.status != "ok" or run.sim_years != 5 or run.purpose != "timed":
                continue
            one = self.find(run.engine, run.customers, 1, 1)
            if one is None:
                continue
            row: dict[str, Any] = {
                "engine": run.engine, "customers": run.customers,
                "wall_1y_s": one.wall_s, "wall_5y_s": run.wall_s,
                "wall_ratio": round(run.wall_s / one.wall_s, 3),
                "cpu_ratio": round(run.cpu_s / one.cpu_s, 3),
                "actions_1y": one.actions, "actions_5y": run.actions}
            two = self.find(run.engine, run.customers, 1, 2)
            if two is not None:  # years 3-5 have no action: what they cost is idle cost
                row.update(wall_2y_s=two.wall_s, actions_2y=two.actions,
                           cpu_ratio_2y=round(two.cpu_s / one.cpu_s, 3),
                           idle_3y_cpu_over_1y=round((run.cpu_s - two.cpu_s) / one.cpu_s, 3),
                           wall_ratio_5y_2y=round(run.wall_s / two.wall_s, 3))
            out.append(row)
        return out

    def limit_ratios(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for run in self.runs:
            if run.status != "ok" or run.engine not in ENGINES or run.sim_years != 1 \
                    or run.history_years != 1 or run.purpose != "timed":
                continue
            limit = self.find("limit", run.customers)
            core = self.find("limit-core", run.customers)
            if limit is None:
                continue
            row: dict[str, Any] = {
                "engine": run.engine, "customers": run.customers,
                "sopkit_cpu_s": run.cpu_s, "limit_cpu_s": limit.cpu_s,
                "cpu_ratio": round(run.cpu_s / limit.cpu_s, 3),
                "wall_ratio": round(run.wall_s / limit.wall_s, 3),
            }
            if core is not None:
                row["limit_core_cpu_s"] = core.cpu_s
                row["cpu_ratio_vs_core"] = round(run.cpu_s / core.cpu_s, 3)
            out.append(row)
        return out

    def memory(self) -> dict[str, Any]:
        vs_customers: list[dict[str, Any]] = []
        for engine in (*ENGINES, "limit"):
            points = sorted((r for r in self.runs if r.engine == engine and r.status == "ok"
                             and r.history_years == 1 and r.sim_years == 1
                             and r.purpose == "timed"), key=lambda r: r.customers)
            for r in points:
                vs_customers.append({"engine": engine, "customers": r.customers,
                                     "peak_rss_mb": r.peak_rss_mb,
                                     "kb_per_customer": round(r.peak_rss_mb * 1024
                                                              / r.customers, 2)})
        vs_history: list[dict[str, Any]] = []
        for run in self.runs:
            if run.status == "ok" and run.history_years == 2:
                one = self.find(run.engine, run.customers, 1, 1)
                if one is not None:
                    vs_history.append({"engine": run.engine, "customers": run.customers,
                                       "events_1y": one.events, "events_2y": run.events,
                                       "peak_rss_1y_mb": one.peak_rss_mb,
                                       "peak_rss_2y_mb": run.peak_rss_mb,
                                       "ratio": round(run.peak_rss_mb / one.peak_rss_mb, 3)})
        return {"vs_customers": vs_customers, "vs_history": vs_history,
                "projection_1m": self.project_rss(1_000_000)}

    def project_rss(self, customers: int) -> list[dict[str, Any]]:
        """Peak RSS at `customers`, extrapolated linearly from the two largest measured sizes."""
        out: list[dict[str, Any]] = []
        for engine in (*ENGINES, "limit"):
            points = sorted({r.customers: r for r in self.runs
                             if r.engine == engine and r.status == "ok"
                             and r.history_years == 1 and r.sim_years == 1
                             and r.purpose == "timed"}.values(),
                            key=lambda r: r.customers)
            if any(p.customers == customers for p in points):
                measured = next(p for p in points if p.customers == customers)
                out.append({"engine": engine, "peak_rss_mb": measured.peak_rss_mb,
                            "measured": True})
                continue
            if len(points) < 2:
                continue
            a, b = points[-2], points[-1]
            slope = (b.peak_rss_mb - a.peak_rss_mb) / (b.customers - a.customers)
            out.append({"engine": engine, "measured": False,
                        "peak_rss_mb": round(b.peak_rss_mb + slope * (customers - b.customers),
                                             1),
                        "kb_per_customer": round(slope * 1024, 3),
                        "basis": f"linear through {label(a.customers)} and "
                                 f"{label(b.customers)}"})
        return out

    def targets(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []

        def largest(engine: str) -> Run | None:
            runs = [r for r in self.runs if r.engine == engine and r.status == "ok"
                    and r.history_years == 1 and r.sim_years == 1
                    and r.purpose == "timed"]
            return max(runs, key=lambda r: r.customers) if runs else None

        native = largest("native")
        durable = largest("durable")
        if native is not None:
            out.append(_target(f"native >= 100,000 events/s end to end "
                               f"({label(native.customers)} customers)", native.events_per_s,
                               ">=", TARGET_NATIVE_RATE, "events/s"))
            ratio = next((x for x in self.limit_ratios()
                          if x["engine"] == "native" and x["customers"] == native.customers),
                         None)
            if ratio is not None:
                out.append(_target(f"native within 3x of the limit "
                                   f"({label(native.customers)}, CPU time)", ratio["cpu_ratio"],
                                   "<=", TARGET_NATIVE_VS_LIMIT, "x"))
        if durable is not None:
            out.append(_target(f"durable >= 15,000 events/s end to end "
                               f"({label(durable.customers)} customers)",
                               durable.events_per_s, ">=", TARGET_DURABLE_RATE, "events/s"))
        for row in self.project_rss(1_000_000):
            if row["engine"] == "native":
                note = "measured" if row["measured"] else (
                    "not measured (the 1M run was skipped): projected, " + row["basis"])
                out.append(_target("1M customers x 20 events under 4 GB peak RSS (native)",
                                   row["peak_rss_mb"], "<=", TARGET_RSS_1M_MB, "MB",
                                   measured=row["measured"], note=note))
        for row in self.growth_ratios():
            if row["engine"] in ENGINES:
                out.append(_target(f"{row['engine']} 5y/1y <= 1.3 ({label(row['customers'])}, "
                                   "wall time)", row["wall_ratio"], "<=", TARGET_GROWTH, "x"))
                if "wall_ratio_5y_2y" in row:  # the idle reading: years 3-5 hold no action
                    out.append(_target(f"{row['engine']} idle years: 5y/2y <= 1.3 "
                                       f"({label(row['customers'])}, wall time)",
                                       row["wall_ratio_5y_2y"], "<=", TARGET_GROWTH, "x"))
        return out

    def results(self, started: float) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "mode": "quick" if self.quick else "full",
            "created": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "total_seconds": round(time.perf_counter() - started, 1),
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                        "python": platform.python_version(),
                        "memory_gb": _memory_gb()},
            "sopkit": self.identity,
            "playbook": PLAYBOOK,
            "seed": self.args.seed,
            "inputs": self.inputs,
            "runs": [asdict(r) for r in self.runs],
            "limit_ratios": self.limit_ratios(),
            "growth": self.growth_ratios(),
            "memory": self.memory(),
            "checks": self.checks,
            "targets": self.targets(),
        }


def _target(name: str, value: float, op: str, target: float, unit: str,
            measured: bool = True, note: str = "") -> dict[str, Any]:
    ok = value >= target if op == ">=" else value <= target
    return {"name": name, "value": value, "op": op, "target": target, "unit": unit,
            "pass": ok, "measured": measured, "note": note}


def _memory_gb() -> float:
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 0.0
    return round(pages / 2**30, 1)


def same_counts(a: Run, b: Run) -> bool:
    return (a.by_rule == b.by_rule and a.actions == b.actions
            and a.pending_at_end == b.pending_at_end and a.events == b.events)


def count_diff(a: Run, b: Run) -> str:
    parts = []
    for rule in sorted(set(a.by_rule) | set(b.by_rule)):
        if a.by_rule.get(rule) != b.by_rule.get(rule):
            parts.append(f"{rule}: {a.by_rule.get(rule)} vs {b.by_rule.get(rule)}")
    if a.pending_at_end != b.pending_at_end:
        parts.append(f"pending_at_end {a.pending_at_end} vs {b.pending_at_end}")
    if a.events != b.events:
        parts.append(f"events {a.events} vs {b.events}")
    return "; ".join(parts) or "same per-rule counts"


def first_difference(a: Path, b: Path) -> str:
    with a.open(encoding="utf-8") as fa, b.open(encoding="utf-8") as fb:
        for number, (x, y) in enumerate(zip(fa, fb, strict=False), start=1):
            if x != y:
                return f"{a.name} and {b.name} differ at line {number}: {x.strip()} | {y.strip()}"
    return f"{a.name} and {b.name}: one is a prefix of the other"


# ---- the report ------------------------------------------------------------------------

def markdown(results: dict[str, Any]) -> str:
    lines: list[str] = []
    sk = results["sopkit"]
    lines.append(f"# sopkit benchmarks ({results['mode']})\n")
    lines.append(f"Retail playbook (`{results['playbook']}`), generated histories "
                 f"(`benchmarks/generate.py`, seed {results['seed']}), one process per run. "
                 f"{results['created']}; {results['machine']['cpus']} CPUs, "
                 f"{results['machine']['memory_gb']} GB, Python {results['machine']['python']}; "
                 f"sopkit {sk['commit'][:12]}"
                 + (f" + uncommitted changes in {', '.join(sk['dirty'])}" if sk["dirty"] else "")
                 + f". Whole suite: {results['total_seconds'] / 60:.1f} min.\n")
    if results["mode"] == "quick":
        lines.append("Quick mode: a tiny input to check that everything runs and agrees; "
                     "start-up dominates its times, so they say nothing about the targets.\n")
    lines.append("## Targets\n")
    lines.append("| target | measured | pass |")
    lines.append("|---|---|---|")
    for t in results["targets"]:
        value = f"{t['value']:,.0f} {t['unit']}" if t["unit"] in ("events/s", "MB") \
            else f"{t['value']:.2f}{t['unit']}"
        verdict = ("PASS" if t["pass"] else "FAIL") + ("" if t["measured"] else " (projected)")
        note = f" ({t['note']})" if t["note"] and not t["measured"] else ""
        lines.append(f"| {t['name']} | {value}{note} | {verdict} |")
    lines.append("")
    lines.append("## Runs\n")
    lines.append("`events/s` is events applied per second of wall time, end to end (start-up, "
                 "reading, simulating, writing the records to /dev/null). `load` is the "
                 "1-minute load average when the run started (2 means both cores were "
                 "already busy).\n")
    lines.append("| run | customers | history | until | events | wall s | CPU s | of which "
                 "system | events/s | peak RSS MB | actions | load | status |")
    lines.append("|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in results["runs"]:
        status = r["status"] + (f": {r['reason']}" if r["reason"] else "")
        if r["status"] != "ok":
            lines.append(f"| {r['id']} | {r['customers']:,} | {r['history_years']}y | "
                         f"{r['sim_years']}y | | | | | | | | | {status} |")
            continue
        load = f"{r['loadavg_before'][0]:.1f}" if r["loadavg_before"] else ""
        if r["env"]:
            status += " (" + ", ".join(f"{k}={v}" for k, v in r["env"].items()) + ")"
        lines.append(f"| {r['id']} | {r['customers']:,} | {r['history_years']}y | "
                     f"{r['sim_years']}y | {r['events']:,} | {r['wall_s']:,.1f} | "
                     f"{r['cpu_s']:,.1f} | {r['sys_s']:,.1f} | {r['events_per_s']:,.0f} | "
                     f"{r['peak_rss_mb']:,.0f} | {r['actions']:,} | {load} | {status} |")
    lines.append("")
    if results["limit_ratios"]:
        lines.append("## sopkit / limit\n")
        lines.append("CPU-time ratios (wall-time ratios in results.json). `limit` writes the "
                     "same records as sopkit; `limit-core` only counts them.\n")
        lines.append("| engine | customers | sopkit CPU s | limit CPU s | sopkit/limit "
                     "| sopkit/limit-core |")
        lines.append("|---|---:|---:|---:|---:|---:|")
        for x in results["limit_ratios"]:
            core = f"{x['cpu_ratio_vs_core']:.2f}x" if "cpu_ratio_vs_core" in x else ""
            lines.append(f"| {x['engine']} | {x['customers']:,} | {x['sopkit_cpu_s']:,.1f} | "
                         f"{x['limit_cpu_s']:,.1f} | {x['cpu_ratio']:.2f}x | {core} |")
        lines.append("")
    if results["growth"]:
        lines.append("## Cost growth: the same events until 5 years vs 1 year\n")
        lines.append("All events fall in year 1. After a customer's last purchase the churn "
                     "rules still run (owner call, recalls, dormancy) during the following "
                     "months, so year 2 holds real work; years 3-5 hold no action at all. "
                     "`2y/1y` and `idle 3y` split the growth: the cost of simulating until "
                     "year 2, and what the three quiet years 3-5 add (CPU, as a fraction of the "
                     "1-year run); `5y/2y` is the idle reading of the target (wall time). The "
                     "limit's row is the floor for this input.\n")
        lines.append("| engine | customers | 1y wall s | 5y wall s | 5y/1y wall | 5y/1y CPU "
                     "| 2y/1y CPU | idle 3y | 5y/2y wall | actions 1y | actions 2y | actions 5y |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for g in results["growth"]:
            two = f"{g['cpu_ratio_2y']:.2f}" if "cpu_ratio_2y" in g else ""
            idle = f"{g['idle_3y_cpu_over_1y']:+.2f}" if "idle_3y_cpu_over_1y" in g else ""
            actions_2y = f"{g['actions_2y']:,}" if "actions_2y" in g else ""
            five_two = f"{g['wall_ratio_5y_2y']:.2f}" if "wall_ratio_5y_2y" in g else ""
            lines.append(f"| {g['engine']} | {g['customers']:,} | {g['wall_1y_s']:,.1f} | "
                         f"{g['wall_5y_s']:,.1f} | {g['wall_ratio']:.2f} | {g['cpu_ratio']:.2f} "
                         f"| {two} | {idle} | {five_two} | {g['actions_1y']:,} | {actions_2y} "
                         f"| {g['actions_5y']:,} |")
        lines.append("")
    mem = results["memory"]
    lines.append("## Memory\n")
    if mem["vs_customers"]:
        lines.append("| engine | customers | peak RSS MB | KB per customer |")
        lines.append("|---|---:|---:|---:|")
        for m in mem["vs_customers"]:
            lines.append(f"| {m['engine']} | {m['customers']:,} | {m['peak_rss_mb']:,.0f} | "
                         f"{m['kb_per_customer']:.1f} |")
        lines.append("")
    if mem["vs_history"]:
        lines.append("History length: the same customers with a second year of events "
                     "(twice the events), simulated to the end of year 2.\n")
        lines.append("| engine | customers | events 1y | events 2y | RSS 1y MB | RSS 2y MB "
                     "| 2y/1y |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|")
        for m in mem["vs_history"]:
            lines.append(f"| {m['engine']} | {m['customers']:,} | {m['events_1y']:,} | "
                         f"{m['events_2y']:,} | {m['peak_rss_1y_mb']:,.0f} | "
                         f"{m['peak_rss_2y_mb']:,.0f} | {m['ratio']:.2f} |")
        lines.append("")
    for p in mem["projection_1m"]:
        if not p["measured"]:
            lines.append(f"- 1M customers, {p['engine']}: projected {p['peak_rss_mb']:,.0f} MB "
                         f"({p['kb_per_customer']:.2f} KB per extra customer, {p['basis']}).")
    lines.append("")
    lines.append("## Checks\n")
    for c in results["checks"]:
        lines.append(f"- **{c['name']}**: {'ok' if c['ok'] else 'FAILED'}: {c['detail']}")
    lines.append("")
    return "\n".join(lines)


def table(results: dict[str, Any]) -> str:
    """The plain-text table printed at the end of a run."""
    rows = [("run", "events", "wall s", "CPU s", "events/s", "RSS MB", "actions", "status")]
    for r in results["runs"]:
        if r["status"] == "ok":
            rows.append((r["id"], f"{r['events']:,}", f"{r['wall_s']:,.1f}", f"{r['cpu_s']:,.1f}",
                         f"{r['events_per_s']:,.0f}", f"{r['peak_rss_mb']:,.0f}",
                         f"{r['actions']:,}", "ok"))
        else:
            rows.append((r["id"], "", "", "", "", "", "", r["status"]))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                     for i, (cell, w) in enumerate(zip(row, widths, strict=True)))
           for row in rows]
    out.append("")
    for t in results["targets"]:
        verdict = ("PASS" if t["pass"] else "FAIL") + ("" if t["measured"] else " (projected)")
        out.append(f"{verdict:<17} {t['name']}: {t['value']:,.2f} {t['unit']} "
                   f"(target {t['op']} {t['target']:,g})")
    for c in results["checks"]:
        out.append(f"{'ok' if c['ok'] else 'FAILED':<17} {c['name']}")
    return "\n".join(out)


def _sizes(text: str) -> list[int]:
    return [parse_size(part) for part in text.split(",") if part.strip()]


def _engines(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in ENGINES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown engine(s) {unknown}; known: {ENGINES}")
    return names


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="End-to-end benchmarks of sopkit simulate.")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_CUSTOMERS} customers, every measurement, in seconds")
    parser.add_argument("--sizes", type=_sizes,
                        help="customers, e.g. 10k,100k,1M (default: 10k and 100k for both "
                             "engines, 1M for native)")
    parser.add_argument("--engines", type=_engines, help="native,durable (default: both)")
    parser.add_argument("--growth-sizes", type=_sizes,
                        help="sizes with a 5-year run (default: those <= 100k)")
    parser.add_argument("--history-sizes", type=_sizes,
                        help="sizes with a 2-year history run (default: those <= 10k)")
    parser.add_argument("--budget-minutes", type=float, default=45.0,
                        help="skip a run projected to take longer (0: no limit)")
    parser.add_argument("--verify-size", type=parse_size, default=10_000,
                        help="byte-compare records at the largest size <= this (default 10k)")
    parser.add_argument("--no-verify", action="store_true", help="skip the byte comparison")
    parser.add_argument("--keep-records", action="store_true",
                        help="keep the compared records under benchmarks/tmp/records")
    parser.add_argument("--profile", action=argparse.BooleanOptionalAction, default=True,
                        help="cProfile the native run into benchmarks/profile-native.txt")
    parser.add_argument("--profile-size", type=parse_size, default=10_000)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--data", type=Path, default=HERE / "data",
                        help="where generated inputs are cached")
    parser.add_argument("--scratch", type=Path, default=HERE / "tmp",
                        help="quarantine files, compared records, raw profile")
    parser.add_argument("--malloc-diagnostic", action=argparse.BooleanOptionalAction,
                        default=True, help="also run durable at the smallest size with "
                        "MALLOC_TOP_PAD_=64 MiB (a diagnostic, not a target)")
    parser.add_argument("--live", action="store_true",
                        help="run sopkit from the working tree, not from a snapshot of it")
    parser.add_argument("--render", type=Path, metavar="JSON",
                        help="only re-render the .md and the table from a results JSON")
    parser.add_argument("--results", type=Path,
                        help="results JSON (default benchmarks/results.json; quick: "
                             "benchmarks/tmp/results-quick.json); the .md goes next to it")
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.render is not None:
        rendered = json.loads(args.render.read_text(encoding="utf-8"))
        args.render.with_suffix(".md").write_text(markdown(rendered), encoding="utf-8")
        print(table(rendered))
        return 0
    if args.results is None:
        args.results = HERE / ("tmp/results-quick.json" if args.quick else "results.json")
    args.results, args.data, args.scratch = (p.resolve() for p in
                                             (args.results, args.data, args.scratch))
    started = time.perf_counter()
    suite = Suite(args)
    suite.execute()
    results = suite.results(started)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n",
                            encoding="utf-8")
    args.results.with_suffix(".md").write_text(markdown(results), encoding="utf-8")
    print(table(results))
    print(f"\nresults: {args.results} and {args.results.with_suffix('.md')}")
    failed_checks = [c for c in results["checks"] if not c["ok"]]
    failed_runs = [r for r in results["runs"] if r["status"] == "failed"]
    return 1 if failed_checks or failed_runs else 0


if __name__ == "__main__":
    sys.exit(main())
