"""Fuzzing event records: no line of input, however odd, crashes or stalls a simulation.

Bounded to a few seconds in `make test`; `make fuzz` runs many more examples
(SOPKIT_FUZZ_EXAMPLES). A crash found here becomes a line of tests/cases/records/*.jsonl,
which `test_every_recorded_crash_is_quarantined` replays for ever.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sopkit

EXAMPLES = int(os.environ.get("SOPKIT_FUZZ_EXAMPLES", "40"))
CASES = Path(__file__).parent / "cases" / "records"

PLAYBOOK = """
[playbook]
name = "fuzz"
timezone = "Asia/Shanghai"
day_starts = "09:00"
[profile]
name = "string"
birthday = "date"
vip = "bool"
tags = "list"
[events.purchase]
amount = "decimal"
quantity = "int"
sku = "string"
[metrics]
spend_30d = { kind = "sum", event = "purchase", field = "amount", window = "30d" }
avg_amount = { kind = "avg", event = "purchase", field = "amount" }
per_sku = { kind = "max_count_per_key", event = "purchase", field = "sku", window = "7d" }
days_since_purchase = { kind = "days_since", event = "purchase" }
days_to_birthday = { kind = "days_to_anniversary", attribute = "birthday" }
[channels.c]
type = "console"
[templates.t]
text = "{{ profile.name }} {{ spend_30d }} {{ avg_amount }}"
[[rules]]
name = "big"
on = "purchase"
when = "event.amount * event.quantity > 100 or spend_30d > 1000 or per_sku >= 3"
actions = [{ type = "send", channel = "c", template = "t" }]
[[rules]]
name = "quiet"
when = "days_since_purchase >= 3 and avg_amount > 10 or days_to_birthday == 1"
actions = [{ type = "send", channel = "c", template = "t" }]
"""

_json_leaf = (st.none() | st.booleans() | st.integers(-(10**30), 10**30)
              | st.floats(allow_nan=False) | st.text(max_size=12)
              | st.sampled_from(["1e999999", "-1e-999999", "NaN", "Infinity", "9" * 400,
                                 "2025-13-40", "0001-01-01T00:00:00+14:00", "{{ x }}",
                                 "9999-12-31T23:59:59", "1900-01-01", "", " ", "0E-999999"]))
_json = st.recursive(_json_leaf, lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=6)
_ts = st.one_of(st.sampled_from(["2025-01-01T10:00:00", "2025-01-05", "2025-02-01T09:00:00Z",
                                 "2205-01-01T00:00:00", "1899-12-31T23:59:59",
                                 "2025-01-03T10:00:00+14:00", "not a time"]), _json)
_record = st.fixed_dictionaries(
    {"customer_id": st.one_of(st.sampled_from(["c1", "c2", "13800138000", "王@例子"]), _json),
     "type": st.one_of(st.sampled_from(["purchase", "profile", "opt_out", "opt_in",
                                        "staff_departed", "unknown"]), _json),
     "ts": _ts},
    optional={"amount": _json, "quantity": _json, "sku": _json, "name": _json,
              "birthday": _json, "vip": _json, "tags": _json, "channel": _json,
              "event_id": _json, "staff": _json, "owner": _json})
_line = st.one_of(_record.map(lambda r: json.dumps(r, ensure_ascii=False)),
                  st.text(min_size=1, max_size=40).filter(lambda t: bool(t.strip())),
                  st.sampled_from(["[" * 5000, "{}", "null", "1" * 5000]))


def _simulate(tmp: Path, lines: list[str], engine: str) -> sopkit.Summary:
    events = tmp / "events.jsonl"
    events.write_text("".join(line.replace("\n", " ").replace("\r", " ") + "\n"
                              for line in lines), encoding="utf-8")
    playbook = tmp / "fuzz.toml"
    playbook.write_text(PLAYBOOK, encoding="utf-8")
    return sopkit.simulate(sopkit.load_playbook(playbook), events, end="2025-03-01",
                           quarantine=tmp / "q.jsonl", engine=engine)


@pytest.mark.parametrize("engine", ["native", "durable"])
@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(lines=st.lists(_line, min_size=1, max_size=8))
def test_no_record_crashes_a_simulation(tmp_path: Path, engine: str, lines: list[str]) -> None:
    """Whatever the lines say, the simulation finishes and every line is either applied or
    quarantined with a reason."""
    summary = _simulate(tmp_path, lines, engine)
    assert summary.events_read == len(lines)
    assert summary.events_applied + summary.quarantined + summary.events_after_end == len(lines)


def test_every_recorded_crash_is_quarantined(tmp_path: Path) -> None:
    """Each record that once crashed a run (tests/cases/records) is now quarantined or
    applied, on both engines."""
    lines = [line for path in sorted(CASES.glob("*.jsonl"))
             for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert lines
    for engine in ("native", "durable"):
        summary = _simulate(tmp_path, lines, engine)
        assert summary.events_read == len(lines)
