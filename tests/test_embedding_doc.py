"""docs/embedding.md is a program: its Python blocks run in order and print what its output
blocks say, and they type-check with `mypy --strict` as a host's code."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "embedding.md"
MARK = "\0"


def _blocks() -> list[tuple[str, str]]:
    """(python code, the output block right after it or "") in document order."""
    text = DOC.read_text(encoding="utf-8")
    fences = list(re.finditer(r"```(python|text)\n(.*?)```", text, re.DOTALL))
    out: list[tuple[str, str]] = []
    for i, fence in enumerate(fences):
        if fence.group(1) != "python":
            continue
        after = fences[i + 1] if i + 1 < len(fences) else None
        shown = after.group(2) if after is not None and after.group(1) == "text" else ""
        out.append((fence.group(2), shown))
    return out


def _setup(tmp: Path) -> dict[str, str]:
    shutil.copytree(ROOT / "examples" / "crm", tmp / "examples" / "crm")
    return {**os.environ, "PYTHONPATH": str(ROOT), "MYPYPATH": str(ROOT)}


def test_the_worked_integration_prints_what_the_page_shows(tmp_path: Path) -> None:
    """Every Python block of docs/embedding.md runs, in order, in a fresh directory, and
    prints exactly the output block that follows it (nothing where none follows)."""
    blocks = _blocks()
    assert len(blocks) >= 10
    program = "".join(f"{code}print({MARK!r})\n" for code, _ in blocks)
    (tmp_path / "crm_app.py").write_text(program, encoding="utf-8")
    done = subprocess.run([sys.executable, "crm_app.py"], cwd=tmp_path, env=_setup(tmp_path),
                          capture_output=True, text=True, check=False, timeout=300)
    assert done.returncode == 0, done.stderr
    printed = done.stdout.split(f"{MARK}\n")
    assert printed[-1] == ""
    for (code, shown), got in zip(blocks, printed, strict=False):
        assert got == shown, f"the block starting {code[:60]!r} printed:\n{got}"


def test_the_worked_integration_type_checks_strictly(tmp_path: Path) -> None:
    """The page's code, as one host module outside the repository, passes mypy --strict."""
    program = "".join(code for code, _ in _blocks())
    (tmp_path / "crm_app.py").write_text(program, encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                           "--cache-dir", str(tmp_path / "cache"), "crm_app.py"],
                          cwd=tmp_path, env=_setup(tmp_path), capture_output=True, text=True,
                          check=False, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
