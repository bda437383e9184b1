"""Staff hand-over in a live run: every customer moves, WeCom is asked, none is left behind."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from http_receiver import Receiver
from live_helpers import ENV, shop_history, shop_playbook
from typer.testing import CliRunner
from wecom_fake import WECOM_TABLE, WecomFake

from sopkit._cli.app import app

END = "2025-03-01T12:00:00"
WECOM = WECOM_TABLE


def _setup(tmp: Path, rx: Receiver, fake: WecomFake) -> tuple[Path, Path, Path]:
    text = WECOM.format(url=fake.url)
    playbook = shop_playbook(tmp, rx.url + "/hook", text)
    playbook.write_text(playbook.read_text(encoding="utf-8").replace(
        'team = ["li", "wang"]', 'team = ["li", "wang"]\nchannel = "wecom"'), encoding="utf-8")
    departure = {"type": "staff_departed", "staff": "zhang", "ts": "2025-01-20T18:00:00"}
    events, profiles = shop_history(tmp, customers=24, extra=[departure])
    for line in profiles.read_text(encoding="utf-8").splitlines():
        person = json.loads(line)
        fake.add_customer(person["external_userid"], person["owner"])
    fake.add_staff("li", "wang")
    fake.resign("zhang")
    return playbook, events, profiles


def _run(tmp: Path, playbook: Path, events: Path, profiles: Path) -> Path:
    """`sopkit run --once` as of END into a new store; the store's path."""
    store = tmp / "live.db"
    result = _invoke(["run", "--send-from", "2000-01-01",
                      str(playbook), "--store", str(store), "--events", str(events),
                      "--profiles", str(profiles), "--once", "--clock", END,
                      "--lateness", "0s", "--engine", "native"])
    assert result.exit_code == 0, result.output
    return store


def _invoke(args: list[str]) -> Any:
    return CliRunner().invoke(app, args, env={**ENV, "SOPKIT_TEST_WECOM_SECRET":
                                              "fake-corpsecret-0123"})


def test_every_customer_of_a_departed_owner_is_transferred_and_tracked(tmp_path: Path) -> None:
    """staff_departed -> one WeCom transfer per customer; status lists who is not taken yet."""
    with Receiver() as rx, WecomFake() as fake:
        playbook, events, profiles = _setup(tmp_path, rx, fake)
        store = _run(tmp_path, playbook, events, profiles)
        owned = {json.loads(p)["external_userid"]
                 for p in profiles.read_text(encoding="utf-8").splitlines()
                 if json.loads(p)["owner"] == "zhang"}
        transferred = {eu for body in fake.bodies("externalcontact/resigned/transfer_customer")
                       for eu in body["external_userid"]}
        assert transferred == owned and len(owned) == 12
        bodies = fake.bodies("externalcontact/resigned/transfer_customer")
        assert {b["handover_userid"] for b in bodies} == {"zhang"}
        assert {b["takeover_userid"] for b in bodies} == {"li", "wang"}

        waiting = _invoke(["handover", "status", str(playbook), "--store", str(store),
                           "--output", "jsonl"])
        assert waiting.exit_code == 3, waiting.output
        lines = [json.loads(line) for line in waiting.output.splitlines()]
        assert len(lines) == 12 and all(not line["taken_over"] for line in lines)
        assert all(line["platform"].startswith("2 ") for line in lines)

        for eu in sorted(owned)[1:]:
            fake.set_transfer_status(eu, 1)
        fake.set_transfer_status(sorted(owned)[0], 3)
        refused = _invoke(["handover", "status", str(playbook), "--store", str(store),
                           "--output", "jsonl"])
        assert refused.exit_code == 3
        (left,) = [json.loads(line) for line in refused.output.splitlines()]
        assert left["platform"].startswith("3 ")

        fake.set_transfer_status(sorted(owned)[0], 1)
        done = _invoke(["handover", "status", str(playbook), "--store", str(store)])
        assert done.exit_code == 0, done.output
        assert "12 customers, 12 taken over, 0 not yet" in done.output


def test_tasks_after_the_departure_go_to_the_successor(tmp_path: Path) -> None:
    """No task row created after the hand-over is assigned to the departed owner."""
    with Receiver() as rx, WecomFake() as fake:
        playbook, events, profiles = _setup(tmp_path, rx, fake)
        store = _run(tmp_path, playbook, events, profiles)
    with sqlite3.connect(store) as db:
        tasks = [(created, json.loads(message)["body"]["assignee"]) for created, message in
                 db.execute("SELECT created_at, message FROM outbox WHERE kind = 'task'")]
    departed_at = 1737367200  # 2025-01-20T18:00:00+08:00
    later = [assignee for created, assignee in tasks if created > departed_at]
    assert later and "zhang" not in later
    assert {"li", "wang"} <= set(later)


def test_tag_changes_are_mirrored_to_wecom_for_mapped_tags(tmp_path: Path) -> None:
    """A dynamic tag named in tag_ids is added in WeCom when held and removed when dropped."""
    with Receiver() as rx, WecomFake() as fake:
        extra = WECOM.format(url=fake.url) + 'tag_ids = { "常客" = "etREGULAR" }\n' + """
[metrics.purchases_14d]
kind = "count"
event = "purchase"
window = "14d"

[tags."常客"]
when = "purchases_14d >= 2"
group = "behaviour"
"""
        playbook = shop_playbook(tmp_path, rx.url + "/hook", extra)
        events, profiles = shop_history(tmp_path, customers=12)
        for line in profiles.read_text(encoding="utf-8").splitlines():
            person = json.loads(line)
            fake.add_customer(person["external_userid"], person["owner"])
        fake.add_tags("etREGULAR")
        store = _run(tmp_path, playbook, events, profiles)
        bodies = fake.bodies("externalcontact/mark_tag")
        tagged = {(b["external_userid"], "add" if b.get("add_tag") else "remove")
                  for b in bodies}
        final = dict(fake.tags)
    with sqlite3.connect(store) as db:
        rows = list(db.execute("SELECT kind, status FROM outbox WHERE rule = 'mirror_tags'"))
    assert rows and {status for _, status in rows} == {"delivered"}
    adds = {eu for eu, op in tagged if op == "add"}
    removes = {eu for eu, op in tagged if op == "remove"}
    assert adds and removes and removes <= adds  # a 14-day window: every regular lapses
    assert all("etREGULAR" not in tags for tags in final.values())  # by 1 March, none held
