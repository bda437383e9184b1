"""`sopkit migrate`: a new version of a live playbook meets the customers in flight safely."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from sopkit._cli.app import app

HEAD = """
[playbook]
name = "club"
version = "{version}"
timezone = "Asia/Shanghai"
day_starts = "00:00"

[profile]
name = "string"

[events.purchase]
amount = "decimal"

[metrics]
days_since_purchase = {{ kind = "days_since", event = "purchase" }}
{metrics}
[channels.out]
type = "jsonl"
path = "{out}"

[templates.thanks]
text = "{{{{ profile.name | default('顾客') }}}}，谢谢惠顾！"
[templates.recall]
text = "{{{{ profile.name | default('顾客') }}}}，我们想念您！"
[templates.vip]
text = "{{{{ profile.name | default('顾客') }}}}，您是我们的贵宾。"
"""

THANKS = """
[[rules]]
name = "{name}"
on = "purchase"
delay = "{delay}"
actions = [{{ type = "send", channel = "out", template = "thanks" }}]
{extra}"""

RECALL = """
[[rules]]
name = "recall"
when = "days_since_purchase >= 30"
max_times = 1
actions = [{ type = "send", channel = "out", template = "recall" }]
"""

VIP = """
[[rules]]
name = "vip"
when = "{when}"
{extra}actions = [{{ type = "send", channel = "out", template = "vip" }}]
"""


def _playbook(tmp: Path, version: str, rules: str, metrics: str = "") -> Path:
    path = tmp / f"club-v{version}.toml"
    path.write_text(HEAD.format(version=version, metrics=metrics, out=tmp / "sent.jsonl")
                    + rules, encoding="utf-8")
    return path


def _events(tmp: Path, rows: list[tuple[str, str, str]]) -> Path:
    path = tmp / "events.jsonl"
    path.write_text("".join(json.dumps({"customer_id": c, "type": "purchase", "ts": ts,
                                        "amount": amount}) + "\n" for c, ts, amount in rows),
                    encoding="utf-8")
    return path


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def _run(playbook: Path, store: Path, clock: str, events: Path | None = None) -> Any:
    args = ["run", str(playbook), "--store", str(store), "--once", "--clock", clock,
            "--lateness", "0s", "--engine", "native", "--send-from", "2000-01-01"]
    if events is not None:
        args += ["--events", str(events)]
    return _cli(*args)


def _rows(store: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(store) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM outbox ORDER BY id")]


def _sent(tmp: Path) -> list[dict[str, Any]]:
    path = tmp / "sent.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_swapped_rules_keep_their_own_pending_actions(tmp_path: Path) -> None:
    """Swapping two rules in v2 no longer sends a pending thank-you as a recall: the delayed
    thanks goes out as thanks, and the recall still fires when it is due."""
    events = _events(tmp_path, [("c1", "2025-01-01T10:00:00", "50")])
    v1 = _playbook(tmp_path, "1", THANKS.format(name="thanks_later", delay="3d", extra="")
                   + RECALL)
    v2 = _playbook(tmp_path, "2", RECALL + THANKS.format(name="thanks_later", delay="3d",
                                                         extra=""))
    store = tmp_path / "live.db"
    assert _run(v1, store, "2025-01-02T00:00:00", events).exit_code == 0
    assert _cli("migrate", str(v2), "--store", str(store)).exit_code == 0
    result = _run(v2, store, "2025-02-15T00:00:00")
    assert result.exit_code == 0, result.output
    sent = [(m["rule"], m["body"]["message"]) for m in _sent(tmp_path)]
    assert sent == [("thanks_later", "顾客，谢谢惠顾！"), ("recall", "顾客，我们想念您！")]


def test_a_rule_and_metric_added_at_the_top_deploy_without_a_crash(tmp_path: Path) -> None:
    """A v2 with a new metric and a new first rule deploys and runs (it used to die with
    IndexError), and the unchanged rule's pending action still goes out on time."""
    events = _events(tmp_path, [("c1", "2025-01-01T10:00:00", "500"),
                                ("c2", "2025-01-01T11:00:00", "20")])
    v1 = _playbook(tmp_path, "1", THANKS.format(name="thanks", delay="3d", extra=""))
    v2 = _playbook(tmp_path, "2", VIP.format(when="spend >= 300", extra="")
                   + THANKS.format(name="thanks", delay="3d", extra=""),
                   metrics='spend = { kind = "sum", event = "purchase", field = "amount" }\n')
    store = tmp_path / "live.db"
    assert _run(v1, store, "2025-01-02T00:00:00", events).exit_code == 0
    planned = _cli("migrate", str(v2), "--store", str(store), "--plan", "--output", "jsonl")
    assert planned.exit_code == 0, planned.output
    changes = {json.loads(line)["name"]: json.loads(line)
               for line in planned.output.splitlines()[:-1]}
    assert "rules reading it without history: vip" in changes["spend"]["effect"]
    deployed = _cli("migrate", str(v2), "--store", str(store), "--events", str(events),
                    "--output", "jsonl")
    assert deployed.exit_code == 0, deployed.output
    assert "replayed from events.jsonl (2 events)" in deployed.output
    assert _run(v2, store, "2025-01-10T00:00:00").exit_code == 0
    sent = sorted((m["rule"], m["customer_id"]) for m in _sent(tmp_path))
    # vip is new: c1 already qualified at deploy time, so it is armed, not fired
    assert sent == [("thanks", "c1"), ("thanks", "c2")]


