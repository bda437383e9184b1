"""`sopkit diff`: what a playbook change changes, replayed over the membership example.

The old playbook is playbooks/membership.toml; each new one is a copy changed in tmp_path.
The history (examples/membership) has five members; m002 renews on 2025-03-25.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sopkit._cli.app import app
from sopkit._offline import diff as _diff

ROOT = Path(__file__).resolve().parent.parent
OLD = "playbooks/membership.toml"
HISTORY = ["--events", "examples/membership/events.jsonl",
           "--profiles", "examples/membership/profiles.csv", "--end", "2025-04-30"]
NEW_RULE = '''[[rules]]
name = "expiry_week"
description = "到期前 7 天：顾问跟进"
when = "days_to_expiry == 7"
actions = [{ type = "task", note = "{{ profile.name }} 的会员 7 天后到期" }]

'''


@pytest.fixture(autouse=True)
def _at_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


def _changed(tmp_path: Path, *edits: tuple[str, str], name: str = "new.toml") -> str:
    """A copy of the membership playbook with each (old text, new text) edit made once."""
    text = (ROOT / OLD).read_text(encoding="utf-8")
    for before, after in edits:
        assert text.count(before) == 1, before
        text = text.replace(before, after)
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def _diff_jsonl(new: str, *extra: str) -> tuple[int, list[dict[str, Any]], dict[str, Any]]:
    result = CliRunner().invoke(app, ["diff", OLD, new, *HISTORY, "--output", "jsonl", *extra])
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    return result.exit_code, rows[:-1], rows[-1]


def _brief(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(r["change"], r["customer_id"], r["rule"], r["action"], r["occurrence"],
             r["old_time"], r["new_time"]) for r in rows]


THRESHOLD = ('when = "days_to_expiry == 15"', 'when = "days_to_expiry == 10"')
REMOVE_PRAISE = ((ROOT / OLD).read_text(encoding="utf-8").split("\n\n")[-1], "")
TEMPLATE = ("已经 {{ days_since_login }} 天没学习啦", "{{ days_since_login }} 天没来上课了")
COOLDOWN = ('cooldown = "7d"', 'cooldown = "10d"')


def test_same_playbook_no_differences_exit_0() -> None:
    """Diffing a playbook with itself reports nothing and exits 0."""
    result = CliRunner().invoke(app, ["diff", OLD, OLD, *HISTORY])
    assert result.exit_code == 0
    assert result.stdout.endswith("no differences\n0 gained, 0 lost, 0 moved, 0 changed\n")


def test_threshold_change_moves_reminders(tmp_path: Path) -> None:
    """Reminding 10 days before expiry instead of 15 moves each reminder 5 days later."""
    code, rows, summary = _diff_jsonl(_changed(tmp_path, THRESHOLD))
    assert code == 1
    assert _brief(rows) == [
        ("moved", "m001", "renewal_reminder", "send", 1,
         "2025-03-05T10:00:00+08:00", "2025-03-10T10:00:00+08:00"),
        ("lost", "m002", "renewal_reminder", "send", 1, "2025-03-21T10:00:00+08:00", None),
        ("moved", "m003", "renewal_reminder", "send", 1,
         "2025-02-23T10:00:00+08:00", "2025-02-28T10:00:00+08:00"),
        ("moved", "m005", "renewal_reminder", "send", 1,
         "2025-02-15T10:00:00+08:00", "2025-02-20T10:00:00+08:00"),
    ]  # m002 renews on 2025-03-25, before the later reminder would go out
    assert all(r["fields"] == {} for r in rows)
    assert summary["summary"] == {"gained": 0, "lost": 1, "moved": 3, "changed": 0}


def test_added_rule_is_all_gained(tmp_path: Path) -> None:
    """A new rule's actions are all gained, with their times and rendered notes."""
    new = _changed(tmp_path, ("[[rules]]\nname = \"course_nudge\"",
                              NEW_RULE + "[[rules]]\nname = \"course_nudge\""))
    code, rows, summary = _diff_jsonl(new)
    assert code == 1
    assert [(r["change"], r["customer_id"], r["new_time"], r["new"]["note"]) for r in rows] == [
        ("gained", "m001", "2025-03-13T10:00:00+08:00", "李雷 的会员 7 天后到期"),
        ("gained", "m003", "2025-03-03T10:00:00+08:00", "王芳 的会员 7 天后到期"),
        ("gained", "m005", "2025-02-23T10:00:00+08:00", "赵敏 的会员 7 天后到期"),
    ]
    assert summary["by_rule"] == {"expiry_week": {"gained": 3, "lost": 0, "moved": 0,
                                                  "changed": 0}}


