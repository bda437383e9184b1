"""The rule-loop check: what it must not report (issue 14).

A rule that tags a tag its own condition requires (or untags one it forbids) changes nothing
when it fires, so it cannot start a loop; `sopkit check` must accept such a playbook and the
run must settle. The loops it must report are golden cases in tests/cases/invalid.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import sopkit
from sopkit._cli.app import app

HEAD = """\
[playbook]
name = "keep"
timezone = "Asia/Shanghai"

[events.upgrade]

[tags.vip]
[tags."金卡"]
[tags.quiet]

[channels.sms]
type = "sms"

[templates.hi]
text = "{{ customer_id }}，您好"

[[rules]]
name = "card_holders_are_vip"
on = "upgrade"
actions = [{ type = "tag", tag = "金卡" }]
"""

# `welcome_vip` re-tags vip, which its own condition requires: a no-op, so no loop with
# `promote`, which tags vip when a customer holds either tag.
KEEPS_ITS_TAG = HEAD + """
[[rules]]
name = "welcome_vip"
when = "\\"vip\\" in tags and \\"quiet\\" not in tags"
actions = [{ type = "tag", tag = "vip" }, { type = "send", channel = "sms", template = "hi" }]

[[rules]]
name = "promote"
when = "\\"vip\\" in tags or \\"金卡\\" in tags"
actions = [{ type = "tag", tag = "vip" }]
"""

# the same shape with untag: `calm` clears quiet, which its own condition forbids
CLEARS_A_FORBIDDEN_TAG = HEAD + """
[[rules]]
name = "calm"
when = "\\"quiet\\" not in tags and \\"金卡\\" in tags"
actions = [{ type = "untag", tag = "quiet" }, { type = "send", channel = "sms", template = "hi" }]

[[rules]]
name = "hush"
when = "\\"quiet\\" not in tags or \\"vip\\" in tags"
actions = [{ type = "untag", tag = "quiet" }]
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "keep.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("text", [KEEPS_ITS_TAG, CLEARS_A_FORBIDDEN_TAG],
                         ids=["tag-it-requires", "untag-it-forbids"])
def test_a_rule_keeping_its_own_condition_is_not_a_loop(tmp_path: Path, text: str) -> None:
    """`sopkit check` accepts a rule re-setting a tag its own condition requires: exit 0."""
    result = CliRunner().invoke(app, ["check", str(_write(tmp_path, text))])
    assert result.exit_code == 0, result.output
    assert "without end" not in result.output


def test_a_rule_keeping_its_own_condition_settles_at_run_time(tmp_path: Path) -> None:
    """The accepted playbook really settles: one upgrade fires each rule once, no ChainError."""
    rt = sopkit.Runtime(sopkit.load_playbook(_write(tmp_path, KEEPS_ITS_TAG)), engine="native")
    out = rt.ingest({"customer_id": "c1", "type": "upgrade", "ts": "2024-05-01T10:00:00"})
    assert [(a.rule, a.action) for a in out] == [
        ("card_holders_are_vip", "tag"), ("promote", "tag"), ("welcome_vip", "tag"),
        ("welcome_vip", "send")]
    assert rt.state("c1").tags == {"vip", "金卡"}


def test_not_t_in_tags_is_the_same_as_t_not_in_tags_for_the_loop_check(tmp_path: Path) -> None:
    """Writing `not "quiet" in tags` instead of `"quiet" not in tags` is accepted too."""
    text = CLEARS_A_FORBIDDEN_TAG.replace('when = "\\"quiet\\" not in tags and',
                                          'when = "not \\"quiet\\" in tags and')
    assert text != CLEARS_A_FORBIDDEN_TAG
    result = CliRunner().invoke(app, ["check", str(_write(tmp_path, text))])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("stray", [")", ",", "]"])
def test_a_stray_operator_where_a_value_belongs_is_named_at_its_column(tmp_path: Path,
                                                                       stray: str) -> None:
    """`when = "x > )"` says "expected a value, found ')'" pointing at the `)` itself."""
    text = HEAD.replace('on = "upgrade"\n', f'on = "upgrade"\nwhen = "1 > {stray}"\n', 1)
    result = CliRunner().invoke(app, ["check", str(_write(tmp_path, text))])
    assert result.exit_code == 1
    line = next(n for n, t in enumerate(text.splitlines(), 1) if t.startswith("when = "))
    assert f"keep.toml:{line}:13: error: rules[0].when: expected a value, found '{stray}'" \
        in result.output


CONDITION = """\
[playbook]
name = "cond"

[profile]
level = "int"

[tags.vip]

[[rules]]
name = "r"
when = '{when}'
actions = [{{ type = "tag", tag = "vip" }}]
"""


@pytest.mark.parametrize(("when", "column", "message"), [
    ("tags", 9, "'tags' can only be used with in\n"),
    ('profile.level in [1, "2"]', 30, "list item is a string, expected a number\n"),
    ('profile.level in [1, 2] and "vip" in tags', None, None),
], ids=["bare-tags", "mixed-list", "valid"])
def test_condition_type_mistakes_are_named_at_their_column(
        tmp_path: Path, when: str, column: int | None, message: str | None) -> None:
    """`tags` used alone, or a list mixing types, is an error at its column; valid is exit 0."""
    result = CliRunner().invoke(app, ["check", str(_write(tmp_path,
                                                          CONDITION.format(when=when)))])
    if message is None:
        assert result.exit_code == 0, result.output
        return
    assert result.exit_code == 1
    assert f"keep.toml:11:{column}: error: rules[0].when: {message}" in result.output
