"""The console channel (masked lines on stdout) and the jsonl channel (an idempotent file)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from sopkit.channels import ChannelConfigError, Message, build
from sopkit.channels._console import ConsoleChannel, JsonlChannel

NOW = 1_717_000_000.0  # 2024-05-29T16:26:40+00:00
PHONE = "13812345678"


def message(key: str = "retail:1:winback:c42:1:0", kind: str = "send",
            body: dict[str, object] | None = None, customer: str = "c42") -> Message:
    return Message(key=key, kind=kind, channel="out", customer_id=customer, rule="挽回",
                   time="2024-05-29T09:00:00+08:00",
                   body=body if body is not None else {
                       "message": f"王小明您好，有疑问请拨 {PHONE} 或写信 li.lei@example.com"},
                   contact={"phone": PHONE, "email": "li.lei@example.com"})


# -- console -------------------------------------------------------------------------------

def test_console_prints_one_masked_line(capsys: pytest.CaptureFixture[str]) -> None:
    """Each message prints one line with time, customer, rule, kind, channel and the text."""
    ch = ConsoleChannel("out", {}, {})
    receipt = ch.send(message())
    ch.send(message(customer="wang.fang@example.com"))
    out = capsys.readouterr().out
    first, second = out.splitlines()
    assert first == ("2024-05-29T09:00:00+08:00  c42  挽回  send → out  "
                     "王小明您好，有疑问请拨 138****5678 或写信 l***@example.com")
    assert second.split("  ")[1] == "w***@example.com"  # an e-mail customer id is masked too
    assert PHONE not in out and "li.lei" not in out
    assert receipt.status == "delivered"


@pytest.mark.parametrize(("kind", "body", "gist"), [
    ("task", {"note": "回访\n王小明", "due": "2024-06-01", "assignee": "staff-07"},
     "回访 王小明 (due 2024-06-01, assignee staff-07)"),
    ("webhook", {"payload": {"event": "流失预警", "score": 87}},
     '{"event":"流失预警","score":87}'),
    ("tag", {"tag": "高价值"}, "高价值"),
    ("reassign", {"from_owner": "staff-07", "to": "staff-09"}, "staff-07 → staff-09"),
    ("send", {"template": "renew"}, "template renew"),
    ("send", {"title": "续费提醒", "message": "课时包快到期了"}, "续费提醒: 课时包快到期了"),
])
def test_console_summarises_each_kind(capsys: pytest.CaptureFixture[str], kind: str,
                                      body: dict[str, object], gist: str) -> None:
    """The gist is the note, payload, tag, owners or title and message, on one line."""
    ConsoleChannel("out", {}, {}).send(message(kind=kind, body=body))
    assert capsys.readouterr().out.rstrip("\n").endswith(f"{kind} → out  {gist}")


def test_console_shortens_long_messages(capsys: pytest.CaptureFixture[str]) -> None:
    """A long message is cut to 80 characters with an ellipsis."""
    ConsoleChannel("out", {}, {}).send(message(body={"message": "好" * 500}))
    gist = capsys.readouterr().out.rstrip("\n").split("  ")[-1]
    assert gist == "好" * 79 + "…"


def test_console_rejects_config_keys() -> None:
    """The console channel has no keys; any key is named as unknown."""
    with pytest.raises(ChannelConfigError, match="unknown key 'path'"):
        ConsoleChannel("out", {"path": "x"}, {})


# -- jsonl ---------------------------------------------------------------------------------

def jsonl(path: Path, **config: object) -> JsonlChannel:
    return JsonlChannel("out", {"path": str(path), **config}, {}, clock=lambda: NOW)


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_jsonl_writes_the_real_message(tmp_path: Path) -> None:
    """A line holds the whole message, unmasked, in UTF-8, with status and written_at."""
    path = tmp_path / "out" / "actions.jsonl"  # parent folders are created
    with jsonl(path) as ch:
        receipt = ch.send(message())
    assert receipt.status == "delivered" and receipt.provider_id == "line 1"
    assert "王小明" in path.read_text(encoding="utf-8")  # not \u escapes
    (record,) = lines(path)
    assert record == {**message().to_json(), "status": "delivered",
                      "written_at": "2024-05-29T16:26:40+00:00"}
    assert record["contact"] == {"phone": PHONE, "email": "li.lei@example.com"}


def test_jsonl_is_idempotent_across_instances(tmp_path: Path) -> None:
    """A key already in the file is not written again, by this or a later instance."""
    path = tmp_path / "actions.jsonl"
    with jsonl(path) as first:
        assert first.send(message()).detail.endswith("line 1")
        assert first.send(message()).detail == "already written"
        first.send(message(key="k2"))
    with jsonl(path) as second:
        repeat = second.send(message())
        new = second.send(message(key="k3"))
    assert (repeat.status, repeat.detail) == ("delivered", "already written")
    assert new.provider_id == "line 3"
    assert [r["key"] for r in lines(path)] == ["retail:1:winback:c42:1:0", "k2", "k3"]


def test_jsonl_sees_what_another_open_instance_wrote(tmp_path: Path) -> None:
    """Two instances open on one file at once never write the same key twice."""
    path = tmp_path / "actions.jsonl"
    with jsonl(path) as a, jsonl(path) as b:
        a.send(message(key="k1"))
        assert b.send(message(key="k1")).detail == "already written"
        b.send(message(key="k2"))
        assert a.send(message(key="k2")).detail == "already written"
        assert a.send(message(key="k3")).provider_id == "line 3"
    assert [r["key"] for r in lines(path)] == ["k1", "k2", "k3"]


def test_jsonl_concurrent_writers_write_each_key_once(tmp_path: Path) -> None:
    """Eight threads over two instances sending the same 50 keys leave 50 whole lines."""
    path = tmp_path / "actions.jsonl"
    channels = [jsonl(path, fsync=False), jsonl(path, fsync=False)]
    keys = [f"k{i}" for i in range(50)]

    def work(n: int) -> None:
        ch = channels[n % 2]
        for key in keys if n % 2 else reversed(keys):
            ch.send(message(key=key))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for ch in channels:
        ch.close()
    assert sorted(r["key"] for r in lines(path)) == sorted(keys)


def test_jsonl_cuts_a_torn_last_line(tmp_path: Path) -> None:
    """A line cut short by a crash is removed on opening; its message is then written whole."""
    path = tmp_path / "actions.jsonl"
    whole = json.dumps(message(key="k1").to_json(), ensure_ascii=False)
    torn = json.dumps(message(key="k2").to_json(), ensure_ascii=False)[:40]
    path.write_text(whole + "\n" + torn, encoding="utf-8")
    with jsonl(path) as ch:
        assert ch.send(message(key="k1")).detail == "already written"
        assert ch.send(message(key="k2")).provider_id == "line 2"
    assert [r["key"] for r in lines(path)] == ["k1", "k2"]


def test_jsonl_keeps_a_whole_last_line_without_newline(tmp_path: Path) -> None:
    """A complete last record missing its newline is kept and its key honoured."""
    path = tmp_path / "actions.jsonl"
    path.write_text(json.dumps({"key": "k1"}), encoding="utf-8")
    with jsonl(path) as ch:
        assert ch.send(message(key="k1")).detail == "already written"
        ch.send(message(key="k2"))
    assert [r["key"] for r in lines(path)] == ["k1", "k2"]


def test_jsonl_refuses_a_foreign_file(tmp_path: Path) -> None:
    """A file with a line that is not JSON is refused, naming the line."""
    path = tmp_path / "notes.txt"
    path.write_text('{"key": "k1"}\nhello\n{"key": "k2"}\n', encoding="utf-8")
    with pytest.raises(ChannelConfigError, match=r"notes.txt line 2 is not JSON"):
        jsonl(path)


def test_jsonl_config_errors(tmp_path: Path) -> None:
    """A missing path, a folder as path, a bad fsync and unknown keys are named."""
    with pytest.raises(ChannelConfigError, match="'path' is required"):
        JsonlChannel("out", {}, {})
    with pytest.raises(ChannelConfigError, match="is a folder"):
        JsonlChannel("out", {"path": str(tmp_path)}, {})
    with pytest.raises(ChannelConfigError, match="'fsync' must be true or false"):
        JsonlChannel("out", {"path": str(tmp_path / "a.jsonl"), "fsync": "yes"}, {})
    with pytest.raises(ChannelConfigError, match="did you mean 'path'"):
        JsonlChannel("out", {"paht": "a.jsonl"}, {})


def test_built_through_the_plugin_registry(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """`type = "console"` and `type = "jsonl"` build these channels through entry points."""
    console = build("out", {"type": "console"}, {})
    assert isinstance(console, ConsoleChannel)
    sink = build("file", {"type": "jsonl", "path": str(tmp_path / "a.jsonl")}, {})
    assert isinstance(sink, JsonlChannel)
    assert sink.send(message()).status == "delivered"
    sink.close()
