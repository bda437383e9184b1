"""The typed IR: what compile returns has exactly the declared keys; load_ir refuses others."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import sopkit
from sopkit._ir.types import IR_VERSION, IRError, PlaybookIR, RuleIR, SlotIR, load_ir

ROOT = Path(__file__).resolve().parent.parent


def _ir() -> PlaybookIR:
    return sopkit.compile_playbook(sopkit.load_playbook(ROOT / "playbooks/retail.toml").model)


def test_compiled_keys_are_the_declared_ones() -> None:
    """Every key of the compiled retail playbook, its rules and slots is declared in the types."""
    ir = _ir()
    declared = set(PlaybookIR.__required_keys__) | set(PlaybookIR.__optional_keys__)
    assert set(PlaybookIR.__required_keys__) <= set(ir) <= declared
    for rule in ir["rules"]:
        assert set(rule) == set(RuleIR.__required_keys__), rule["name"]
    slot_keys = set(SlotIR.__required_keys__) | set(SlotIR.__optional_keys__)
    assert all(set(SlotIR.__required_keys__) <= set(s) <= slot_keys for s in ir["slots"])


def test_load_ir_takes_ir_read_back_from_json() -> None:
    """IR written as JSON and read back runs in a Runtime like the compiled one."""
    ir = load_ir(json.loads(json.dumps(_ir())))
    rt = sopkit.Runtime(sopkit.load_playbook(ROOT / "playbooks/retail.toml"), ir=ir)
    rt.ingest({"customer_id": "c1", "type": "purchase", "ts": "2024-05-01T10:00:00",
               "amount": "10"})
    assert rt.state("c1").customer_id == "c1"


def test_load_ir_refuses_another_version() -> None:
    """IR of another version is refused with a SopkitError naming both versions."""
    data = dict(_ir())
    data["ir_version"] = IR_VERSION + 1
    with pytest.raises(IRError, match=f"version {IR_VERSION + 1}.*version {IR_VERSION}"):
        load_ir(data)
    assert issubclass(IRError, sopkit.SopkitError)


def test_load_ir_names_missing_keys() -> None:
    """IR without its rules is refused, naming what is missing."""
    data = {k: v for k, v in _ir().items() if k != "rules"}
    with pytest.raises(IRError, match="without rules"):
        load_ir(data)