def test_removed_rule_is_all_lost(tmp_path: Path) -> None:
    """A rule no longer in the playbook loses every action it took."""
    new = _changed(tmp_path, REMOVE_PRAISE)
    code, rows, summary = _diff_jsonl(new)
    assert code == 1
    assert [(r["change"], r["customer_id"], r["rule"], r["old_time"], r["old"]["message"])
            for r in rows] == [
        ("lost", "m001", "learning_praise", "2025-02-07T20:23:00+08:00",
         "李雷，30 天完成 4 课，太棒了！"),
        ("lost", "m002", "learning_praise", "2025-02-21T20:24:00+08:00",
         "韩梅梅，30 天完成 4 课，太棒了！"),
        ("lost", "m004", "learning_praise", "2025-02-07T20:26:00+08:00",
         "张伟，30 天完成 4 课，太棒了！"),
    ]
    assert summary["summary"] == {"gained": 0, "lost": 3, "moved": 0, "changed": 0}


def test_template_change_changes_messages(tmp_path: Path) -> None:
    """A reworded template changes every message it rendered, at the same times."""
    code, rows, _ = _diff_jsonl(_changed(tmp_path, TEMPLATE))
    assert code == 1
    assert {r["change"] for r in rows} == {"changed"}
    assert [(r["customer_id"], r["occurrence"], r["new_time"]) for r in rows] == [
        ("m001", 1, "2025-02-17T10:00:00+08:00"),
        ("m002", 1, "2025-02-06T10:00:00+08:00"),
        ("m002", 2, "2025-02-14T10:00:00+08:00"),
        ("m002", 3, "2025-02-25T10:00:00+08:00"),
        ("m004", 1, "2025-03-03T10:00:00+08:00"),
        ("m005", 1, "2025-02-06T10:00:00+08:00"),
    ]
    assert rows[0]["fields"] == {"message": [
        "李雷，《Python 入门》已经 3 天没学习啦，今天学一课送 5 元学习券！",
        "李雷，《Python 入门》3 天没来上课了，今天学一课送 5 元学习券！"]}


def test_longer_cooldown_turns_a_nudge_suppressed(tmp_path: Path) -> None:
    """A 10-day cooldown suppresses m002's nudge 8 days after the first: status changed."""
    code, rows, _ = _diff_jsonl(_changed(tmp_path, COOLDOWN))
    assert code == 1
    assert [(r["change"], r["customer_id"], r["occurrence"], r["fields"]) for r in rows] == [
        ("changed", "m002", 2, {"status": ["planned", "suppressed"],
                                "reason": [None, "cooldown until 2025-02-16T10:00:00+08:00"]}),
    ]


