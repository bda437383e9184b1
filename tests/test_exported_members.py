"""The public API is exactly what `sopkit.__all__` lists; everything else is private."""

from __future__ import annotations

import inspect
import pkgutil

import sopkit

PUBLIC = {
    "Action", "ChainError", "ClockError", "CustomerView", "DispatchStats", "Dispatcher",
    "Observation",
    "EventError", "LoadedPlaybook", "Location", "NotFound", "Outbox", "OutboxRow",
    "PlaybookError", "Problem", "Runtime", "Scheduled", "SopkitError", "StateConflict",
    "StateError", "StateExport", "Summary", "Upgrade", "UsageError", "__version__",
    "compile_playbook", "load_playbook", "open_store", "simulate", "upgrade",
}

# The embedding API of Runtime (docs/embedding.md): a change here is a change of contract.
RUNTIME_API = {
    "add_profile", "advance", "cancel", "consent_screen", "customer_ids", "now",
    "deliverable", "due", "evict", "export", "export_changed", "export_clock", "ingest", "load",
    "load_clock", "message", "observe", "outbox_rows", "pending", "state",
}


def test_all_is_pinned() -> None:
    """Adding or removing a public name is a deliberate change to this list."""
    assert set(sopkit.__all__) == PUBLIC


def test_no_stray_public_names() -> None:
    """Every public name in the package namespace is in __all__ (as httpx checks), but the
    two public subpackages."""
    public = {name for name in vars(sopkit) if not name.startswith("_")}
    assert public - set(sopkit.__all__) == {"channels", "engines"}


def test_every_exported_name_exists() -> None:
    """Each name in __all__ can be imported from sopkit."""
    for name in sopkit.__all__:
        assert hasattr(sopkit, name), name


def test_every_exported_error_is_a_sopkit_error() -> None:
    """A host can catch everything sopkit raises on purpose with `except SopkitError`."""
    errors = [getattr(sopkit, n) for n in sopkit.__all__
              if inspect.isclass(getattr(sopkit, n))
              and issubclass(getattr(sopkit, n), BaseException)]
    assert len(errors) == 9 and all(issubclass(e, sopkit.SopkitError) for e in errors)


def test_the_embedding_api_of_runtime_is_pinned() -> None:
    """The Runtime methods docs/embedding.md documents exist, each with a docstring."""
    for name in RUNTIME_API:
        member = inspect.getattr_static(sopkit.Runtime, name)
        assert (getattr(member, "__doc__", None) or "").strip(), name


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