def test_backfill_qualifying_fires_once_for_customers_who_already_qualify(
        tmp_path: Path) -> None:
    """`backfill = "qualifying"` sends the new rule's message at deploy time to the
    customers whose condition already holds, and only once."""
    events = _events(tmp_path, [("c1", "2025-01-01T10:00:00", "50"),
                                ("c2", "2025-01-20T10:00:00", "50")])
    v1 = _playbook(tmp_path, "1", THANKS.format(name="thanks", delay="1d", extra=""))
    v2 = _playbook(tmp_path, "2", THANKS.format(name="thanks", delay="1d", extra="")
                   + VIP.format(when="days_since_purchase >= 10",
                                extra='backfill = "qualifying"\n'))
    store = tmp_path / "live.db"
    assert _run(v1, store, "2025-01-25T00:00:00", events).exit_code == 0
    deployed = _cli("migrate", str(v2), "--store", str(store), "--output", "jsonl")
    assert deployed.exit_code == 0, deployed.output
    assert _run(v2, store, "2025-01-26T00:00:00").exit_code == 0
    assert _run(v2, store, "2025-02-26T00:00:00").exit_code == 0
    vip = sorted(m["customer_id"] for m in _sent(tmp_path) if m["rule"] == "vip")
    assert vip == ["c1", "c2"]  # c1 at deploy time, c2 when it crossed 10 days


def test_a_removed_rule_cancels_its_pending_actions_with_the_reason(tmp_path: Path) -> None:
    """Removing a rule with a delayed action pending records it as cancelled, never sent."""
    events = _events(tmp_path, [("c1", "2025-01-01T10:00:00", "50")])
    v1 = _playbook(tmp_path, "1", THANKS.format(name="thanks", delay="3d", extra="") + RECALL)
    v2 = _playbook(tmp_path, "2", RECALL)
    store = tmp_path / "live.db"
    assert _run(v1, store, "2025-01-02T00:00:00", events).exit_code == 0
    assert _cli("migrate", str(v2), "--store", str(store)).exit_code == 0
    assert _run(v2, store, "2025-01-10T00:00:00").exit_code == 0
    rows = [(r["rule"], r["status"], r["reason"]) for r in _rows(store)]
    assert rows == [("thanks", "cancelled", "rule removed in version 2")]
    assert _sent(tmp_path) == []


def test_a_renamed_rule_keeps_its_counters(tmp_path: Path) -> None:
    """`renamed_from` carries max_times over: the renamed recall does not fire again."""
    events = _events(tmp_path, [("c1", "2025-01-01T10:00:00", "50"),
                                ("c1", "2025-03-01T10:00:00", "50")])
    v1 = _playbook(tmp_path, "1", RECALL)
    renamed = RECALL.replace('name = "recall"', 'name = "win_back"\nrenamed_from = "recall"')
    v2 = _playbook(tmp_path, "2", renamed)
    store = tmp_path / "live.db"
    lines = events.read_text(encoding="utf-8").splitlines(keepends=True)
    events.write_text(lines[0], encoding="utf-8")  # the second purchase comes later
    assert _run(v1, store, "2025-02-15T00:00:00", events).exit_code == 0
    assert [m["rule"] for m in _sent(tmp_path)] == ["recall"]
    assert _cli("migrate", str(v2), "--store", str(store)).exit_code == 0
    events.write_text("".join(lines), encoding="utf-8")
    assert _run(v2, store, "2025-05-01T00:00:00", events).exit_code == 0
    assert [m["rule"] for m in _sent(tmp_path)] == ["recall"]  # max_times 1 kept


