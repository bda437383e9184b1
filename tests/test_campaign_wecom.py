"""Campaign group sends on WeCom (企业群发), against the local fake WeCom server over HTTP.

One add_msg_template task per owner with that owner's customers of the audience, batched
within the API's limit; each row gets the task's msgid; the owners' confirmations come back
through get_groupmsg_send_result as message_sent events that a live run applies.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner
from wecom_fake import ADD_MSG_TEMPLATE, GROUPMSG_SEND_RESULT, WecomFake

import sopkit
from sopkit._cli.app import app
from sopkit._live.loop import LiveRun
from sopkit._live.openstore import open_store
from sopkit.channels import Message
from sopkit.channels._wecom import MAX_GROUP_BATCH, WecomChannel

SECRET_VAR = "SOPKIT_TEST_WECOM_SECRET"
OWNERS = ("li", "wang", "zhang")

PLAYBOOK = '''
[playbook]
name = "tea"
timezone = "Asia/Shanghai"
day_starts = "09:00"

[profile]
name = "string"
external_userid = "string"

[events.purchase]
amount = "decimal"

[events.message_sent]
campaign = "string"
msgid = "string"

[metrics]
days_since_purchase = {{ kind = "days_since", event = "purchase" }}
campaign_messages = {{ kind = "count", event = "message_sent" }}

[channels.wecom]
type = "wecom"
corp_id = "ww-fake-corp"
secret_env = "{secret_var}"
base_url = "{url}"
{extra}

[templates.d12]
text = "双十二快乐！老朋友专享 {{{{ params.coupon }}}} 满减券，12 月 12 日当天有效。"

[[campaigns]]
name = "double12"
at = "2024-12-12T10:00"
audience = "days_since_purchase <= 60"
actions = [{{ type = "send", channel = "wecom", template = "d12", params = {{ coupon = "D12" }} }}]
'''
CLOCK = "2024-12-12T10:00:00"


@pytest.fixture
def fake() -> Iterator[WecomFake]:
    with WecomFake() as server:
        server.add_staff(*OWNERS)
        yield server


def _setup(tmp: Path, fake: WecomFake, customers: int = 9, extra: str = "",
           strangers: tuple[int, ...] = ()) -> tuple[Path, Path, Path]:
    """A playbook on the fake, and a history: customer i owned by OWNERS[i % 3]; customers
    in `strangers` are in WeCom under another owner than sopkit believes. The last customer
    bought too long ago to be in the audience."""
    playbook = tmp / "tea.toml"
    playbook.write_text(PLAYBOOK.format(secret_var=SECRET_VAR, url=fake.url, extra=extra),
                        encoding="utf-8")
    profiles, events = [], []
    for i in range(customers):
        owner = OWNERS[i % 3]
        profiles.append({"customer_id": f"t{i:03d}", "name": f"顾客{i}",
                         "external_userid": f"wm{i:04d}", "owner": owner})
        fake.add_customer(f"wm{i:04d}", OWNERS[(i + 1) % 3] if i in strangers else owner)
        day = "2024-08-01" if i == customers - 1 else "2024-11-20"
        events.append({"customer_id": f"t{i:03d}", "type": "purchase",
                       "ts": f"{day}T10:{i % 60:02d}:00", "amount": "20"})
    events.sort(key=lambda e: e["ts"])
    history = tmp / "events.jsonl"
    history.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    people = tmp / "profiles.jsonl"
    people.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in profiles),
                      encoding="utf-8")
    return playbook, history, people


def _invoke(args: list[str], fake: WecomFake) -> Any:
    return CliRunner().invoke(app, args, env={SECRET_VAR: fake.secret})


def _run(playbook: Path, store: Path, events: Path, profiles: Path | None, fake: WecomFake,
         clock: str = CLOCK) -> None:
    args = ["run", "--send-from", "2000-01-01",
            str(playbook), "--store", str(store), "--events", str(events), "--once",
            "--clock", clock, "--lateness", "0s", "--engine", "native",
            "--quarantine", str(store.with_suffix(".q.jsonl"))]
    if profiles is not None:
        args += ["--profiles", str(profiles)]
    result = _invoke(args, fake)
    assert result.exit_code == 0, result.output


def _rows(store: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(store) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM outbox ORDER BY customer_id")]


def test_one_group_task_per_owner_with_that_owners_audience(tmp_path: Path,
                                                            fake: WecomFake) -> None:
    """Each owner gets one add_msg_template task holding exactly their customers in it."""
    playbook, events, profiles = _setup(tmp_path, fake, customers=10)
    store = tmp_path / "live.db"
    _run(playbook, store, events, profiles, fake)
    bodies = fake.bodies(ADD_MSG_TEMPLATE)
    assert sorted(b["sender"] for b in bodies) == sorted(OWNERS)
    expected = {owner: [f"wm{i:04d}" for i in range(9) if OWNERS[i % 3] == owner]
                for owner in OWNERS}  # t009 bought in August: not in the audience
    assert {b["sender"]: b["external_userid"] for b in bodies} == expected
    assert {b["text"]["content"] for b in bodies} == {
        "双十二快乐！老朋友专享 D12 满减券，12 月 12 日当天有效。"}
    rows = _rows(store)
    assert len(rows) == 9 and {r["status"] for r in rows} == {"delivered"}
    msgid_of = {task["sender"]: msgid for msgid, task in fake.templates.items()}
    for row in rows:
        receipt = json.loads(row["receipt"])
        owner = json.loads(row["message"])["owner"]
        assert receipt["provider_id"] == msgid_of[owner]
        assert receipt["data"] == {"sender": owner, "customers": 3}


def test_large_owners_are_split_within_the_batch_limit(tmp_path: Path,
                                                       fake: WecomFake) -> None:
    """With group_batch = 2, an owner's 3 customers go in tasks of 2 and 1, none twice."""
    playbook, events, profiles = _setup(tmp_path, fake, customers=10,
                                        extra="group_batch = 2")
    _run(playbook, tmp_path / "live.db", events, profiles, fake)
    sizes: dict[str, list[int]] = {}
    for body in fake.bodies(ADD_MSG_TEMPLATE):
        sizes.setdefault(body["sender"], []).append(len(body["external_userid"]))
    assert sizes == {owner: [2, 1] for owner in OWNERS}
    sent = [eu for b in fake.bodies(ADD_MSG_TEMPLATE) for eu in b["external_userid"]]
    assert sorted(sent) == [f"wm{i:04d}" for i in range(9)]
    assert MAX_GROUP_BATCH == 10_000  # 创建企业群发: 最多可一次指定1万个客户


