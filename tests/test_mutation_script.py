"""benchmarks/mutation.py, the mutation-testing script: the mutants it makes, and that a run
scores them without ever changing the repository it tests (it works on copies)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sopkit_mutation",
                                                  ROOT / "benchmarks" / "mutation.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


mutation = _load()

SOURCE = '''\
"""A tiny module: a limit that is tested, and a helper that is not."""


def limit(n: int) -> bool:
    """Under ten (说明: 十以下)."""
    return n < 10


def untested(n: int) -> int:
    return n + 1
'''

TEST = '''\
from pkg.mod import limit


def test_limit() -> None:
    assert limit(9) and not limit(10)
'''


def test_the_known_mutants_are_made_and_change_only_their_span() -> None:
    """`<` becomes `<=` (and the other operators fire), each changing nothing else."""
    source = ("def f(x: int, y: bool) -> int:\n"
              "    if x < 3 and y:  # 中文注释\n"
              "        return 1\n"
              "    return 0\n").encode()
    mutants = mutation.generate("m.py", source)
    by_change = {m.change: m for m in mutants}
    flipped = by_change["`<` -> `<=`"]
    assert flipped.apply(source).decode() == source.decode().replace("x < 3", "x <= 3")
    assert by_change["`and` -> `or`"].apply(source).decode().splitlines()[1] == \
        "    if x < 3 or y:  # 中文注释"
    assert by_change["`if` condition negated"].apply(source).decode().splitlines()[1] == \
        "    if (not (x < 3 and y)):  # 中文注释"
    assert {"`3` -> `4`", "`3` -> `2`", "`1` -> `2`", "`0` -> `-1`"} <= set(by_change)
    removed = [m.line for m in mutants if m.change == "`return` statement removed"]
    assert removed == [3, 4]
    assert {m.operator for m in mutants} == {"cmp", "bool", "const", "negate", "remove"}


def test_docstrings_annotations_and_type_checking_blocks_are_not_mutated() -> None:
    """No mutant touches a docstring, a `...` body, an annotation or a TYPE_CHECKING import."""
    source = (b'"""Doc."""\n'
              b"from typing import TYPE_CHECKING\n"
              b"if TYPE_CHECKING:\n"
              b"    import os\n"
              b"def f(x: int = 1) -> int:\n"
              b'    """Doc."""\n'
              b"    return x\n"
              b"def g() -> None:\n"
              b"    ...\n")
    changes = sorted(m.change for m in mutation.generate("m.py", source))
    assert changes == ["`1` -> `0`", "`1` -> `2`", "`return` statement removed"]


@pytest.mark.slow
def test_a_run_scores_mutants_and_leaves_the_original_byte_identical(tmp_path: Path) -> None:
    """On a tiny fake project: the tested function's mutants die, the untested one's live,
    an equivalent is left out of the score, and the module's bytes never change."""
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "tests").mkdir()
    (repo / "pkg" / "__init__.py").write_text("", encoding="utf-8")
    module = repo / "pkg" / "mod.py"
    module.write_text(SOURCE, encoding="utf-8")
    (repo / "tests" / "test_mod.py").write_text(TEST, encoding="utf-8")
    before = hashlib.sha256(module.read_bytes()).hexdigest()
    equivalent = tmp_path / "equivalent.txt"
    equivalent.write_text("# survivors judged equivalent\n"
                          "pkg/mod.py | 15 | return n + 1 | `1` -> `2` | "
                          "a test fixture: pretend nobody can tell\n", encoding="utf-8")
    results = tmp_path / "out" / "results.json"
    code = mutation.main(["--root", str(repo), "--module", "pkg/mod.py", "--tests",
                          "tests/test_mod.py", "--results", str(results), "--equivalent",
                          str(equivalent), "--timeout", "120"])
    assert code == 0
    assert hashlib.sha256(module.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in repo.rglob("*") if p.is_file()) == [
        "__init__.py", "mod.py", "test_mod.py"]
    data = json.loads(results.read_text(encoding="utf-8"))
    status = {(o["line"], o["change"]): o["status"] for o in data["mutants"]}
    assert status == {
        (6, "`return` statement removed"): "killed", (6, "`<` -> `<=`"): "killed",
        (6, "`10` -> `11`"): "killed", (6, "`10` -> `9`"): "killed",
        (10, "`return` statement removed"): "survived", (10, "`+` -> `-`"): "survived",
        (10, "`1` -> `2`"): "equivalent", (10, "`1` -> `0`"): "survived"}
    assert data["modules"]["pkg/mod.py"] == {
        "mutants": 8, "run": 8, "killed": 4, "timeout": 0, "survived": 3, "equivalent": 1,
        "error": 0, "score": round(4 / 7, 3)}
    report = results.with_suffix(".md").read_text(encoding="utf-8")
    assert "| pkg/mod.py | 8 | 8 | 4 | 0 | 3 | 1 | 0 | 57.1% |" in report
    assert "- `pkg/mod.py:10` `+` -> `-`: `return n + 1`" in report
