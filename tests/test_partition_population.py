"""`simulate --workers N` on playbooks that read the whole population (RFM and CLV refits,
campaigns, a hand-over team): the partitions meet at barriers and the output is one
worker's, byte for byte.

Generated playbooks (tests/differential_gen.py, with population features added) and
histories of buyers, owners and staff departures run with 1, 2, 3 and 5 workers; actions,
summary, quarantine and the --report page must be identical.

Environment: SOPKIT_PARTITION_EXAMPLES=N generated cases per run (default 15; here
two fifths, as each case runs 4 simulations with worker processes; `make test-deep` 60).
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import differential_gen as gen
import pytest
from hypothesis import HealthCheck, assume, given, note, settings
from hypothesis import strategies as st
from test_partition_dask import dask_installed, scheduler  # noqa: F401  # fixtures used here

import sopkit

EXAMPLES = max(1, int(os.environ.get("SOPKIT_PARTITION_EXAMPLES", "15")) * 2 // 5)
FEATURES = ("rfm", "clv", "campaigns", "handover", "task_capacity")
BUYERS = ["p1", "p2", "p10", "客户3", "cust-462789", "c7", "c8", "zz"]
GAPS = [0, 0, 60, 3600, 86400, 2 * 86400, 5 * 86400, 9 * 86400, 30 * 86400]


def _sections(draw: st.DrawFn, features: set[str], doc: dict[str, Any]) -> str:
    """Add what the features read to `doc`; the TOML of the feature tables themselves."""
    doc["metrics"].update({
        "买过": {"kind": "count", "event": "purchase"},
        "花费": {"kind": "sum", "event": "purchase", "field": "amount"},
        "距购": {"kind": "days_since", "event": "purchase"},
    })
    doc["templates"]["pop"] = {"text": "hi {{ customer_id }}"}
    send = {"type": "send", "channel": "sms", "template": "pop"}
    text: list[str] = []
    if "rfm" in features:
        every = draw(st.sampled_from(["1d", "2d", "7d"]))
        text.append(f'[rfm]\nrecency = "距购"\nfrequency = "买过"\nmonetary = "花费"\n'
                    f'every = "{every}"\ntags = {draw(st.sampled_from(["true", "false"]))}\n')
        doc["rules"].append({"name": "rfm_top", "when": "rfm_r >= 4 and rfm_m >= 3",
                             "actions": [send]})
    if "clv" in features:
        every = draw(st.sampled_from(["1d", "3d"]))
        text.append(f'[clv]\nevent = "purchase"\namount = "amount"\nevery = "{every}"\n'
                    f'horizon = "30d"\n')
        doc["rules"].append({"name": "clv_low", "when": "p_alive < 0.97 and 买过 >= 2",
                             "actions": [{**send, "template": "pop"}]})
    if "handover" in features:
        policy = draw(st.sampled_from(["round_robin", "least_loaded", "named"]))
        team = draw(st.lists(st.sampled_from(gen.STAFF), min_size=1, max_size=3, unique=True))
        text.append(f'[handover]\npolicy = "{policy}"\nteam = {json.dumps(team)}\n'
                    + ('successors = { "staff-1" = "王老师" }\n' if policy == "named" else ""))
    if "task_capacity" in features:
        text.append(f"[policy]\ntask_capacity = {draw(st.integers(1, 2))}\n")
    if "campaigns" in features:
        text.append("[experiments.popexp]\nholdout = 0.3\n")
        for n in range(draw(st.integers(1, 2))):
            audience = draw(st.sampled_from(["true", "买过 >= 1", '花费 > 10 and 距购 <= 9',
                                             'owner == "staff-2"']))
            when = draw(st.sampled_from(['every = "daily 10:00"', 'every = "weekly mon 09:00"',
                                         'every = "daily 00:00"']))
            actions = draw(st.sampled_from([
                '[{ type = "send", channel = "sms", template = "pop" }]',
                '[{ type = "task", note = "call {{ customer_id }}" }, '
                '{ type = "reassign", to = "staff-2" }]',
                '[{ type = "send", channel = "sms", template = "pop" }, '
                '{ type = "reassign", to = "王老师" }]']))
            extra = draw(st.sampled_from(["", "sample = 0.6\n", 'experiment = "popexp"\n']))
            condition = json.dumps(audience, ensure_ascii=False)
            text.append(f'[[campaigns]]\nname = "blast{n}"\n{when}\naudience = {condition}\n'
                        f"{extra}actions = {actions}\n")
    return "\n".join(text)


@st.composite
def _population_cases(draw: st.DrawFn) -> tuple[str, list[str], list[str], str, set[str]]:
    """(playbook TOML, profile lines, event lines, end, features) of a population case."""
    features = set(draw(st.lists(st.sampled_from(FEATURES), min_size=1, unique=True)))
    doc = draw(gen.playbook_strategy())
    tables = _sections(draw, features, doc)
    toml = gen.to_toml(doc) + "\n" + tables
    customers = draw(st.lists(st.sampled_from(BUYERS), min_size=2, max_size=8, unique=True))
    profiles = [{"customer_id": c, "owner": draw(st.sampled_from(gen.STAFF))}
                for c in customers if draw(st.integers(0, 3))]
    now = gen.START + dt.timedelta(days=draw(st.sampled_from(gen.START_SHIFTS)),
                                   seconds=draw(st.integers(0, 86399)))
    events: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(0, 40))):
        now += dt.timedelta(seconds=draw(st.sampled_from(GAPS)))
        ts = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        kind = draw(st.sampled_from(["purchase"] * 4 + ["visit", "profile", "staff"]))
        customer = draw(st.sampled_from(customers))
        if kind == "staff":
            record: dict[str, Any] = {"type": "staff_departed",
                                      "staff": draw(st.sampled_from(gen.STAFF)), "ts": ts}
            if draw(st.integers(0, 4)) == 0:
                record["to"] = draw(st.sampled_from(gen.STAFF))
        elif kind == "profile":
            record = {"customer_id": customer, "type": "profile", "ts": ts,
                      "owner": draw(st.sampled_from(gen.STAFF))}
        elif kind == "visit":
            record = {"customer_id": customer, "type": "visit", "ts": ts, "page": "home"}
        else:
            record = {"customer_id": customer, "type": "purchase", "ts": ts,
                      "amount": draw(st.sampled_from(["10", "25.5", "150", "0", "99.99"]))}
        events.append(record)
    end = (now + dt.timedelta(days=draw(st.sampled_from([0, 3, 20, 60])))) \
        .strftime("%Y-%m-%dT%H:%M:%SZ")
    lines = [json.dumps(e, ensure_ascii=False) for e in events]
    if events and draw(st.booleans()):  # a redelivery: the same event_id twice
        at = draw(st.integers(0, len(events) - 1))
        lines[at:at + 1] = [json.dumps(dict(events[at], event_id="again"),
                                       ensure_ascii=False)] * 2
    return (toml, [json.dumps(p, ensure_ascii=False) for p in profiles], lines, end,
            features)


def _write(folder: Path, toml: str, profiles: list[str],
           events: list[str]) -> sopkit.LoadedPlaybook:
    """The case's files in `folder`; its playbook (a playbook the loader rejects is no case)."""
    (folder / "playbook.toml").write_text(toml, encoding="utf-8")
    (folder / "events.jsonl").write_text("".join(e + "\n" for e in events), encoding="utf-8")
    (folder / "profiles.jsonl").write_text("".join(p + "\n" for p in profiles),
                                           encoding="utf-8")
    try:
        return sopkit.load_playbook(folder / "playbook.toml")
    except sopkit.PlaybookError as exc:
        note(str(exc))
        assume(False)
        raise


