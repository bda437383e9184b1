"""Staff hand-over (离职继承): a `staff_departed` event moves every customer to a successor."""

from __future__ import annotations

from pathlib import Path

import pytest

import sopkit

DATA = Path(__file__).parent / "data" / "live"


def _variant(tmp: Path, old: str, new: str) -> Path:
    text = (DATA / "handover.toml").read_text(encoding="utf-8")
    assert old in text
    path = tmp / "handover.toml"
    path.write_text(text.replace(old, new), encoding="utf-8")
    return path


def _runtime(tmp: Path, policy: str = "round_robin", extra: str = "") -> sopkit.Runtime:
    path = _variant(tmp, 'policy = "round_robin"', f'policy = "{policy}"' + extra)
    return sopkit.Runtime(sopkit.load_playbook(path), engine="native")


def _owned(rt: sopkit.Runtime, owners: dict[str, str]) -> None:
    for cid, owner in owners.items():
        rt.add_profile({"customer_id": cid, "name": f"客户{cid}", "owner": owner})
        rt.ingest({"customer_id": cid, "type": "purchase", "ts": "2025-01-01T10:00:00"})


def test_every_customer_of_the_departed_goes_to_the_team_in_turn(tmp_path: Path) -> None:
    """Round robin over the team: no customer keeps the departed owner, loads differ by <= 1."""
    rt = _runtime(tmp_path)
    _owned(rt, {f"c{i:02d}": "zhang" if i % 3 else "li" for i in range(30)})
    before = {cid for cid in rt.customer_ids() if rt.state(cid).owner == "zhang"}
    actions = rt.ingest({"type": "staff_departed", "staff": "zhang",
                         "ts": "2025-01-05T10:00:00"})
    moved = [a for a in actions if a.action == "reassign"]
    assert {a.customer_id for a in moved} == before
    assert all(a.status == "planned" and a.details["from_owner"] == "zhang" for a in moved)
    owners = [rt.state(cid).owner for cid in sorted(before)]
    assert "zhang" not in owners
    assert abs(owners.count("li") - owners.count("wang")) <= 1


def test_least_loaded_fills_the_emptier_successor_first(tmp_path: Path) -> None:
    """least_loaded gives customers to whoever owns fewest, so the team ends up even."""
    rt = _runtime(tmp_path, "least_loaded")
    _owned(rt, {**{f"l{i}": "li" for i in range(6)}, **{f"z{i}": "zhang" for i in range(8)}})
    rt.ingest({"type": "staff_departed", "staff": "zhang", "ts": "2025-01-05T10:00:00"})
    owners = [rt.state(cid).owner for cid in rt.customer_ids()]
    assert owners.count("wang") == 7 and owners.count("li") == 7


def test_an_explicit_successor_on_the_event_wins(tmp_path: Path) -> None:
    """`to` on the event names the successor for all of the departed's customers."""
    rt = _runtime(tmp_path)
    _owned(rt, {"a": "zhang", "b": "zhang"})
    rt.ingest({"type": "staff_departed", "staff": "zhang", "to": "zhao",
               "ts": "2025-01-05T10:00:00"})
    assert {rt.state(c).owner for c in ("a", "b")} == {"zhao"}


def test_a_customer_with_no_possible_successor_is_reported_not_lost(tmp_path: Path) -> None:
    """Without a team or `to`, each customer gets a suppressed record saying why."""
    path = _variant(tmp_path, 'policy = "round_robin"\nteam = ["li", "wang", "zhang"]',
                    'policy = "named"\nsuccessors = { other = "li" }')
    rt = sopkit.Runtime(sopkit.load_playbook(path), engine="native")
    _owned(rt, {"a": "zhang"})
    actions = rt.ingest({"type": "staff_departed", "staff": "zhang",
                         "ts": "2025-01-05T10:00:00"})
    assert [(a.customer_id, a.status) for a in actions] == [("a", "suppressed")]
    assert "no successor" in actions[0].details["reason"]
    assert rt.state("a").owner == "zhang"


def test_delayed_and_later_tasks_go_to_the_new_owner(tmp_path: Path) -> None:
    """A follow-up task due after the hand-over is assigned to the successor."""
    rt = _runtime(tmp_path)
    _owned(rt, {"a": "zhang"})
    rt.ingest({"type": "staff_departed", "staff": "zhang", "ts": "2025-01-05T10:00:00"})
    tasks = [a for a in rt.advance("2025-02-10T00:00:00") if a.action == "task"]
    assert [t.details["assignee"] for t in tasks] == ["li"]
    assert "负责人 li" in tasks[0].details["note"]


def test_a_departure_without_staff_is_quarantined_material(tmp_path: Path) -> None:
    """A staff_departed event without `staff` is an EventError naming the field."""
    rt = _runtime(tmp_path)
    with pytest.raises(sopkit.EventError, match="staff"):
        rt.ingest({"type": "staff_departed", "ts": "2025-01-05T10:00:00"})


def test_check_rejects_a_round_robin_without_a_team(tmp_path: Path) -> None:
    """`sopkit check` names [handover].policy when the policy has nobody to hand over to."""
    path = _variant(tmp_path, 'team = ["li", "wang", "zhang"]\n', "")
    with pytest.raises(sopkit.PlaybookError) as err:
        sopkit.load_playbook(path)
    assert "handover.policy" in str(err.value) and "needs a team" in str(err.value)