def test_a_customer_in_fail_list_is_dead_and_the_others_delivered(tmp_path: Path,
                                                                  fake: WecomFake) -> None:
    """A customer WeCom leaves out of the task (not the owner's) fails; the task goes on."""
    playbook, events, profiles = _setup(tmp_path, fake, customers=7, strangers=(3,))
    store = tmp_path / "live.db"
    _run(playbook, store, events, profiles, fake)
    rows = {r["customer_id"]: r for r in _rows(store)}
    assert rows["t003"]["status"] == "dead"
    assert "fail_list" in rows["t003"]["last_error"]
    assert {cid for cid, r in rows.items() if r["status"] == "delivered"} == \
        {"t000", "t001", "t002", "t004", "t005"}
    assert len(fake.bodies(ADD_MSG_TEMPLATE)) == 3


def _channel(fake: WecomFake, **config: Any) -> WecomChannel:
    return WecomChannel("wecom", {"corp_id": fake.corp_id, "secret_env": SECRET_VAR,
                                  "base_url": fake.url, **config}, {SECRET_VAR: fake.secret})


def _send(i: int, owner: str, text: str = "双十二快乐") -> Message:
    return Message(key=f"tea:1:campaign:double12:1733968800:t{i:03d}:0", kind="send",
                   channel="wecom", customer_id=f"t{i:03d}", rule="double12",
                   time="2024-12-12T10:00:00+08:00",
                   body={"firing": "2024-12-12T10:00:00+08:00", "message": text},
                   contact={"external_userid": f"wm{i:04d}"}, owner=owner)


def test_send_group_splits_tasks_by_text_and_keeps_receipts_in_order(fake: WecomFake) -> None:
    """Different texts for one owner are different tasks; receipts follow the messages."""
    for i in range(4):
        fake.add_customer(f"wm{i:04d}", "li")
    with _channel(fake) as channel:
        receipts = channel.send_group([_send(0, "li", "A"), _send(1, "li", "B"),
                                       _send(2, "li", "A"), _send(3, "", "A")])
    bodies = fake.bodies(ADD_MSG_TEMPLATE)
    assert [(b["text"]["content"], b["external_userid"]) for b in bodies] == [
        ("A", ["wm0000", "wm0002"]), ("B", ["wm0001"])]
    assert [r.status for r in receipts] == ["delivered", "delivered", "delivered", "failed"]
    assert receipts[0].provider_id == receipts[2].provider_id != receipts[1].provider_id
    assert "no owner" in receipts[3].detail


