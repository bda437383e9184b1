"""Shared helpers: the small semantics playbooks under tests/data/semantics."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import sopkit

SEMANTICS = Path(__file__).parent / "data" / "semantics"


@pytest.fixture
def semantics_runtime() -> Callable[[str], sopkit.Runtime]:
    """A factory: the name of a playbook in tests/data/semantics -> a fresh Runtime for it."""

    def make(name: str) -> sopkit.Runtime:
        return sopkit.Runtime(sopkit.load_playbook(SEMANTICS / f"{name}.toml"))

    return make
