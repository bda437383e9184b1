"""Dispatcher settings (sopkit/_live/dispatch.py), seed-23 sample: what the API refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

import sopkit
from sopkit.channels import MemoryChannel


@pytest.mark.parametrize(("setting", "least"), [
    ("base_delay", 0), ("max_delay", 0), ("lease_seconds", 1), ("max_attempts", 1),
    ("batch", 1)])
def test_a_setting_below_its_least_is_refused_by_name(tmp_path: Path, setting: str,
                                                      least: int) -> None:
    """A host passing base_delay=-1 (or any setting one below its least) gets an error that
    names the setting and its least value; at the least value the dispatcher is made."""
    store = sopkit.open_store(str(tmp_path / "outbox.db"))
    try:
        channels = {"sms": MemoryChannel("sms")}
        with pytest.raises(sopkit.SopkitError) as raised:
            sopkit.Dispatcher(store, channels, worker="w",
                              **{setting: least - 1})  # type: ignore[arg-type]  # one name
        assert str(raised.value) == (f"Dispatcher: {setting} must be at least {least}, "
                                     f"not {least - 1}")
        made = sopkit.Dispatcher(store, channels, worker="w",
                                 **{setting: least})  # type: ignore[arg-type]  # as above
        assert made.run_once(0).delivered == 0
    finally:
        store.close()
