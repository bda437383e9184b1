"""sopkit's modules import each other without a cycle, function-level imports included."""

from __future__ import annotations

import ast
from pathlib import Path

import sopkit

ROOT = Path(sopkit.__file__).parent


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, here: str, package: bool, modules: set[str]) -> set[str]:
    """The sopkit modules a module imports anywhere (but under `if TYPE_CHECKING:`)."""
    found: set[str] = set()

    def target(name: str) -> None:
        while name and name not in modules:  # `from pkg import name`: name may be an object
            name = name.rpartition(".")[0]
        if name and name != here:
            found.add(name)

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("sopkit"):
                    target(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = here.split(".")
                keep = len(parts) - node.level + (1 if package else 0)
                base = ".".join(parts[:keep] + ([base] if base else []))
            if base.startswith("sopkit"):
                for alias in node.names:
                    target(f"{base}.{alias.name}")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def graph() -> dict[str, set[str]]:
    """Each sopkit module and the sopkit modules it imports."""
    paths = {_module(p): p for p in ROOT.rglob("*.py")}
    modules = set(paths)
    return {name: _imports(ast.parse(path.read_text("utf-8")), name,
                           path.name == "__init__.py", modules)
            for name, path in paths.items()}


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the modules along it, or None. A package's `__init__` importing
    its own submodules is not counted: that is how a package re-exports its names."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(name: str) -> list[str] | None:
        state[name] = 1
        stack.append(name)
        for dep in sorted(edges.get(name, ())):
            if dep.startswith(name + "."):  # a package's own submodule
                continue
            if state.get(dep) == 1:
                return [*stack[stack.index(dep):], dep]
            if dep not in state:
                found = walk(dep)
                if found:
                    return found
        stack.pop()
        state[name] = 2
        return None

    for name in sorted(edges):
        if name not in state:
            found = walk(name)
            if found:
                return found
    return None


def test_no_import_cycle() -> None:
    """No sopkit module imports itself back through others, at load time or in a function."""
    cycle = _cycle(graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_the_checker_sees_function_level_cycles() -> None:
    """A cycle made only by an import inside a function is found (the test can fail)."""
    code = {"sopkit.a": "import sopkit.b\n",
            "sopkit.b": "def f():\n    from sopkit import a\n"}
    modules = set(code) | {"sopkit"}
    edges = {name: _imports(ast.parse(text), name, False, modules)
             for name, text in code.items()}
    assert _cycle(edges) in (["sopkit.a", "sopkit.b", "sopkit.a"],
                             ["sopkit.b", "sopkit.a", "sopkit.b"])
    typed = {"sopkit.b": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                         "    from sopkit import a\n"}
    edges["sopkit.b"] = _imports(ast.parse(typed["sopkit.b"]), "sopkit.b", False, modules)
    assert _cycle(edges) is None
