"""Condition behaviours a user notices, found unchecked by the seed-23 mutation sample (issue 14).

Each test checks a small playbook with `sopkit check` or runs it on a real Runtime with events
on the virtual clock, and reads the exit code, the message or the actions.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import sopkit
from sopkit._cli.app import app

PLAYBOOK = """\
[playbook]
name = "cond"
timezone = "Asia/Shanghai"

[events.visit]

[profile]
level = "int"

[tags.vip]

[channels.sms]
type = "sms"

[templates.t]
text = "{{{{ customer_id }}}}，您好"

[[rules]]
name = "r"
on = "visit"
when = '{when}'
actions = [{{ type = "send", channel = "sms", template = "t" }}]
"""


def _write(tmp_path: Path, when: str) -> Path:
    path = tmp_path / "cond.toml"
    path.write_text(PLAYBOOK.format(when=when), encoding="utf-8")
    return path


def _padded(length: int) -> str:
    """`profile.level >= 1` stretched with spaces to exactly `length` characters."""
    head, tail = "profile.level", ">= 1"
    return head + " " * (length - len(head) - len(tail)) + tail


def test_a_condition_of_exactly_the_maximum_length_is_accepted_and_runs(tmp_path: Path) -> None:
    """A 10,000-character condition (the documented maximum) checks clean and fires."""
    when = _padded(10_000)
    assert len(when) == 10_000
    result = CliRunner().invoke(app, ["check", str(_write(tmp_path, when))])
    assert result.exit_code == 0, result.output
    rt = sopkit.Runtime(sopkit.load_playbook(_write(tmp_path, when)), engine="native")
    rt.add_profile({"customer_id": "c1", "level": 2})
    out = rt.ingest({"customer_id": "c1", "type": "visit", "ts": "2024-05-01T10:00:00"})
    assert [(a.rule, a.action) for a in out] == [("r", "send")]


@pytest.mark.parametrize("length", [10_001, 12_000])
def test_a_condition_over_the_maximum_length_is_refused(tmp_path: Path, length: int) -> None:
    """One character over 10,000 is an error naming the length and the limit."""
    result = CliRunner().invoke(app, ["check", str(_write(tmp_path, _padded(length)))])
    assert result.exit_code == 1
    assert f"the condition is {length:,} characters long; at most 10,000 are allowed" \
        in result.output


def _sum_chain(terms: int) -> str:
    """`profile.level + 1 + 1 … >= 50` with `terms` additions: one level deeper per `+`."""
    return "profile.level" + " + 1" * terms + " >= 50"


def test_a_long_chain_of_additions_within_the_depth_limit_runs(tmp_path: Path) -> None:
    """48 chained `+ 1` (50 levels with the comparison) check clean and add up when run."""
    result = CliRunner().invoke(app, ["check", str(_write(tmp_path, _sum_chain(48)))])
    assert result.exit_code == 0, result.output
    rt = sopkit.Runtime(sopkit.load_playbook(_write(tmp_path, _sum_chain(48))), engine="native")
    rt.add_profile({"customer_id": "c1", "level": 2})
    rt.add_profile({"customer_id": "c2", "level": 1})
    fired = [a.customer_id for c in ("c1", "c2")
             for a in rt.ingest({"customer_id": c, "type": "visit",
                                 "ts": "2024-05-01T10:00:00"})]
    assert fired == ["c1"]


def test_a_chain_of_additions_deeper_than_the_limit_is_refused(tmp_path: Path) -> None:
    """49 chained `+ 1` nest 51 levels: `sopkit check` refuses it, naming the limit of 50."""
    result = CliRunner().invoke(app, ["check", str(_write(tmp_path, _sum_chain(49)))])
    assert result.exit_code == 1
    assert "the condition nests more than 50 levels deep" in result.output


def test_a_chain_behind_not_counts_towards_the_depth_limit(tmp_path: Path) -> None:
    """`not` over 48 chained `+ 1` nests 51 levels and is refused; over 47 it runs."""
    refused = CliRunner().invoke(app, ["check", str(_write(tmp_path, "not " + _sum_chain(48)))])
    assert refused.exit_code == 1
    assert "the condition nests more than 50 levels deep" in refused.output
    accepted = CliRunner().invoke(app, ["check", str(_write(tmp_path, "not " + _sum_chain(47)))])
    assert accepted.exit_code == 0, accepted.output


@pytest.mark.parametrize(("when", "column", "message"), [
    ('-"vip" < 0', 2, "expected a number here, this is a string"),
    ("-profile.levle < 0", 2, "unknown name 'profile.levle'"),
    ('profile.level + "1" > 2', 17, "expected a number here, this is a string"),
    ("1 + profile.levle > 2", 5, "unknown name 'profile.levle'"),
    ('profile.level * ("1" == "1") > 2', 22, "expected a number here, this is a bool"),
], ids=["minus-string", "minus-unknown", "plus-string", "plus-unknown", "times-bool"])
def test_what_follows_a_minus_or_an_operator_is_checked(tmp_path: Path, when: str, column: int,
                                                       message: str) -> None:
    """A string, a bool or a misspelt name after `-` or right of `+`/`*` is an error there."""
    result = CliRunner().invoke(app, ["check", str(_write(tmp_path, when))])
    assert result.exit_code == 1
    line = PLAYBOOK.splitlines().index("when = '{when}'") + 1
    assert f"cond.toml:{line}:{column + 8}: error: rules[0].when: {message}" in result.output
