"""For the tests of code made per playbook (fillcode.py, dumpcode.py)."""

from __future__ import annotations

import types


def code_strings(code: types.CodeType) -> set[str]:
    """Every string constant, name and variable of a code object and the code inside it."""
    found: set[str] = set()
    for const in code.co_consts:
        if isinstance(const, str):
            found.add(const)
        elif isinstance(const, types.CodeType):
            found |= code_strings(const)
    return found | set(code.co_names) | set(code.co_varnames)