def test_table_shows_rules_sample_and_summary(tmp_path: Path) -> None:
    """The table a user reads: per-rule counts, the first customers' differences, the totals."""
    new = _changed(tmp_path, THRESHOLD, TEMPLATE, REMOVE_PRAISE,
                   ("[[rules]]\nname = \"course_nudge\"",
                    NEW_RULE + "[[rules]]\nname = \"course_nudge\""))
    result = CliRunner().invoke(app, ["diff", OLD, new, *HISTORY, "--sample", "2"])
    assert result.exit_code == 1
    nudge = "，今天学一课送 5 元学习券！"
    assert result.stdout == f"""\
{OLD} -> {new} over examples/membership/events.jsonl until 2025-04-30T00:00:00+08:00 (durable engine)
actions: 16 before, 15 after; events: 86 read, 1 quarantined before, 1 after
Differences by rule
┏━━━━━━━━━━━━━━━━━━┳━━━━━━━━┳━━━━━━┳━━━━━━━┳━━━━━━━━━┓
┃ rule             ┃ gained ┃ lost ┃ moved ┃ changed ┃
┡━━━━━━━━━━━━━━━━━━╇━━━━━━━━╇━━━━━━╇━━━━━━━╇━━━━━━━━━┩
│ renewal_reminder │      0 │    1 │     3 │       0 │
│ expiry_week      │      3 │    0 │     0 │       0 │
│ course_nudge     │      0 │    0 │     0 │       6 │
│ learning_praise  │      0 │    3 │     0 │       0 │
└──────────────────┴────────┴──────┴───────┴─────────┘
Customers: 2 of 5 with differences (the first by customer id; --sample N for more)
m001
  lost     2025-02-07T20:23:00+08:00  learning_praise send #1  wecom: 李雷，30 天完成 4 课，太棒了！
  changed  2025-02-17T10:00:00+08:00  course_nudge send #1
             message: "李雷，《Python 入门》已经 3 天没学习啦{nudge}" -> "李雷，《Python 入门》3 天没来上课了{nudge}"
  moved    2025-03-05T10:00:00+08:00 -> 2025-03-10T10:00:00+08:00  renewal_reminder send #1
  gained   2025-03-13T10:00:00+08:00  expiry_week task #1  task for coach-01, due 2025-03-14T10:00:00+08:00: 李雷 的会员 7 天后到期
m002
  changed  2025-02-06T10:00:00+08:00  course_nudge send #1
             message: "韩梅梅，《英语口语》已经 3 天没学习啦{nudge}" -> "韩梅梅，《英语口语》3 天没来上课了{nudge}"
  changed  2025-02-14T10:00:00+08:00  course_nudge send #2
             message: "韩梅梅，《英语口语》已经 3 天没学习啦{nudge}" -> "韩梅梅，《英语口语》3 天没来上课了{nudge}"
  lost     2025-02-21T20:24:00+08:00  learning_praise send #1  wecom: 韩梅梅，30 天完成 4 课，太棒了！
  changed  2025-02-25T10:00:00+08:00  course_nudge send #3
             message: "韩梅梅，《英语口语》已经 3 天没学习啦{nudge}" -> "韩梅梅，《英语口语》3 天没来上课了{nudge}"
  lost     2025-03-21T10:00:00+08:00  renewal_reminder send #1  sms: 韩梅梅，您的会员将于 2025-04-05 到期，现在续费享 续费 9 折。
3 gained, 4 lost, 3 moved, 6 changed
"""  # noqa: E501  # the exact lines a user sees


def test_output_is_deterministic_and_engines_agree(tmp_path: Path) -> None:
    """Two runs print the same bytes, and the native engine finds the same differences."""
    new = _changed(tmp_path, THRESHOLD, TEMPLATE)
    runs = [CliRunner().invoke(app, ["diff", OLD, new, *HISTORY, "--output", "jsonl",
                                     "--engine", engine]).stdout
            for engine in ("durable", "durable", "native")]
    assert runs[0] == runs[1] == runs[2]
    assert runs[0].count("\n") == 11  # 10 differences and the summary


PHONE_PLAYBOOK = """\
[playbook]
name = "p"
version = "{version}"
[profile]
phone = "string"
[events.visit]
[channels.c]
type = "console"
[templates.t]
text = "{text}"
[[rules]]
name = "r"
on = "visit"
actions = [{{ type = "send", channel = "c", template = "t" }}]
"""


def test_personal_data_masked_unless_asked(tmp_path: Path) -> None:
    """Phone numbers in changed messages are masked; --unmasked shows them in full."""
    old, new = tmp_path / "old.toml", tmp_path / "new.toml"
    old.write_text(PHONE_PLAYBOOK.format(version="1", text="请回电 {{ profile.phone }}"),
                   encoding="utf-8")
    new.write_text(PHONE_PLAYBOOK.format(version="2", text="请致电 {{ profile.phone }}"),
                   encoding="utf-8")
    events, profiles = tmp_path / "e.jsonl", tmp_path / "p.jsonl"
    events.write_text('{"customer_id": "c1", "type": "visit", "ts": "2025-01-01T10:00:00"}\n',
                      encoding="utf-8")
    profiles.write_text('{"customer_id": "c1", "phone": "13812345678"}\n', encoding="utf-8")
    args = ["diff", str(old), str(new), "--events", str(events), "--profiles", str(profiles)]
    masked = CliRunner().invoke(app, args)
    assert masked.exit_code == 1  # matched although the key's version differs: a change
    assert 'message: "请回电 138****5678" -> "请致电 138****5678"' in masked.stdout
    assert "13812345678" not in masked.stdout
    shown = CliRunner().invoke(app, [*args, "--unmasked"])
    assert 'message: "请回电 13812345678" -> "请致电 13812345678"' in shown.stdout