def test_run_on_a_store_of_another_version_exits_2_with_the_migrate_command(
        tmp_path: Path) -> None:
    """`run` with a new version refuses the old store and prints the command that deploys."""
    events = _events(tmp_path, [("c1", "2025-01-01T10:00:00", "50")])
    v1 = _playbook(tmp_path, "1", RECALL)
    v2 = _playbook(tmp_path, "2", RECALL)
    store = tmp_path / "live.db"
    assert _run(v1, store, "2025-01-02T00:00:00", events).exit_code == 0
    refused = _run(v2, store, "2025-01-03T00:00:00")
    assert refused.exit_code == 2
    assert f"sopkit migrate {v2} --store {store} --plan" in refused.output
    same = _cli("migrate", str(v1), "--store", str(store))
    assert same.exit_code == 0 and "nothing to migrate" in same.output


def test_plan_writes_nothing(tmp_path: Path) -> None:
    """`migrate --plan` leaves the store byte-for-byte as it was."""
    events = _events(tmp_path, [("c1", "2025-01-01T10:00:00", "50")])
    v1 = _playbook(tmp_path, "1", THANKS.format(name="thanks", delay="3d", extra=""))
    v2 = _playbook(tmp_path, "2", RECALL)
    store = tmp_path / "live.db"
    assert _run(v1, store, "2025-01-02T00:00:00", events).exit_code == 0

    def dump() -> list[Any]:
        with sqlite3.connect(store) as db:
            return list(db.iterdump())

    before = dump()
    result = _cli("migrate", str(v2), "--store", str(store), "--plan")
    assert result.exit_code == 0, result.output
    assert "rule removed" in result.output and "nothing was written" in result.output
    assert dump() == before


def test_a_store_with_pickled_state_is_refused_with_the_command_that_rebuilds_it(
        tmp_path: Path) -> None:
    """A schema-1 store (pickled state, from before state by name) is never read; `run` exits
    2 and prints how to build a new store from the history without sending the past."""
    events = _events(tmp_path, [("c1", "2025-01-01T10:00:00", "50")])
    v1 = _playbook(tmp_path, "1", RECALL)
    store = tmp_path / "live.db"
    assert _run(v1, store, "2025-01-02T00:00:00", events).exit_code == 0
    with sqlite3.connect(store) as db:
        db.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    result = _run(v1, store, "2025-01-03T00:00:00")
    assert result.exit_code == 2
    assert "older sopkit (schema 1)" in result.output
    assert "sopkit run PLAYBOOK --store NEW --events HISTORY --once" in result.output


def test_a_deploy_waits_for_no_run_it_refuses_while_a_run_holds_the_store(
        tmp_path: Path) -> None:
    """`migrate` is a writer: while a live run holds the store's event loop it exits 2 and
    changes nothing (a run in memory would overwrite the deployment)."""
    import time

    from sopkit._live.openstore import open_store

    events = _events(tmp_path, [("c1", "2025-01-01T10:00:00", "50")])
    v1 = _playbook(tmp_path, "1", RECALL)
    v2 = _playbook(tmp_path, "2", RECALL + VIP.format(when="days_since_purchase >= 5",
                                                     extra=""))
    store = tmp_path / "live.db"
    assert _run(v1, store, "2025-01-02T00:00:00", events).exit_code == 0
    live = open_store(str(store), create=False)
    try:
        live.acquire_loop_lock("retail-1", int(time.time()), 300)
        refused = _cli("migrate", str(v2), "--store", str(store))
    finally:
        live.close()
    assert refused.exit_code == 2 and "retail-1" in refused.output
    with sqlite3.connect(store) as db:
        (running,) = db.execute("SELECT value FROM meta WHERE key = 'playbook'").fetchone()
    assert running == "club:1"
