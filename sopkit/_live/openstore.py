"""`open_store`: a store from a `--store` URL or path."""

from __future__ import annotations

import re

from sopkit._errors import UsageError
from sopkit._live.pgstore import PostgresStore
from sopkit._live.sqlitestore import SQLiteStore
from sopkit._live.store import Store, redact

ACCEPTED = ("a file path (SQLite), sqlite:///relative/path.db, sqlite:////absolute/path.db, "
            "postgresql://user@host:port/database or postgres://...")


def open_store(url: str, *, create: bool = True) -> Store:
    """A store from a URL or a path: `postgresql://...` / `postgres://...`, else SQLite.

    SQLite: a plain path, `sqlite:///relative.db` or `sqlite:////absolute.db`, or `:memory:`.
    Anything else with a scheme is a UsageError naming the accepted forms. With
    `create=False` (the commands that only read or repair a store) a missing file, an empty
    database or a schema without sopkit's tables is a UsageError and nothing is created.
    """
    text = url.strip()
    if not text:
        raise UsageError(f"--store is empty; give {ACCEPTED}")
    scheme = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*):", text)
    if scheme and len(scheme.group(1)) > 1:  # one letter is a Windows drive, not a scheme
        name = scheme.group(1).lower()
        if name in ("postgresql", "postgres"):
            return PostgresStore(text, create=create)
        if name == "sqlite":
            if not text.startswith("sqlite:///"):
                raise UsageError(f"store '{text}': write sqlite:///relative/path.db or "
                                 "sqlite:////absolute/path.db (three slashes, then the path)")
            return SQLiteStore(text[len("sqlite:///"):], create=create)
        raise UsageError(f"store '{redact(text)}': unsupported scheme '{name}'; "
                         f"accepted: {ACCEPTED}")
    return SQLiteStore(text, create=create)