def run_case(playbook: sopkit.LoadedPlaybook, folder: Path, workers: int, end: str | None,
             **options: Any) -> tuple[str, ...]:
    """(actions, summary, quarantine, report page) of one simulation with `workers`."""
    out = folder / f"actions-{workers}.jsonl"
    jail = folder / "quarantine.jsonl"  # one name: the report shows it
    data = sopkit.ReportData()
    with out.open("w", encoding="utf-8") as handle:
        try:
            summary = sopkit.simulate(playbook, folder / "events.jsonl",
                                      profiles=folder / "profiles.jsonl", end=end, out=handle,
                                      quarantine=jail, workers=workers, report=data,
                                      **options)
        except sopkit.ChainError:  # which customer's chain is reported first may differ
            return ("ChainError",)
        except (ArithmeticError, ValueError) as exc:  # a CLV fit that fails: the same error
            return (type(exc).__name__,)
    page, _notes = sopkit.render_report(summary, data)
    shown = summary.to_json() | {"quarantine_file": None}
    return (out.read_text(encoding="utf-8"), json.dumps(shown, ensure_ascii=False),
            jail.read_text(encoding="utf-8") if jail.exists() else "", page)


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(_population_cases())
def test_population_features_give_the_single_run_with_any_number_of_workers(
        drawn: tuple[str, list[str], list[str], str, set[str]]) -> None:
    """RFM, CLV, campaigns and hand-over teams: 1, 2, 3 and 5 workers write the same."""
    toml, profiles, events, end, features = drawn
    note(f"{sorted(features)}\n{toml}")
    note("\n".join(profiles + events))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        playbook = _write(folder, toml, profiles, events)
        single = run_case(playbook, folder, 1, end)
        for workers in (2, 3, 5):
            got = run_case(playbook, folder, workers, end)
            if got != single:  # printed now: a time-out while shrinking still shows the case
                print(f"PARTITION MISMATCH with {workers} workers, features {sorted(features)}, "
                      f"end {end}\n--- playbook.toml\n{toml}\n--- profiles.jsonl\n"
                      + "\n".join(profiles) + "\n--- events.jsonl\n" + "\n".join(events))
            assert got == single, workers