@pytest.mark.parametrize("args", [
    ["diff", OLD, "tests/cases/invalid/unknown_timezone.toml", *HISTORY],
    ["diff", OLD, OLD, *HISTORY[:4], "--end", "April"],
    ["diff", OLD, OLD],
    ["diff", OLD, OLD, *HISTORY, "--engine", "fast"],
], ids=["invalid-playbook", "bad-end", "no-events", "unknown-engine"])
def test_trouble_exits_2(args: list[str]) -> None:
    """An invalid playbook or a wrong command line exits 2, not 1 (which means differences)."""
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2


def test_invalid_playbook_says_what_is_wrong() -> None:
    """An invalid playbook's problems are printed, with the way to see them all."""
    bad = "tests/cases/invalid/unknown_timezone.toml"
    result = CliRunner().invoke(app, ["diff", OLD, bad, *HISTORY])
    assert "unknown timezone 'Asia/Shangai'" in result.output
    assert f"run `sopkit check {bad}`" in result.output


# ---- the comparison itself, over hand-written records ------------------------------------


def _record(time: str, customer: str, rule: str, status: str = "planned",
            key: str = "", **details: Any) -> dict[str, Any]:
    return {"time": time, "customer_id": customer, "rule": rule, "action": "send",
            "status": status, "trigger": "entry", "key": key, **details, "facts": {}}


def test_match_by_occurrence_not_key() -> None:
    """Records match by customer, rule, action and occurrence; the key's version is ignored."""
    old = [_record("2025-01-01T10:00:00+08:00", "c1", "r", key="p:1:r:c1:1:0", message="a"),
           _record("2025-01-05T10:00:00+08:00", "c1", "r", key="p:1:r:c1:2:0", message="a")]
    new = [_record("2025-01-01T10:00:00+08:00", "c1", "r", key="p:2:r:c1:1:0", message="a"),
           _record("2025-01-06T10:00:00+08:00", "c1", "r", key="p:2:r:c1:2:0", message="a"),
           _record("2025-01-09T10:00:00+08:00", "c1", "r", key="p:2:r:c1:3:0", message="a")]
    diffs = _diff.compare(old, new)
    assert [(d.kind, d.occurrence, d.time) for d in diffs] == [
        ("moved", 2, "2025-01-06T10:00:00+08:00"),
        ("gained", 3, "2025-01-09T10:00:00+08:00"),
    ]


def test_same_instant_in_another_offset_is_not_moved() -> None:
    """10:00+08:00 and 02:00Z are the same instant: nothing moved."""
    old = [_record("2025-01-01T10:00:00+08:00", "c1", "r", message="a")]
    new = [_record("2025-01-01T02:00:00+00:00", "c1", "r", message="a")]
    assert _diff.compare(old, new) == []


def test_moved_and_changed_lists_what_else_differs() -> None:
    """A moved action that also changed status says so; its due time follows it silently."""
    old = [_record("2025-01-01T10:00:00+08:00", "c1", "r", message="a",
                   due="2025-01-02T10:00:00+08:00")]
    new = [_record("2025-01-03T10:00:00+08:00", "c1", "r", "suppressed",
                   reason="max_times 1 reached")]
    (diff,) = _diff.compare(old, new)
    assert diff.kind == "moved"
    assert diff.changes() == [("status", "planned", "suppressed"),
                              ("reason", None, "max_times 1 reached")]


def test_sample_and_rule_order_are_deterministic() -> None:
    """The sample is the first N customer ids; rules follow the given order, then by name."""
    old = [_record("2025-01-01T10:00:00+08:00", c, r, message="a")
           for c, r in (("c3", "z"), ("c1", "y"), ("c2", "x"), ("c10", "w"))]
    diffs = _diff.compare(old, [])
    assert _diff.sample(diffs, 2) == ["c1", "c10"]
    assert list(_diff.by_rule(diffs, ["y", "z"])) == ["y", "z", "w", "x"]
    assert _diff.summary_line(_diff.totals(diffs)) == "0 gained, 4 lost, 0 moved, 0 changed"
