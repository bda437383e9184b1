"""The dispatcher (sopkit/_live/dispatch.py), seed-23 sample: its settings and default backoff."""

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


RUN_PLAYBOOK = '''
[playbook]
name = "shop"
version = "1"
timezone = "Asia/Shanghai"

[events.purchase]
amount = "decimal"

[channels.crm]
type = "webhook"
url = "URL"

[[rules]]
name = "notify"
on = "purchase"
actions = [{ type = "webhook", channel = "crm", payload = { event = "bought" } }]
'''


def test_sopkit_run_retries_a_failing_webhook_after_the_documented_default_backoff(
        tmp_path: Path) -> None:
    """A CRM answering 503 to each of 3 customers' webhooks: `sopkit run --once` at 10:00
    puts every row back to pending, due after exactly the wait the documented defaults give
    (sopkit.Dispatcher's backoff: base_delay 30 s), and the next run's 503 after double."""
    import json

    from http_receiver import Receiver, Reply
    from typer.testing import CliRunner

    from sopkit._cli.app import app

    events = tmp_path / "events.jsonl"
    events.write_text("".join(json.dumps({
        "customer_id": f"c{i}", "type": "purchase", "ts": "2024-12-12T09:00:00",
        "amount": "3"}) + "\n" for i in range(3)), encoding="utf-8")
    store = str(tmp_path / "live.db")
    with Receiver(default=Reply(503, body={"ok": False})) as rx:
        playbook = tmp_path / "shop.toml"
        playbook.write_text(RUN_PLAYBOOK.replace("URL", rx.url + "/hook"), encoding="utf-8")
        due: list[dict[str, tuple[int, int]]] = []
        for clock in ("2024-12-12T10:00:00", "2024-12-12T11:00:00"):
            ran = CliRunner().invoke(app, [
                "run", "--send-from", "2000-01-01", str(playbook), "--store", store,
                "--events", str(events), "--once", "--clock", clock, "--lateness", "0s",
                "--engine", "native", "--quarantine", str(tmp_path / "q.jsonl")])
            assert ran.exit_code == 0, ran.output
            listed = CliRunner().invoke(app, ["outbox", "list", "--store", store,
                                              "--output", "jsonl", "--unmasked"])
            assert listed.exit_code == 0, listed.output
            rows = [json.loads(line) for line in listed.stdout.splitlines()]
            assert {r["status"] for r in rows} == {"pending"} and len(rows) == 3
            due.append({r["key"]: (r["attempts"], r["due_at"]) for r in rows})
        assert len(rx.requests) == 6
    opened = sopkit.open_store(store)
    try:
        documented = sopkit.Dispatcher(opened, {}, worker="w")  # the defaults, as documented
        ten, eleven = 1_733_968_800, 1_733_972_400  # 10:00 and 11:00 in Shanghai
        for key in due[0]:
            assert due[0][key] == (1, ten + documented.backoff(key, 1))
            assert due[1][key] == (2, eleven + documented.backoff(key, 2))
    finally:
        opened.close()
