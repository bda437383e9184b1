"""The embedding API (docs/embedding.md): a host with its own database, sender and outbox.

The host's tables are tests/embed_host.py (plain sqlite3); channels are the shipped fake
`MemoryChannel`; time is virtual.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from embed_host import Conflict, HostDb, HostOutbox

import sopkit
from sopkit.channels import MemoryChannel

ROOT = Path(__file__).resolve().parent.parent
CRM = ROOT / "examples/crm/crm.toml"
TZ = dt.timezone(dt.timedelta(hours=8))


def _rt() -> sopkit.Runtime:
    return sopkit.Runtime(sopkit.load_playbook(CRM), engine="native")


def _buy(cid: str, ts: str) -> dict[str, object]:
    return {"customer_id": cid, "type": "purchase", "ts": ts, "amount": "88.00"}


def _stamp(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).replace(tzinfo=TZ).timestamp())


# ---- the clock --------------------------------------------------------------------------


def test_the_clock_is_an_aware_datetime_in_the_playbook_zone() -> None:
    """`Runtime.now` is None before anything happened, then the virtual time in +08:00."""
    rt = _rt()
    assert rt.now is None
    rt.ingest(_buy("c1", "2024-05-01T10:00:00"))
    assert rt.now == dt.datetime(2024, 5, 1, 10, 0, tzinfo=TZ)
    assert rt.now.utcoffset() == dt.timedelta(hours=8)


def test_ingest_takes_a_datetime_ts() -> None:
    """An event whose ts is a datetime (naive: the playbook's zone) is applied like text."""
    rt = _rt()
    (thanks,) = rt.ingest({"customer_id": "c1", "type": "purchase",
                           "ts": dt.datetime(2024, 5, 1, 10, 0), "amount": "5"})
    assert (thanks.rule, thanks.time) == ("thanks", "2024-05-01T10:00:00+08:00")


# ---- consent and ownership at delivery ------------------------------------------------------


def test_an_opt_out_after_a_quiet_hours_deferral_is_seen_at_delivery() -> None:
    """A thank-you planned at 22:00 waits for 09:00; the customer opts out at 23:00: asked at
    delivery, the runtime says why it must not go, also after a restart from exports."""
    rt = _rt()
    (thanks,) = rt.ingest(_buy("c1", "2024-05-01T22:00:00"))
    assert (thanks.status, thanks.details["deliver_at"]) == ("deferred",
                                                            "2024-05-02T09:00:00+08:00")
    assert rt.deliverable(thanks) is None
    rt.ingest({"customer_id": "c1", "type": "opt_out", "ts": "2024-05-01T23:00:00",
               "channel": "sms"})
    assert rt.deliverable(thanks) == "opt-out: sms (at delivery)"
    # the process dies; a new one loads what the host committed
    exports, clock = rt.export_changed(), rt.export_clock()
    again = _rt()
    again.load_clock(clock)
    for export in exports:
        again.load(export)
    again.advance("2024-05-02T09:00:00")
    assert again.deliverable(thanks) == "opt-out: sms (at delivery)"


def test_a_delayed_action_held_by_the_runtime_meets_the_opt_out() -> None:
    """The 3-day care message the runtime holds is suppressed when it comes due after an
    opt-out; the task of the same firing still reaches staff."""
    rt = _rt()
    rt.add_profile({"customer_id": "c1", "name": "李雷", "owner": "zhang.wei"})
    rt.ingest(_buy("c1", "2024-05-01T10:00:00"))
    rt.ingest({"customer_id": "c1", "type": "opt_out", "ts": "2024-05-02T10:00:00"})
    due = {(a.action, a.status, a.details.get("reason")) for a in rt.advance("2024-05-05")}
    assert due == {("send", "suppressed", "opt-out: all"), ("task", "planned", None)}


def _commit(rt: sopkit.Runtime, host: HostDb, actions: list[sopkit.Action]) -> None:
    host.commit(rt.export_changed(), rt.export_clock(), rt.outbox_rows(actions))


def test_the_dispatcher_suppresses_an_opted_out_row_after_a_kill(tmp_path: Path) -> None:
    """The host's process plans a deferred SMS into its own outbox and is killed (SIGKILL);
    the opt-out arrives in a new process; the public Dispatcher, given the runtime, settles
    the row `suppressed` with the reason and sends nothing."""
    db = tmp_path / "crm.db"
    script = f"""
import os, signal, sys
sys.path.insert(0, {str(ROOT / "tests")!r})
import sopkit
from embed_host import HostDb
rt = sopkit.Runtime(sopkit.load_playbook({str(CRM)!r}), engine="native")
host = HostDb({str(db)!r})
out = rt.ingest({{"customer_id": "c1", "type": "purchase", "ts": "2024-05-01T22:00:00"}})
host.commit(rt.export_changed(), rt.export_clock(), rt.outbox_rows(out))
os.kill(os.getpid(), signal.SIGKILL)
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script], env=env, check=False)
    assert done.returncode == -signal.SIGKILL
    host = HostDb(db)
    assert [(r["rule"], r["status"]) for r in host.outbox()] == [("thanks", "pending")]
    rt = _rt()
    rt.load_clock(host.clock() or b"")
    for export in host.exports():
        rt.load(export)
    _commit(rt, host, rt.ingest({"customer_id": "c1", "type": "opt_out",
                                 "ts": "2024-05-01T23:00:00", "channel": "sms"}))
    sms = MemoryChannel("sms")
    stats = sopkit.Dispatcher(HostOutbox(host), {"sms": sms}, worker="w1",
                              runtime=rt).run_once(_stamp("2024-05-02T09:00:00"))
    assert (stats.suppressed, sms.sent) == (1, [])
    (row,) = host.outbox()
    assert (row["status"], row["reason"]) == ("suppressed", "opt-out: sms (at delivery)")


def test_sopkits_own_store_is_an_outbox_for_the_public_dispatcher(tmp_path: Path) -> None:
    """A host may keep its state itself and use sopkit's store only as the outbox: the same
    Dispatcher, given the runtime, suppresses the opted-out row there too."""
    store = sopkit.open_store(str(tmp_path / "outbox.db"))
    rt = _rt()
    store.commit({}, {}, rt.outbox_rows(rt.ingest(_buy("c1", "2024-05-01T22:00:00"))))
    rt.ingest({"customer_id": "c1", "type": "opt_out", "ts": "2024-05-01T23:00:00"})
    sms = MemoryChannel("sms")
    sopkit.Dispatcher(store, {"sms": sms}, worker="w", runtime=rt).run_once(
        _stamp("2024-05-02T09:00:00"))
    (row,) = store.rows()
    assert (row.status, row.reason, sms.sent) == ("suppressed", "opt-out: all (at delivery)",
                                                  [])
    store.close()


def test_without_the_runtime_the_same_row_would_have_gone_out(tmp_path: Path) -> None:
    """The control: a Dispatcher not given the runtime sends the row the opt-out concerns."""
    host = HostDb(tmp_path / "crm.db")
    rt = _rt()
    _commit(rt, host, rt.ingest(_buy("c1", "2024-05-01T22:00:00")))
    rt.ingest({"customer_id": "c1", "type": "opt_out", "ts": "2024-05-01T23:00:00"})
    sms = MemoryChannel("sms")
    sopkit.Dispatcher(HostOutbox(host), {"sms": sms}, worker="w").run_once(
        _stamp("2024-05-02T09:00:00"))
    assert [m.key for m in sms.sent] == ["crm:1:thanks:c1:1:0"]


def test_a_waiting_task_goes_to_the_successor_after_a_hand_over(tmp_path: Path) -> None:
    """A follow-up task planned for zhang.wei is still in the outbox when he leaves; at
    delivery the Dispatcher sends it to his successor, with the new owner."""
    host = HostDb(tmp_path / "crm.db")
    rt = _rt()
    rt.add_profile({"customer_id": "c1", "name": "李雷", "owner": "zhang.wei"})
    rt.ingest(_buy("c1", "2024-05-01T10:00:00"))
    task = [a for a in rt.advance("2024-05-04T10:00:00") if a.action == "task"]
    assert task[0].details["assignee"] == "zhang.wei"
    _commit(rt, host, task)
    moves = rt.ingest({"type": "staff_departed", "staff": "zhang.wei",
                       "ts": "2024-05-04T11:00:00"})
    assert [(a.action, a.details["to"]) for a in moves] == [("reassign", "li.na")]
    staff = MemoryChannel("tasks")
    sopkit.Dispatcher(HostOutbox(host), {"": staff}, worker="w",
                      runtime=rt).run_once(_stamp("2024-05-04T12:00:00"))
    assert [r["status"] for r in host.outbox()] == ["delivered"]
    (sent,) = staff.sent
    assert (sent.body["assignee"], sent.owner) == ("li.na", "li.na")


def test_message_is_built_from_the_customer_as_held_now() -> None:
    """`Runtime.message` gives the channel Message: rendered text, contact, owner."""
    rt = _rt()
    rt.add_profile({"customer_id": "c1", "name": "李雷", "phone": "13800000000",
                    "owner": "zhang.wei"})
    (thanks,) = rt.ingest(_buy("c1", "2024-05-01T10:00:00"))
    message = rt.message(thanks)
    assert isinstance(message, sopkit.channels.Message)
    assert (message.body["message"], message.contact["phone"], message.owner) == (
        "李雷好，感谢您的第 1 次购买！", "13800000000", "zhang.wei")
    tag_only = sopkit.Action("t", "c1", "r", "tag", key="k")
    with pytest.raises(sopkit.SopkitError, match="'tag' action is a fact, not a delivery"):
        rt.message(tag_only)


# ---- pending and cancel ------------------------------------------------------------------


def test_pending_lists_what_the_runtime_holds_and_cancel_records_it() -> None:
    """The care message and task due 3 days after a purchase are listed with due time,
    channel and key; cancelling by key records both `cancelled` with the reason, and they
    never run."""
    rt = _rt()
    rt.ingest(_buy("c1", "2024-05-01T10:00:00"))
    listed = [(p.rule, p.action, p.channel, p.due.isoformat(), p.key)
              for p in rt.pending("c1")]
    assert listed == [
        ("follow_up", "send", "sms", "2024-05-04T10:00:00+08:00", "crm:1:follow_up:c1:1:0"),
        ("follow_up", "task", None, "2024-05-04T10:00:00+08:00", "crm:1:follow_up:c1:1:1")]
    records = rt.cancel("crm:1:follow_up:c1:1:0", "customer called: no follow-up")
    assert {(a.action, a.status, a.details["reason"]) for a in records} == {
        ("send", "cancelled", "customer called: no follow-up"),
        ("task", "cancelled", "customer called: no follow-up")}
    assert rt.pending("c1") == []
    assert rt.advance("2024-05-10") == []
    assert [e.customer_id for e in rt.export_changed()] == ["c1"]


def test_cancel_of_an_unknown_key_says_what_to_do() -> None:
    """A key nothing is scheduled under is a NotFound (a SopkitError and a KeyError)."""
    rt = _rt()
    rt.ingest(_buy("c1", "2024-05-01T10:00:00"))
    with pytest.raises(sopkit.NotFound, match=r"Runtime\.pending lists them") as caught:
        rt.cancel("crm:1:follow_up:c1:9:0", "x")
    assert isinstance(caught.value, KeyError)
    with pytest.raises(sopkit.SopkitError, match="needs a reason"):
        rt.cancel("crm:1:follow_up:c1:1:0", " ")


# ---- export, load, versions, paging ---------------------------------------------------------


def test_exports_are_versioned_per_change() -> None:
    """The first export of a customer is version 1, the next change version 2; nothing
    changed, nothing exported. `add_profile` on a known customer counts as a change."""
    rt = _rt()
    rt.ingest(_buy("c1", "2024-05-01T10:00:00"))
    assert [(e.customer_id, e.version) for e in rt.export_changed()] == [("c1", 1)]
    assert rt.export_changed() == []
    rt.add_profile({"customer_id": "c1", "name": "李雷"})
    (second,) = rt.export_changed()
    assert second.version == 2 and "李雷" in second.data.decode()
    assert rt.export("c1").version == 2  # unchanged since: the same version


def test_a_second_writer_is_caught_by_the_version_compare_and_swap(tmp_path: Path) -> None:
    """Two runtimes (two web workers) load version 1 and each apply a purchase: the first
    commit wins, the second one's compare-and-swap on the version fails instead of silently
    losing a purchase."""
    host = HostDb(tmp_path / "crm.db")
    first = _rt()
    _commit(first, host, first.ingest(_buy("c1", "2024-05-01T10:00:00")))
    a, b = _rt(), _rt()
    for rt in (a, b):
        rt.load_clock(host.clock() or b"")
        rt.load(host.exports()[0])
    _commit(a, host, a.ingest(_buy("c1", "2024-05-01T11:00:00")))
    with pytest.raises(Conflict):
        _commit(b, host, b.ingest(_buy("c1", "2024-05-01T12:00:00")))
    b.evict("c1")  # the loser reloads and applies its event again
    b.load(host.exports()[0])
    _commit(b, host, b.ingest(_buy("c1", "2024-05-01T12:00:00")))
    assert b.state("c1").metrics["purchases"] == 3


def test_loading_older_state_over_a_later_export_is_a_conflict() -> None:
    """A runtime that exported version 2 refuses version 1 of the same customer (two
    writers, or a rollback that did not evict first) with StateConflict."""
    rt = _rt()
    rt.ingest(_buy("c1", "2024-05-01T10:00:00"))
    (v1,) = rt.export_changed()
    rt.ingest(_buy("c1", "2024-05-02T10:00:00"))
    rt.export_changed()
    with pytest.raises(sopkit.StateConflict, match="already exported version 2"):
        rt.load(v1)


def test_loading_over_changes_not_exported_is_a_conflict() -> None:
    """A customer changed since its last export cannot be loaded over (the change would be
    lost without a trace); after `evict` it can."""
    rt = _rt()
    rt.ingest(_buy("c1", "2024-05-01T10:00:00"))
    (v1,) = rt.export_changed()
    rt.ingest(_buy("c1", "2024-05-02T10:00:00"))
    with pytest.raises(sopkit.StateConflict, match="has changes this runtime has not exported"):
        rt.load(v1)
    rt.evict("c1")
    rt.load(v1)
    assert rt.state("c1").metrics["purchases"] == 1


def test_rollback_is_evict_and_load_the_last_committed_state(tmp_path: Path) -> None:
    """The host's transaction fails: evicting the customers and loading what the table holds
    puts the runtime back where the last commit left it."""
    host = HostDb(tmp_path / "crm.db")
    rt = _rt()
    _commit(rt, host, rt.ingest(_buy("c1", "2024-05-01T10:00:00")))
    committed_clock = host.clock() or b""
    rt.ingest(_buy("c1", "2024-05-02T10:00:00"))
    failed = rt.export_changed()  # ... and the host's transaction fails
    for export in failed:
        rt.evict(export.customer_id)
    rt.load_clock(committed_clock)
    for export in host.exports(e.customer_id for e in failed):
        rt.load(export)
    assert rt.state("c1").metrics["purchases"] == 1
    assert rt.now == dt.datetime(2024, 5, 1, 10, tzinfo=TZ)


def _history() -> list[dict[str, object]]:
    events: list[dict[str, object]] = []
    for day in range(1, 60, 4):
        for n, cid in enumerate(("c1", "c2", "c3", "c4")):
            if (day + n) % 3:
                events.append(_buy(cid, f"2024-{1 + day // 28:02d}-{1 + day % 28:02d}"
                                        f"T{9 + n * 4:02d}:00:00"))
    events.append({"customer_id": "c2", "type": "opt_out", "ts": "2024-03-01T08:00:00"})
    return sorted(events, key=lambda e: str(e["ts"]))


def test_a_host_that_pages_customers_in_and_out_decides_the_same() -> None:
    """A host that holds no customer between requests (evicts after each commit, pages in
    the ones `wake_at` says are due) gets exactly the actions of a runtime holding all."""
    whole = _rt()
    expected = []
    for event in _history():
        expected += [a.to_json() for a in whole.ingest(event)]
    expected += [a.to_json() for a in whole.advance("2024-06-01")]

    table: dict[str, sopkit.StateExport] = {}
    clock = b""
    rt = _rt()
    got = []

    def commit() -> None:
        nonlocal clock
        for export in rt.export_changed():
            table[export.customer_id] = export
        clock = rt.export_clock()
        for cid in list(rt.customer_ids()):
            rt.evict(cid)

    def page_in(cid: str) -> None:
        if cid in table:
            rt.load(table[cid])

    def wake_until(ts: str) -> None:
        limit = dt.datetime.fromisoformat(ts).replace(tzinfo=TZ)
        while True:
            due = sorted((e.wake_at, cid) for cid, e in table.items()
                         if e.wake_at is not None and e.wake_at <= limit)
            if not due:
                return
            when = due[0][0]
            for _, cid in [d for d in due if d[0] == when]:
                page_in(cid)
            got.extend(a.to_json() for a in rt.advance(when))
            commit()

    for event in _history():
        wake_until(str(event["ts"]))
        if clock:
            rt.load_clock(clock)
        page_in(str(event["customer_id"]))
        got.extend(a.to_json() for a in rt.ingest(event))
        commit()
    wake_until("2024-06-01T00:00:00")
    rt.load_clock(clock)
    got.extend(a.to_json() for a in rt.advance("2024-06-01"))
    assert len(expected) > 40 and got == expected


def test_due_lists_the_next_wake_ups_of_the_customers_held() -> None:
    """`due` gives (time, customer) earliest first, up to a time and a limit."""
    rt = _rt()
    rt.ingest(_buy("c1", "2024-05-01T10:00:00"))
    rt.ingest(_buy("c2", "2024-05-01T09:30:00+07:00"))
    assert [(w.isoformat(), c) for w, c in rt.due()] == [
        ("2024-05-04T10:00:00+08:00", "c1"), ("2024-05-04T10:30:00+08:00", "c2")]
    assert rt.due(limit=1) == rt.due()[:1]
    assert [c for _, c in rt.due(until="2024-05-04T10:00:00")] == ["c1"]


def test_evict_refuses_a_playbook_with_population_wide_fits() -> None:
    """[rfm] fits read every customer: evicting one would change everyone's scores, so it
    is refused with the reason."""
    rt = sopkit.Runtime(sopkit.load_playbook(ROOT / "playbooks/vip.toml"), engine="native")
    rt.ingest({"customer_id": "c1", "type": "purchase", "ts": "2024-05-01T10:00:00",
               "amount": "5"})
    with pytest.raises(sopkit.SopkitError, match=r"\[rfm\] or \[clv\]"):
        rt.evict("c1")


# ---- errors a host can act on ----------------------------------------------------------


def test_every_misuse_is_a_sopkit_error_with_a_reason() -> None:
    """Backwards time, a time that is not ISO 8601, an unknown customer, damaged state bytes:
    each a SopkitError (still a ValueError / KeyError where it was one) saying what to do."""
    rt = _rt()
    rt.ingest(_buy("c1", "2024-05-01T10:00:00"))
    with pytest.raises(sopkit.ClockError, match="time only goes forward") as back:
        rt.advance("2024-04-01")
    assert isinstance(back.value, ValueError)
    with pytest.raises(sopkit.ClockError, match="bad time 'tomorrow': expected ISO 8601"):
        rt.advance("tomorrow")
    for call in (rt.state, rt.dump_customer, rt.export, rt.pending):
        with pytest.raises(sopkit.NotFound, match="customer 'nobody' is not in this runtime"):
            call("nobody")
    with pytest.raises(sopkit.StateError, match="customer c9: not sopkit's stored state"):
        rt.load(sopkit.StateExport("c9", 1, b"\x00garbage"))
    with pytest.raises(sopkit.StateError, match="runtime state"):
        rt.load_clock(b"{}")
    with pytest.raises(sopkit.EventError, match="an event is a mapping"):
        rt.ingest("purchase")  # type: ignore[arg-type]  # the mistake under test
    with pytest.raises(sopkit.SopkitError, match="takes a StateExport"):
        rt.load(b"{}")  # type: ignore[arg-type]  # the mistake under test
    with pytest.raises(sopkit.SopkitError, match="batch must be at least 1"):
        sopkit.Dispatcher(HostOutbox.__new__(HostOutbox), {}, worker="w", batch=0)


# ---- missing values --------------------------------------------------------------------------


def test_a_null_profile_value_is_missing_not_the_text_none() -> None:
    """`name: None` never reads "None": the thank-you renders its declared default, the care
    message (no default) is held as `suppressed` with `missing value: profile.name`."""
    rt = _rt()
    rt.add_profile({"customer_id": "c1", "name": None, "birthday": None, "phone": ""})
    assert rt.state("c1").profile == {}
    (thanks,) = rt.ingest(_buy("c1", "2024-05-01T10:00:00"))
    assert thanks.details["message"] == "您好，感谢您的第 1 次购买！"
    care = [a for a in rt.advance("2024-05-05") if a.action == "send"]
    assert [(a.status, a.details["reason"]) for a in care] == [
        ("suppressed", "missing value: profile.name")]
    assert "None" not in care[0].details["message"]


def test_an_empty_value_clears_an_attribute_and_a_date_may_be_empty() -> None:
    """A profile event giving "" or null for a known attribute removes it (missing); an empty
    date is missing, not an error."""
    rt = _rt()
    rt.add_profile({"customer_id": "c1", "name": "李雷", "birthday": "1990-05-10"})
    rt.ingest({"customer_id": "c1", "type": "profile", "ts": "2024-05-01T10:00:00",
               "name": "", "birthday": None})
    assert rt.state("c1").profile == {}


def _outbox_rows(store: Path) -> list[tuple[str, str, str]]:
    try:
        with sqlite3.connect(store) as db:
            return db.execute("SELECT rule, status, reason FROM outbox ORDER BY id").fetchall()
    except sqlite3.OperationalError:  # not created yet
        return []


def test_sopkit_run_killed_then_an_opt_out_suppresses_the_waiting_row(tmp_path: Path) -> None:
    """`sopkit run` plans a deferred thank-you and is killed (SIGKILL); the opt-out comes to
    the next run, whose dispatcher settles the row `suppressed` at 09:00 instead of sending."""
    events, store = tmp_path / "events.jsonl", tmp_path / "live.db"
    events.write_text(json.dumps(_buy("c1", "2024-05-01T22:00:00")) + "\n", encoding="utf-8")
    base = [sys.executable, "-m", "sopkit", "run", str(CRM), "--store", str(store),
            "--events", str(events), "--lateness", "0s", "--engine", "native"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([*base, "--follow", "--tick", "0.05", "--clock",
                             "2024-05-01T22:30:00", "--send-from", "2000-01-01"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            if _outbox_rows(store):
                break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert _outbox_rows(store) == [("thanks", "pending", "quiet hours 21:00-09:00")]
    with events.open("a", encoding="utf-8") as f:
        f.write(json.dumps({"customer_id": "c1", "type": "opt_out", "channel": "sms",
                            "ts": "2024-05-01T23:00:00"}) + "\n")
    done = subprocess.run([*base, "--once", "--clock", "2024-05-02T10:00:00"], env=env,
                          capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    assert ("thanks", "suppressed", "opt-out: sms (at delivery)") in _outbox_rows(store)
    assert "感谢" not in done.stdout  # the console channel printed nothing


def test_upgrade_deploys_a_new_version_over_the_hosts_exports() -> None:
    """v2 over v1's exports: the renamed follow-up keeps its pending action (same due time),
    the new `regular` rule is forward-only for a customer who already qualifies, the removed
    recall is named for the outbox, and every export is the next version."""
    old = _rt()
    for day in (1, 2, 3):
        old.ingest(_buy("c1", f"2024-05-0{day}T10:00:00"))
    (before,) = old.export_changed()
    v2 = sopkit.load_playbook(ROOT / "examples/crm/crm-v2.toml")
    new = sopkit.upgrade(v2, previous_ir=old.ir, clock=old.export_clock(), customers=[before])
    assert [(e.customer_id, e.version) for e in new.exports] == [("c1", before.version + 1)]
    assert new.cancel_rules == {"recall": "rule removed in version 2"}
    assert {c["kind"] for c in new.changes} == {"rule added", "rule removed", "rule renamed"}
    rt = new.runtime
    assert [(p.rule, p.due.isoformat()) for p in rt.pending("c1")][:2] == [
        ("care_3d", "2024-05-04T10:00:00+08:00"), ("care_3d", "2024-05-04T10:00:00+08:00")]
    later = rt.ingest(_buy("c1", "2024-05-04T11:00:00"))
    assert "regular" not in {a.rule for a in later}  # already qualified at deploy: armed


def test_upgrade_without_the_previous_ir_says_what_it_needs() -> None:
    """`previous_ir` must be the running version's Runtime.ir."""
    rt = _rt()
    with pytest.raises(sopkit.SopkitError, match=r"previous_ir=\.\.\.\) takes the running"):
        sopkit.upgrade(sopkit.load_playbook(CRM), previous_ir={}, clock=rt.export_clock(),
                       customers=[])


def test_deliverable_says_when_a_waiting_message_has_expired(tmp_path: Path) -> None:
    """A thank-you that `expires = "1h"` after its 09:00 delivery may go at 09:30 but not at
    10:30: the reason names the deadline."""
    text = CRM.read_text(encoding="utf-8").replace(
        'template = "thanks" }', 'template = "thanks", expires = "1h" }')
    path = tmp_path / "crm.toml"
    path.write_text(text, encoding="utf-8")
    rt = sopkit.Runtime(sopkit.load_playbook(path), engine="native")
    (thanks,) = rt.ingest(_buy("c1", "2024-05-01T22:00:00"))
    assert rt.deliverable(thanks, at="2024-05-02T09:30:00") is None
    assert rt.deliverable(thanks, at=dt.datetime(2024, 5, 2, 10, 30)) == (
        "expired: not delivered by 2024-05-02T10:00:00+08:00")
