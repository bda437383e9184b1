"""Rewrite every golden `.expected` file of `sopkit check` from the current output.

For humans only; the test suite never runs it. Each case in `tests/cases/invalid/` is a
playbook `<name>.toml` with exactly one mistake, and `<name>.expected` holds the exact
stdout of `sopkit check tests/cases/invalid/<name>.toml` run from the repository root.
Files under `tests/cases/invalid/fragments/` are included by cases and are not cases.

Usage, from anywhere:

    .venv/bin/python tests/regen_goldens.py            # rewrite every .expected
    .venv/bin/python tests/regen_goldens.py NAME ...   # rewrite only these cases

After running it, READ `git diff tests/cases/invalid` before committing: a golden file is
only worth something if a person judged the message (right file:line:column, key path,
clear message, useful hint). A case whose check does not exit with 1 is reported and its
`.expected` is left alone.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
CASES = Path("tests", "cases", "invalid")


def main(names: list[str]) -> int:
    os.chdir(ROOT)  # problems print paths relative to the repository root
    from sopkit._cli.app import app

    cases = sorted(CASES.glob("*.toml"))
    if names:
        wanted = {name.removesuffix(".toml") for name in names}
        unknown = wanted - {case.stem for case in cases}
        if unknown:
            print(f"no such case: {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
        cases = [case for case in cases if case.stem in wanted]
    runner = CliRunner()
    failed = 0
    for case in cases:
        result = runner.invoke(app, ["check", case.as_posix()])
        if result.exit_code != 1:
            print(f"{case}: exit code {result.exit_code}, expected 1; not rewritten",
                  file=sys.stderr)
            failed += 1
            continue
        expected = case.with_suffix(".expected")
        old = expected.read_text(encoding="utf-8") if expected.exists() else None
        if old != result.stdout:
            expected.write_text(result.stdout, encoding="utf-8", newline="\n")
            print(f"{expected}: {'written' if old is None else 'updated'}")
    print(f"{len(cases)} cases, {failed} not rewritten")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
