"""Mutation testing of sopkit's core modules: do the tests notice when the code is wrong?

Each *mutant* is the module with one small change (docs/testing.md#mutation-testing):

    cmp       a comparison flipped: < <=, > >=, == !=, in / not in, is / is not
    bool      `and` <-> `or`
    arith     + <-> -, * <-> /, // <-> *
    const     an integer constant +1 or -1, True <-> False
    negate    an `if`, `while` or conditional expression's condition negated
    remove    a simple statement inside a function replaced by `pass`

The change is spliced into the source text (everything else stays byte for byte), written
into a *copy* of the repository (one per job, under a temporary directory), and the tests
mapped to that module (TEST_MAP, or --tests) run there with `pytest -x` and a time limit.
A failing, erroring or timed-out test run *kills* the mutant; a passing one lets it
*survive*. The files of the repository itself are never written.

Survivors judged equivalent (the program behaves the same, e.g. a bound that no input can
reach) are listed in tests/mutation-equivalent.txt, one a line:

    <module> | <column> | <source line, stripped> | <change> | <one-line reason>

and are left out of the score: killed / (killed + survived), per module. The results go to
benchmarks/mutation-results.json and .md. Not part of `make test` (a full run takes hours).

    python benchmarks/mutation.py --module _runtime/policy --sample 40 --seed 1 --jobs 1
    python benchmarks/mutation.py --module sopkit/_lang/expr.py --list
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CORE = ("sopkit/_runtime/runtime.py", "sopkit/_runtime/inputs.py", "sopkit/_runtime/facts.py",
        "sopkit/_runtime/actions.py", "sopkit/_runtime/core.py", "sopkit/_runtime/coordinator.py",
        "sopkit/_runtime/firings.py", "sopkit/_runtime/metrics.py", "sopkit/_runtime/windows.py",
        "sopkit/_runtime/policy.py", "sopkit/_lang/expr.py", "sopkit/_live/store.py",
        "sopkit/_live/storesql.py", "sopkit/_live/sqlitestore.py", "sopkit/_live/pgstore.py",
        "sopkit/_live/openstore.py", "sopkit/_runtime/campaigns.py", "sopkit/_live/dispatch.py",
        "sopkit/_runtime/state.py")
# the store's modules share one list of tests
_STORE_TESTS = ("tests/test_store.py", "tests/test_behaviours_store.py",
                "tests/test_behaviours_store_3.py", "tests/test_outbox_cli.py",
                "tests/test_migrate.py", "tests/test_store_open_cli.py", "tests/test_loop_lock.py")
# the tests that exercise each core module, the quickest and most focused first (-x stops
# at the first failure, so a mutant is usually killed by the first file)
TEST_MAP: dict[str, tuple[str, ...]] = {
    "sopkit/_runtime/runtime.py": ("tests/test_runtime_errors.py", "tests/test_semantics.py",
                           "tests/test_embedding.py", "tests/test_behaviours_runtime.py",
                           "tests/test_runtime_persistence.py", "tests/test_handover.py",
                           "tests/test_behaviours_runtime_3.py"),
    "sopkit/_runtime/inputs.py": ("tests/test_input_hardening.py", "tests/test_semantics.py",
                          "tests/test_behaviours_runtime.py", "tests/test_embedding.py",
                          "tests/test_behaviours_inputs_4.py"),
    "sopkit/_runtime/facts.py": ("tests/test_semantics.py", "tests/test_rfm.py",
                         "tests/test_clv.py", "tests/test_campaigns.py",
                         "tests/test_explain.py", "tests/test_behaviours_runtime_3.py",
                         "tests/test_behaviours_facts_4.py"),
    "sopkit/_runtime/actions.py": ("tests/test_semantics.py", "tests/test_behaviours_policy.py",
                           "tests/test_policy.py", "tests/test_campaigns.py",
                           "tests/test_behaviours_campaigns.py", "tests/test_embedding.py",
                           "tests/test_behaviours_policy_3.py",
                           "tests/test_behaviours_runtime_3.py", "tests/test_behaviours_runtime.py",
                           "tests/test_behaviours_actions_4.py"),
    "sopkit/_runtime/core.py": ("tests/test_semantics.py", "tests/test_window_wakeups.py",
                        "tests/test_window_refunds.py", "tests/test_wakeup_heap.py",
                        "tests/test_behaviours_runtime.py", "tests/test_runtime_persistence.py",
                        "tests/test_behaviours_runtime_3.py", "tests/test_behaviours_core_4.py"),
    "sopkit/_runtime/coordinator.py": ("tests/test_handover.py", "tests/test_rfm.py",
                               "tests/test_clv.py", "tests/test_semantics.py",
                               "tests/test_campaigns.py", "tests/test_behaviours_runtime.py",
                               "tests/test_behaviours_runtime_3.py"),
    "sopkit/_runtime/firings.py": ("tests/test_campaigns.py",
                                   "tests/test_behaviours_campaigns.py",
                                   "tests/test_behaviours_campaigns_3.py",
                                   "tests/test_campaign_wecom.py",
                                   "tests/test_behaviours_firings_4.py"),
    "sopkit/_runtime/metrics.py": ("tests/test_metrics.py", "tests/test_behaviours_metrics.py",
                           "tests/test_window_refunds.py", "tests/test_window_wakeups.py",
                           "tests/test_semantics.py", "tests/test_metric_state.py",
                           "tests/test_metric_dump.py", "tests/test_behaviours_windows.py"),
    "sopkit/_runtime/windows.py": ("tests/test_metrics.py", "tests/test_window_refunds.py",
                           "tests/test_behaviours_windows.py", "tests/test_window_wakeups.py",
                           "tests/test_behaviours_windows_3.py",
                           "tests/test_metric_state.py", "tests/test_metric_dump.py",
                           "tests/test_semantics.py"),
    "sopkit/_runtime/policy.py": ("tests/test_behaviours_policy.py",
                                  "tests/test_behaviours_policy_3.py", "tests/test_policy.py"),
    "sopkit/_lang/expr.py": ("tests/test_semantics.py", "tests/test_compile.py",
                        "tests/test_behaviours_check.py", "tests/test_behaviours_expr_3.py",
                        "tests/test_check.py", "tests/test_lint.py"),
    "sopkit/_live/store.py": _STORE_TESTS,
    "sopkit/_live/storesql.py": _STORE_TESTS,
    "sopkit/_live/sqlitestore.py": _STORE_TESTS,
    "sopkit/_live/pgstore.py": _STORE_TESTS,
    "sopkit/_live/openstore.py": _STORE_TESTS,
    "sopkit/_runtime/campaigns.py": ("tests/test_campaigns.py",
                                     "tests/test_behaviours_campaigns.py",
                                     "tests/test_behaviours_campaigns_3.py",
                                     "tests/test_campaign_wecom.py"),
    "sopkit/_runtime/state.py": ("tests/test_codec.py", "tests/test_migrate_property.py",
                         "tests/test_migrate.py", "tests/test_runtime_persistence.py",
                         "tests/test_behaviours_state.py", "tests/test_embedding.py"),
    "sopkit/_live/dispatch.py": ("tests/test_dispatch.py", "tests/test_behaviours_dispatch.py",
                            "tests/test_behaviours_dispatch_3.py",
                            "tests/test_embedding.py", "tests/test_outbox_cli.py",
                            "tests/test_golive.py", "tests/test_live.py"),
}
RESULTS = ROOT / "benchmarks" / "mutation-results.json"
EQUIVALENT = ROOT / "tests" / "mutation-equivalent.txt"
TARGET = 0.90
SKIP_COPY = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.pyc", ".mypy_cache",
                                   ".ruff_cache", ".pytest_cache", ".hypothesis", "*.egg-info",
                                   "demo-*")

CMP_SWAP = {ast.Lt: "<=", ast.LtE: "<", ast.Gt: ">=", ast.GtE: ">", ast.Eq: "!=",
            ast.NotEq: "==", ast.In: "not in", ast.NotIn: "in", ast.Is: "is not",
            ast.IsNot: "is"}
CMP_TEXT = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==",
            ast.NotEq: "!=", ast.In: "in", ast.NotIn: "not in", ast.Is: "is",
            ast.IsNot: "is not"}
ARITH_SWAP = {ast.Add: ("+", "-"), ast.Sub: ("-", "+"), ast.Mult: ("*", "/"),
              ast.Div: ("/", "*"), ast.FloorDiv: ("//", "*")}
REMOVABLE = (ast.Expr, ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Return, ast.Raise,
             ast.Delete, ast.Continue, ast.Break)


@dataclass(frozen=True)
class Mutant:
    """One change to one module: the byte span it replaces and the text put there."""

    module: str
    line: int
    col: int
    start: int  # byte offsets into the module's source
    end: int
    replacement: str
    operator: str
    change: str  # human-readable, e.g. "`<` -> `<=`"
    line_text: str

    @property
    def key(self) -> str:
        """What tests/mutation-equivalent.txt names it by (survives lines moving)."""
        return f"{self.module} | {self.col} | {self.line_text} | {self.change}"

    def apply(self, source: bytes) -> bytes:
        return source[:self.start] + self.replacement.encode() + source[self.end:]


# -- generating mutants ----------------------------------------------------------------------

class _Source:
    def __init__(self, module: str, source: bytes) -> None:
        self.module = module
        self.source = source
        self.lines = source.split(b"\n")
        self.starts = [0]
        for line in self.lines:
            self.starts.append(self.starts[-1] + len(line) + 1)

    def offset(self, line: int, col: int) -> int:
        return self.starts[line - 1] + col

    def span(self, node: ast.expr | ast.stmt) -> tuple[int, int]:
        end_line = node.end_lineno if node.end_lineno is not None else node.lineno
        end_col = node.end_col_offset if node.end_col_offset is not None else node.col_offset
        return self.offset(node.lineno, node.col_offset), self.offset(end_line, end_col)

    def text(self, start: int, end: int) -> str:
        return self.source[start:end].decode()

    def mutant(self, node: ast.expr | ast.stmt, start: int, end: int, replacement: str,
               operator: str, change: str) -> Mutant:
        return Mutant(self.module, node.lineno, node.col_offset, start, end, replacement,
                      operator, change, self.lines[node.lineno - 1].decode().strip())


def _gap_swap(src: _Source, gap: tuple[int, int], pattern: str, new: str) -> tuple[int, int,
                                                                                  str] | None:
    """The gap between two operands with its operator token replaced, or None."""
    text = src.text(*gap)
    found = re.search(pattern, text)
    if found is None:
        return None
    return gap[0], gap[1], text[:found.start()] + new + text[found.end():]


def _cmp_pattern(op: type[ast.cmpop]) -> str:
    words: dict[type[ast.cmpop], str] = {
        ast.In: r"(?<![\w])in(?![\w])", ast.NotIn: r"not\s+in(?![\w])",
        ast.Is: r"(?<![\w])is(?!\s+not)(?![\w])", ast.IsNot: r"is\s+not(?![\w])"}
    return words.get(op, re.escape(CMP_TEXT[op]) + r"(?![=<>])")


def _children(node: ast.AST) -> Iterator[ast.AST]:
    """Child nodes, leaving out annotations, docstrings and f-strings (no positions there)."""
    for name, value in ast.iter_fields(node):
        if name in ("annotation", "returns", "type_comment", "decorator_list"):
            continue
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, ast.AST) and not isinstance(item, ast.JoinedStr):
                yield item


def _is_inert(stmt: ast.stmt) -> bool:
    """A docstring or a `...` body: removing it changes nothing."""
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and \
        (isinstance(stmt.value.value, str) or stmt.value.value is Ellipsis)


def _is_type_checking(stmt: ast.AST) -> bool:
    return isinstance(stmt, ast.If) and isinstance(stmt.test, ast.Name) and \
        stmt.test.id == "TYPE_CHECKING"


def generate(module: str, source: bytes) -> list[Mutant]:
    """Every mutant of a module, in source order."""
    src = _Source(module, source)
    tree = ast.parse(source)
    out: list[Mutant] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        if _is_type_checking(node):
            return
        line = getattr(node, "lineno", None)
        if line is not None and b"pragma: no mutate" in src.lines[line - 1]:
            return
        out.extend(_mutants_of(src, node, in_function))
        inner = in_function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef |
                                          ast.Lambda)
        for child in _children(node):
            visit(child, inner)

    visit(tree, False)
    valid = []
    for m in out:
        try:
            compile(m.apply(source), module, "exec")
        except SyntaxError:
            continue
        valid.append(m)
    valid.sort(key=lambda m: (m.start, m.operator, m.replacement))
    seen: dict[str, int] = {}
    named = []
    for m in valid:  # the same change on the same text elsewhere: numbered in source order
        seen[m.key] = seen.get(m.key, 0) + 1
        named.append(m if seen[m.key] == 1 else replace(m, change=f"{m.change} #{seen[m.key]}"))
    return named


def _mutants_of(src: _Source, node: ast.AST, in_function: bool) -> Iterator[Mutant]:
    if isinstance(node, ast.Compare):
        operands = [node.left, *node.comparators]
        for i, op in enumerate(node.ops):
            gap = (src.span(operands[i])[1], src.span(operands[i + 1])[0])
            new = _gap_swap(src, gap, _cmp_pattern(type(op)), CMP_SWAP[type(op)])
            if new:
                yield src.mutant(node, *new, "cmp",
                                 f"`{CMP_TEXT[type(op)]}` -> `{CMP_SWAP[type(op)]}`")
    elif isinstance(node, ast.BoolOp):
        old, new_word = ("and", "or") if isinstance(node.op, ast.And) else ("or", "and")
        start, end = src.span(node)
        text = src.text(start, end)
        pieces = []
        cursor = start
        for a, b in zip(node.values, node.values[1:], strict=False):
            gap = (src.span(a)[1], src.span(b)[0])
            swapped = _gap_swap(src, gap, rf"(?<![\w]){old}(?![\w])", new_word)
            if swapped is None:
                return
            pieces.append(src.text(cursor, gap[0]) + swapped[2])
            cursor = gap[1]
        pieces.append(src.text(cursor, end))
        if "".join(pieces) != text:
            yield src.mutant(node, start, end, "".join(pieces), "bool",
                             f"`{old}` -> `{new_word}`")
    elif isinstance(node, ast.BinOp) and type(node.op) in ARITH_SWAP:
        old, new_op = ARITH_SWAP[type(node.op)]
        gap = (src.span(node.left)[1], src.span(node.right)[0])
        swapped = _gap_swap(src, gap, re.escape(old) + r"(?![=/*])", new_op)
        if swapped:
            yield src.mutant(node, *swapped, "arith", f"`{old}` -> `{new_op}`")
    elif isinstance(node, ast.Constant) and isinstance(node.value, bool):
        start, end = src.span(node)
        yield src.mutant(node, start, end, str(not node.value), "const",
                         f"`{node.value}` -> `{not node.value}`")
    elif isinstance(node, ast.Constant) and isinstance(node.value, int):
        start, end = src.span(node)
        for delta in (1, -1):
            yield src.mutant(node, start, end, str(node.value + delta), "const",
                             f"`{src.text(start, end)}` -> `{node.value + delta}`")
    if isinstance(node, ast.If | ast.While | ast.IfExp):
        start, end = src.span(node.test)
        yield src.mutant(node.test, start, end, f"(not ({src.text(start, end)}))", "negate",
                         f"`{type(node).__name__.lower()}` condition negated")
    if in_function and isinstance(node, REMOVABLE) and not _is_inert(node):
        start, end = src.span(node)
        yield src.mutant(node, start, end, "pass", "remove",
                         f"`{type(node).__name__.lower()}` statement removed")


# -- equivalents -------------------------------------------------------------------------------

def read_equivalent(path: Path) -> dict[str, str]:
    """Keys of survivors judged equivalent -> the reason."""
    if not path.exists():
        return {}
    out: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split(" | ")]
        if len(parts) < 5 or not parts[-1]:
            raise SystemExit(f"{path}:{number}: expected '<module> | <column> | <source line> "
                             f"| <change> | <reason>'")
        key = " | ".join([parts[0], parts[1], " | ".join(parts[2:-2]), parts[-2]])
        out[key] = parts[-1]
    return out


# -- running -----------------------------------------------------------------------------------

@dataclass
class Outcome:
    key: str
    module: str
    line: int
    operator: str
    change: str
    line_text: str
    status: str  # killed | timeout | survived | equivalent | error
    seconds: float
    detail: str = ""


def _pytest(copy: Path, tests: Sequence[str], timeout: float) -> tuple[str, float, str]:
    """Run the tests in a copy: (killed | survived | timeout | error, seconds, detail)."""
    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1",
           "PYTHONHASHSEED": "0"}
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
               "--timeout", str(int(timeout)), *tests]
    began = time.monotonic()
    proc = subprocess.Popen(command, cwd=copy, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return "timeout", time.monotonic() - began, f"over {timeout:.0f} s"
    seconds = time.monotonic() - began
    last = output.decode(errors="replace").strip().splitlines()[-1:] or [""]
    if proc.returncode == 0:
        return "survived", seconds, last[0]
    if proc.returncode in (1, 2):  # tests failed, or collection broke (an import error)
        return "killed", seconds, last[0]
    return "error", seconds, f"pytest exit {proc.returncode}: {last[0]}"


def run(mutants: Sequence[Mutant], tests: dict[str, Sequence[str]], root: Path, jobs: int,
        timeout: float | None, equivalent: dict[str, str],
        log: Any = sys.stderr,
        progress: Callable[[list[Outcome], dict[str, float]], None] | None = None,
        ) -> tuple[list[Outcome], dict[str, float]]:
    """Run every mutant in copies of `root`; the outcomes, and each module's baseline time.
    `progress` gets the outcomes so far after each mutant (to write partial results)."""
    originals = {m.module: (root / m.module).read_bytes() for m in mutants}
    outcomes: list[Outcome] = []
    todo = [m for m in mutants if m.key not in equivalent]
    for m in mutants:
        if m.key in equivalent:
            outcomes.append(Outcome(m.key, m.module, m.line, m.operator, m.change, m.line_text,
                                    "equivalent", 0.0, equivalent[m.key]))
    baselines: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="sopkit-mutation-") as scratch:
        copies = []
        for i in range(max(1, jobs)):
            copy = Path(scratch) / f"w{i}"
            shutil.copytree(root, copy, ignore=SKIP_COPY)
            copies.append(copy)
        for module in sorted({m.module for m in todo}):
            status, seconds, detail = _pytest(copies[0], tests[module], 3600)
            if status != "survived":
                raise SystemExit(f"the tests of {module} do not pass unmutated ({detail}); "
                                 "fix them first")
            baselines[module] = round(seconds, 1)
            print(f"baseline {module}: {seconds:.1f} s", file=log, flush=True)
        queue = list(todo)
        lock = threading.Lock()

        def worker(copy: Path) -> None:
            while True:
                with lock:
                    if not queue:
                        return
                    m = queue.pop(0)
                target = copy / m.module
                limit = timeout or max(30.0, 3 * baselines[m.module] + 10)
                try:
                    target.write_bytes(m.apply(originals[m.module]))
                    status, seconds, detail = _pytest(copy, tests[m.module], limit)
                finally:
                    target.write_bytes(originals[m.module])
                outcome = Outcome(m.key, m.module, m.line, m.operator, m.change, m.line_text,
                                  status, round(seconds, 1), detail)
                with lock:
                    outcomes.append(outcome)
                    print(f"[{len(outcomes)}/{len(mutants)}] {status:8} {m.module}:{m.line} "
                          f"{m.change}  ({seconds:.1f} s)", file=log, flush=True)
                    if progress is not None:
                        progress(list(outcomes), baselines)

        threads = [threading.Thread(target=worker, args=(c,)) for c in copies]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for module, data in originals.items():
        if (root / module).read_bytes() != data:
            raise SystemExit(f"BUG: {module} changed during the run")
    return sorted(outcomes, key=lambda o: (o.module, o.line, o.key)), baselines


# -- results -----------------------------------------------------------------------------------

def scores(outcomes: Sequence[Outcome], totals: dict[str, int]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for module in sorted(totals):
        mine = [o for o in outcomes if o.module == module]
        count = {s: sum(1 for o in mine if o.status == s)
                 for s in ("killed", "timeout", "survived", "equivalent", "error")}
        judged = count["killed"] + count["timeout"] + count["survived"]
        score = (count["killed"] + count["timeout"]) / judged if judged else None
        out[module] = {"mutants": totals[module], "run": len(mine), **count,
                       "score": None if score is None else round(score, 3)}
    return out


def write_results(path: Path, outcomes: Sequence[Outcome], totals: dict[str, int],
                  baselines: dict[str, float], settings: dict[str, Any],
                  created: str | None = None) -> None:
    table = scores(outcomes, totals)
    data = {"schema_version": 1,
            "created": created or dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "settings": settings, "target": TARGET, "baseline_seconds": baselines,
            "modules": table, "mutants": [asdict(o) for o in outcomes]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    lines = ["# sopkit mutation testing", "",
             f"Created {data['created']} by `python benchmarks/mutation.py "
             f"{settings['argv']}`."
             + ("" if settings.get("complete", True) else
                f" **Partial**: {len(outcomes)} of {settings['planned']} mutants run so far."),
             "",
             "Score = killed / (killed + survived); timeouts count as killed; equivalent "
             "mutants (tests/mutation-equivalent.txt) are left out. "
             f"Target: {TARGET:.0%} per module.", "",
             "| module | mutants | run | killed | timeout | survived | equivalent | error "
             "| score |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for module, row in table.items():
        score = "n/a" if row["score"] is None else f"{row['score']:.1%}"
        lines.append(f"| {module} | {row['mutants']} | {row['run']} | {row['killed']} | "
                     f"{row['timeout']} | {row['survived']} | {row['equivalent']} | "
                     f"{row['error']} | {score} |")
    survivors = [o for o in outcomes if o.status == "survived"]
    lines += ["", f"## Surviving mutants ({len(survivors)})", ""]
    lines += [f"- `{o.module}:{o.line}` {o.change}: `{o.line_text}`" for o in survivors] or \
        ["None."]
    errors = [o for o in outcomes if o.status == "error"]
    if errors:
        lines += ["", "## Errors (not scored)", ""]
        lines += [f"- `{o.module}:{o.line}` {o.change}: {o.detail}" for o in errors]
    path.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def rescore(path: Path, equivalent: dict[str, str]) -> int:
    """Apply the current list of equivalents to a results file, run nothing."""
    data = json.loads(path.read_text(encoding="utf-8"))
    outcomes = [Outcome(**o) for o in data["mutants"]]
    for o in outcomes:
        if o.key in equivalent:
            o.status, o.detail = "equivalent", equivalent[o.key]
    totals = {module: row["mutants"] for module, row in data["modules"].items()}
    write_results(path, outcomes, totals, data["baseline_seconds"], data["settings"],
                  created=data["created"])
    _print_scores(outcomes, totals)
    return 0


def _print_scores(outcomes: Sequence[Outcome], totals: dict[str, int]) -> None:
    for module, row in scores(outcomes, totals).items():
        score = "n/a" if row["score"] is None else f"{row['score']:.1%}"
        print(f"{module}: {score} ({row['killed'] + row['timeout']} killed, "
              f"{row['survived']} survived, {row['equivalent']} equivalent, "
              f"{row['error']} errors; {row['run']} of {row['mutants']} mutants run)")


# -- command line ------------------------------------------------------------------------------

def _module_path(name: str, root: Path) -> str:
    for candidate in (name, f"sopkit/{name}", f"sopkit/{name}.py", f"{name}.py"):
        if (root / candidate).is_file():
            return Path(candidate).as_posix()
    raise SystemExit(f"no module '{name}' under {root} (e.g. _policy or sopkit/_runtime/policy.py)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--module", action="append", default=[],
                        help="a module to mutate (repeatable; default: the core modules)")
    parser.add_argument("--sample", type=int, default=None,
                        help="run N randomly chosen mutants per module (default: all)")
    parser.add_argument("--seed", type=int, default=1, help="seed of --sample (default 1)")
    parser.add_argument("--jobs", type=int, default=1, help="mutants run at once (default 1)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds per mutant (default: 3 x the unmutated run + 10, >= 30)")
    parser.add_argument("--tests", nargs="+", default=None,
                        help="test files to run for every module (default: TEST_MAP)")
    parser.add_argument("--root", type=Path, default=ROOT, help="the repository (copied)")
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help="the JSON results file; the .md is written beside it")
    parser.add_argument("--equivalent", type=Path, default=EQUIVALENT,
                        help="survivors judged equivalent (default tests/mutation-equivalent.txt)")
    parser.add_argument("--list", action="store_true", help="print the mutants, run nothing")
    parser.add_argument("--rescore", action="store_true",
                        help="re-read --equivalent and rewrite the results of the last run "
                             "(--results) without running anything")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    if args.rescore:
        return rescore(args.results, read_equivalent(args.equivalent))
    modules = [_module_path(m, root) for m in args.module] or list(CORE)
    tests: dict[str, Sequence[str]] = {}
    for module in modules:
        chosen = args.tests or TEST_MAP.get(module)
        if not chosen:
            raise SystemExit(f"no tests mapped to {module}; pass --tests")
        # a mapped file not written yet (a module's own tests/test_behaviours_*.py) is skipped
        tests[module] = [t for t in chosen if args.tests or (root / t).is_file()]
    equivalent = read_equivalent(args.equivalent)
    rng = random.Random(args.seed)
    chosen_mutants: list[Mutant] = []
    totals: dict[str, int] = {}
    for module in modules:
        every = generate(module, (root / module).read_bytes())
        totals[module] = len(every)
        picked = every if args.sample is None or args.sample >= len(every) else \
            sorted(rng.sample(every, args.sample), key=lambda m: m.start)
        chosen_mutants += picked
    if args.list:
        for m in chosen_mutants:
            print(f"{m.module}:{m.line}:{m.col} [{m.operator}] {m.change}: {m.line_text}")
        print(f"{len(chosen_mutants)} mutants", file=sys.stderr)
        return 0
    shown = " ".join(sys.argv[1:] if argv is None else argv)
    settings = {"argv": shown, "sample": args.sample, "seed": args.seed, "jobs": args.jobs,
                "timeout": args.timeout, "tests": {m: list(t) for m, t in tests.items()},
                "planned": len(chosen_mutants), "complete": False}

    def partial(so_far: list[Outcome], baselines: dict[str, float]) -> None:
        ordered = sorted(so_far, key=lambda o: (o.module, o.line, o.key))
        write_results(args.results, ordered, totals, baselines, settings)

    outcomes, baselines = run(chosen_mutants, tests, root, args.jobs, args.timeout, equivalent,
                              progress=partial)
    write_results(args.results, outcomes, totals, baselines, {**settings, "complete": True})
    _print_scores(outcomes, totals)
    print(f"results: {args.results} and {args.results.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
