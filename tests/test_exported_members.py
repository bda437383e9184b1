"""The public API is exactly what `sopkit.__all__` lists; everything else is private."""

from __future__ import annotations

import pkgutil

import sopkit

PUBLIC = {
    "Action", "ChainError", "CustomerView", "EventError", "LoadedPlaybook", "Location",
    "PlaybookError", "Problem", "Runtime", "SopkitError", "Summary", "UsageError",
    "__version__", "compile_playbook", "load_playbook", "simulate",
}


def test_all_is_pinned() -> None:
    """Adding or removing a public name is a deliberate change to this list."""
    assert set(sopkit.__all__) == PUBLIC


def test_every_exported_name_exists() -> None:
    """Each name in __all__ can be imported from sopkit."""
    for name in sopkit.__all__:
        assert hasattr(sopkit, name), name


def test_modules_are_private() -> None:
    """Implementation modules start with an underscore; only `engines` and `channels` are public."""
    names = {m.name for m in pkgutil.iter_modules(sopkit.__path__)}
    assert {n for n in names if not n.startswith("_")} == {"channels", "engines"}


def test_only_the_durable_engine_module_imports_durable() -> None:
    """`durable` is imported by sopkit/engines/durable.py and nowhere else in sopkit."""
    from pathlib import Path

    root = Path(sopkit.__file__).parent
    importers = sorted(
        str(p.relative_to(root)) for p in root.rglob("*.py")
        if any(line.strip().startswith(("import durable", "from durable"))
               for line in p.read_text(encoding="utf-8").splitlines())
    )
    assert importers == ["engines/durable.py"]
