"""A Runtime's state survives a trip through bytes: a restarted live run goes on unchanged."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

import sopkit

ROOT = Path(__file__).parent.parent


def _events(n: int) -> list[dict[str, object]]:
    with gzip.open(ROOT / "data/cdnow/events.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line) for _, line in zip(range(n), f, strict=False)]


def _run(rt: sopkit.Runtime, events: list[dict[str, object]]) -> list[dict[str, object]]:
    out = []
    for event in events:
        out.extend(a.to_json() for a in rt.ingest(event))
    out.extend(a.to_json() for a in rt.advance("1997-05-01"))
    return out


def test_restored_runtime_takes_the_same_actions_as_one_that_never_stopped() -> None:
    """Dump after 1,200 CDNOW events, restore in a new Runtime: the rest is byte-identical."""
    playbook = sopkit.load_playbook(ROOT / "playbooks/retail.toml")
    events = _events(2400)
    first = sopkit.Runtime(playbook, engine="native")
    for event in events[:1200]:
        first.ingest(event)
    touched = first.take_touched()
    assert touched and first.take_touched() == set()
    blobs = [(cid, first.dump_customer(cid)) for cid in sorted(first.customer_ids())]
    clock = first.dump_clock()
    second = sopkit.Runtime(playbook, engine="native")
    assert second.restore(clock, blobs) == len(blobs)
    assert _run(second, events[1200:]) == _run(first, events[1200:])


def test_state_from_another_format_is_refused_with_a_reason() -> None:
    """Bytes of an unknown state format raise a StateError instead of loading garbage."""
    playbook = sopkit.load_playbook(ROOT / "playbooks/membership.toml")
    rt = sopkit.Runtime(playbook, engine="native")
    with pytest.raises(sopkit.SopkitError, match="customer c1: stored state format 99"):
        rt.restore(None, [("c1", b'{"v": 99, "id": "c1"}')])


def test_an_old_pickled_store_is_refused_with_the_command_that_rebuilds_it() -> None:
    """A store an older sopkit pickled is never unpickled (that would run code): the error
    names the command that rebuilds it from the history."""
    playbook = sopkit.load_playbook(ROOT / "playbooks/membership.toml")
    rt = sopkit.Runtime(playbook, engine="native")
    old_window = b"\x80\x05csopkit._metrics\n_Window\n."  # a class that is gone, pickled
    with pytest.raises(sopkit.SopkitError, match=r"customer c1: .*pickle.*sopkit migrate "
                                                 r"PLAYBOOK --store URL --rebuild"):
        rt.restore(None, [("c1", old_window)])