def test_a_refused_task_asks_to_retry_only_its_customers(fake: WecomFake) -> None:
    """A WeCom frequency limit on one owner's task retries that task; the other goes out."""
    for i, owner in ((0, "li"), (1, "wang")):
        fake.add_customer(f"wm{i:04d}", owner)
    fake.fail_next(ADD_MSG_TEMPLATE, 45009)
    with _channel(fake) as channel:
        first, second = channel.send_group([_send(0, "li"), _send(1, "wang")])
    assert (first.status, first.retry_after) == ("retry", 60.0)
    assert second.status == "delivered"


def test_send_results_come_back_as_message_sent_events(tmp_path: Path,
                                                       fake: WecomFake) -> None:
    """Confirmed tasks are reported sent, fed back once as events, and counted by the run."""
    playbook, events, profiles = _setup(tmp_path, fake, customers=7)
    store = tmp_path / "live.db"
    _run(playbook, store, events, profiles, fake)
    (li_task,) = [m for m, t in fake.templates.items() if t["sender"] == "li"]
    fake.confirm_template(li_task)
    args = ["campaign", "results", str(playbook), "--store", str(store), "--append-to",
            str(events), "--clock", "2024-12-12T18:00:00", "--output", "jsonl"]
    report = _invoke(args, fake)
    assert report.exit_code == 0, report.output
    (firing, appended) = [json.loads(line) for line in report.stdout.splitlines()]
    assert (firing["campaign"], firing["tasks"], firing["sent"], firing["waiting"]) == \
        ("double12", 3, 2, 4)
    assert firing["rows"] == {"delivered": 6} and appended["appended"] == 2
    assert fake.count(GROUPMSG_SEND_RESULT) == 3
    fed = [json.loads(line) for line in events.read_text(encoding="utf-8").splitlines()
           if json.loads(line)["type"] == "message_sent"]
    assert [(e["customer_id"], e["campaign"], e["msgid"], e["ts"]) for e in fed] == [
        ("t000", "double12", li_task, "2024-12-12T18:00:00+08:00"),
        ("t003", "double12", li_task, "2024-12-12T18:00:00+08:00")]
    again = _invoke(args, fake)
    assert json.loads(again.stdout.splitlines()[-1])["appended"] == 0  # each customer once
    table = _invoke(["campaign", "results", str(playbook), "--store", str(store)], fake)
    assert "Campaign results per firing" in table.stdout
    (line,) = [x for x in table.stdout.splitlines() if "double12" in x]
    cells = [c.strip() for c in line.strip("│").split("│")]
    assert (cells[:3], cells[4:]) == (["double12", "2024-12-12 10:00", "wecom"],
                                      ["3", "2", "4", "0", "33%"])

    _run(playbook, store, events, None, fake, clock="2024-12-13T10:00:00")
    db = open_store(str(store))
    try:
        live = LiveRun(sopkit.load_playbook(playbook), db, engine="native")
        counts = {cid: live.runtime.state(cid).metrics["campaign_messages"]
                  for cid in ("t000", "t001", "t003")}
    finally:
        db.close()
    assert counts == {"t000": 1, "t001": 0, "t003": 1}


def test_results_without_a_message_sent_event_type_is_a_usage_error(tmp_path: Path,
                                                                     fake: WecomFake) -> None:
    """--append-to needs [events.message_sent]; the error says what to declare."""
    playbook, _, _ = _setup(tmp_path, fake, customers=2)
    playbook.write_text(playbook.read_text(encoding="utf-8").replace(
        "[events.message_sent]\ncampaign = \"string\"\nmsgid = \"string\"\n", "").replace(
        'campaign_messages = { kind = "count", event = "message_sent" }\n', ""),
        encoding="utf-8")
    result = _invoke(["campaign", "results", str(playbook), "--store",
                      str(tmp_path / "x.db"), "--append-to", str(tmp_path / "e.jsonl")], fake)
    assert result.exit_code == 2
    assert "add [events.message_sent]" in result.stderr
