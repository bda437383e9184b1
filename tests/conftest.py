"""Shared helpers: the small semantics playbooks under tests/data/semantics."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import sopkit

SEMANTICS = Path(__file__).parent / "data" / "semantics"


@pytest.fixture
def semantics_runtime() -> Callable[[str], sopkit.Runtime]:
    """A factory: the name of a playbook in tests/data/semantics -> a fresh Runtime for it."""

    def make(name: str) -> sopkit.Runtime:
        return sopkit.Runtime(sopkit.load_playbook(SEMANTICS / f"{name}.toml"))

    return make


# -- stores: a real SQLite file and a real PostgreSQL server (tests/pg_server.py) ------------

_pg_schemas = itertools.count(1)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A throwaway PostgreSQL server for the session; skipped (visibly) where none can run."""
    import pg_server

    try:
        server = pg_server.start()
    except pg_server.Unavailable as exc:
        if os.environ.get("SOPKIT_REQUIRE_PG") == "1":
            pytest.fail(f"SOPKIT_REQUIRE_PG=1 but PostgreSQL cannot start: {exc}")
        pytest.skip(f"PostgreSQL tests skipped: {exc}")
    try:
        yield server.url
    finally:
        server.stop()


def fresh_pg_url(base: str) -> str:
    """A URL into a new, empty schema of the session's server (one per test)."""
    import psycopg

    schema = f"t{next(_pg_schemas)}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}".encode())
    return f"{base}?options=-csearch_path%3D{schema}"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a new, empty store: an SQLite file, then a PostgreSQL schema."""
    if request.param == "sqlite":
        return str(tmp_path / "store.db")
    return fresh_pg_url(request.getfixturevalue("pg_url"))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Any]:
    """A fresh SQLite store file (a test module that needs other stores defines its own)."""
    from sopkit._live.openstore import open_store

    opened = open_store(str(tmp_path / "outbox.db"))
    yield opened
    opened.close()


@pytest.fixture
def any_store(store_url: str) -> Iterator[Any]:
    """An open, empty store (SQLite file or PostgreSQL schema), closed after the test."""
    from sopkit._live.openstore import open_store

    opened = open_store(store_url)
    yield opened
    opened.close()