def _retail_slice(tmp: Path) -> tuple[Path, Path, Path]:
    """playbooks/retail.toml (campaigns, task_capacity) with [rfm] added (a [clv] fit
    overflows on CDNOW) and CDNOW's first 400 customers (playbook, events, profiles)."""
    root = Path(__file__).parent.parent
    text = (root / "playbooks/retail.toml").read_text(encoding="utf-8")
    text += ('\n[rfm]\nrecency = "days_since_purchase"\nfrequency = "purchases_365d"\n'
             'monetary = "spend_365d"\nevery = "7d"\n')
    (tmp / "playbooks").mkdir()
    (tmp / "rules").mkdir()
    playbook = tmp / "playbooks/retail.toml"
    playbook.write_text(text, encoding="utf-8")
    (tmp / "rules/churn-scorecard.toml").write_text(  # the fragment retail.toml includes
        (root / "rules/churn-scorecard.toml").read_text(encoding="utf-8"), encoding="utf-8")
    kept = {f"cdnow-{n:05d}" for n in range(1, 401)}
    for name in ("events", "profiles"):
        with gzip.open(root / f"data/cdnow/{name}.jsonl.gz", "rt", encoding="utf-8") as src:
            lines = [line for line in src if json.loads(line)["customer_id"] in kept]
        (tmp / f"{name}.jsonl").write_text("".join(lines), encoding="utf-8")
    return playbook, tmp / "events.jsonl", tmp / "profiles.jsonl"


def test_the_retail_playbook_on_cdnow_gives_one_workers_output_with_two(
        tmp_path: Path) -> None:
    """retail.toml (campaigns, task_capacity, RFM) over a CDNOW slice: 2 workers write 1's."""
    path, _events, _ = _retail_slice(tmp_path)
    playbook = sopkit.load_playbook(path)
    single = run_case(playbook, tmp_path, 1, None)
    assert run_case(playbook, tmp_path, 2, None) == single
    summary = json.loads(single[1])
    assert summary["campaigns"] and summary["rfm_segments"]  # the features were exercised
    assert '"rule": "double12_coupon"' in single[0]
    assert "task capacity 20/day reached" in single[0] or '"action": "task"' in single[0]


def test_a_dask_local_cluster_meets_at_the_barriers_too(tmp_path: Path) -> None:
    """--executor dask (a LocalCluster sopkit starts) on retail with RFM: one worker's."""
    pytest.importorskip("distributed")
    path, _events, _ = _retail_slice(tmp_path)
    playbook = sopkit.load_playbook(path)
    single = run_case(playbook, tmp_path, 1, None)
    assert run_case(playbook, tmp_path, 2, None, executor="dask") == single


def test_a_dask_cluster_with_fewer_threads_than_partitions_is_a_usage_error(
        scheduler: str, tmp_path: Path) -> None:  # noqa: F811  # the imported fixture
    """Partitions that meet at refits all run at once: 3 on a 2-thread cluster is exit 2;
    2 on it write one worker's output."""
    path, _events, _ = _retail_slice(tmp_path)
    playbook = sopkit.load_playbook(path)
    single = run_case(playbook, tmp_path, 1, None)
    assert run_case(playbook, tmp_path, 2, None, executor="dask",
                    scheduler=scheduler) == single
    with pytest.raises(sopkit.UsageError, match="a worker thread of its own"):
        run_case(playbook, tmp_path, 3, None, executor="dask", scheduler=scheduler)
