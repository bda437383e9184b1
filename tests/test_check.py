"""Golden tests of `sopkit check`: the exact text a user sees for each playbook mistake.

Each case is `tests/cases/invalid/<name>.toml` (a small playbook with one mistake, described
in its first line) and `<name>.expected` (the exact stdout of `sopkit check` on it, run from
the repository root). Rewrite the goldens with `tests/regen_goldens.py`, then read the diff.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sopkit._cli.app import app

ROOT = Path(__file__).resolve().parent.parent
CASES = Path("tests", "cases", "invalid")
CASE_FILES = sorted((ROOT / CASES).glob("*.toml"))  # fragments/ holds included files only
PLAYBOOKS = sorted((ROOT / "playbooks").glob("*.toml"))

# A playbook with several independent mistakes, each found by the cross-reference checks.
SEVERAL_MISTAKES = """\
[playbook]
name = "demo"
timezone = "Asia/Shangai"

[events.purchase]
amount = "decimal"

[metrics]
days_since_purchase = { kind = "days_since", event = "purchase" }

[tags.vip]
when = "days_since_purchase < \\"30\\""

[channels.sms]
type = "sms"

[templates.hello]
text = "Hello {{ customer_id }}"

[[rules]]
name = "recall"
when = "\\"vpi\\" in tags"
actions = [{ type = "send", channel = "smss", template = "hello" }]
"""


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """A CLI runner working from the repository root, so problems print relative paths."""
    monkeypatch.chdir(ROOT)
    return CliRunner()


@pytest.mark.parametrize("case", CASE_FILES, ids=[case.stem for case in CASE_FILES])
def test_invalid_case_output(case: Path, run: CliRunner) -> None:
    """`sopkit check` on a playbook with a mistake prints exactly the golden text, exit 1."""
    expected = case.with_suffix(".expected").read_text(encoding="utf-8")
    result = run.invoke(app, ["check", (CASES / case.name).as_posix()])
    assert result.stdout == expected
    assert result.exit_code == 1


def test_enough_cases() -> None:
    """At least 25 distinct playbook mistakes are pinned, each with its golden output."""
    assert len(CASE_FILES) >= 25
    for case in CASE_FILES:
        assert case.with_suffix(".expected").is_file(), f"{case.name} has no .expected"
        first = case.read_text(encoding="utf-8").splitlines()[0]
        assert first.startswith("# "), f"{case.name} must start with a comment naming the mistake"


@pytest.mark.parametrize("playbook", PLAYBOOKS, ids=[p.stem for p in PLAYBOOKS])
def test_shipped_playbook_is_valid(playbook: Path, run: CliRunner) -> None:
    """Every shipped playbook checks clean: `ok` and exit 0."""
    result = run.invoke(app, ["check", f"playbooks/{playbook.name}"])
    assert result.exit_code == 0, result.stdout
    assert result.stdout.startswith(f"playbooks/{playbook.name}: ok (")


def test_jsonl_output(run: CliRunner) -> None:
    """`--output jsonl` prints one JSON object per problem, with location and suggestion."""
    files = [(CASES / name).as_posix()
             for name in ("unknown_timezone.toml", "condition_unknown_name.toml")]
    result = run.invoke(app, ["check", "--output", "jsonl", *files])
    assert result.exit_code == 1
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert rows == [
        {"file": files[0], "line": 4, "column": 1, "key": "playbook.timezone",
         "message": "unknown timezone 'Asia/Shangai'",
         "suggestion": "did you mean 'Asia/Shanghai'?", "severity": "error"},
        {"file": files[1], "line": 33, "column": 9, "key": "rules[0].when",
         "message": "unknown name 'days_since_purchse'",
         "suggestion": "did you mean 'days_since_purchase'?", "severity": "error"},
    ]


@pytest.mark.parametrize("args", [["check"], ["check", "--no-such-option", "x.toml"],
                                  ["check", "--output", "xml", "playbooks/retail.toml"]],
                         ids=["no-playbook", "unknown-option", "bad-output-value"])
def test_usage_error_exits_2(args: list[str], run: CliRunner) -> None:
    """A wrong command line (missing file argument, unknown option or value) exits with 2."""
    result = run.invoke(app, args)
    assert result.exit_code == 2


def test_several_mistakes_all_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A playbook with several mistakes gets every one reported, in file order, with a count."""
    (tmp_path / "several.toml").write_text(SEVERAL_MISTAKES, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["check", "--output", "jsonl", "several.toml"])
    assert result.exit_code == 1
    found = [(row["line"], row["key"], row["message"])
             for row in map(json.loads, result.stdout.splitlines())]
    assert found == [
        (3, "playbook.timezone", "unknown timezone 'Asia/Shangai'"),
        (12, "tags.vip.when", "cannot compare a number with a string"),
        (22, "rules[0].when", "unknown tag 'vpi'"),
        (23, "rules[0].actions[0].channel", "unknown channel 'smss'"),
    ]
    table = CliRunner().invoke(app, ["check", "several.toml"])
    assert table.exit_code == 1
    assert table.stdout.count(": error: ") == 4
    assert table.stdout.endswith("several.toml: 4 problems\n")


def test_shape_and_reference_mistakes_reported_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A typo'd key does not hide an unknown channel elsewhere in the same playbook."""
    text = SEVERAL_MISTAKES.replace('name = "recall"\n', 'name = "recall"\ncooldwn = "7d"\n')
    (tmp_path / "mixed.toml").write_text(text, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["check", "--output", "jsonl", "mixed.toml"])
    keys = {json.loads(line)["key"] for line in result.stdout.splitlines()}
    assert {"rules[0].cooldwn", "rules[0].actions[0].channel"} <= keys
