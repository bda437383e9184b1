"""The reference docs cover every key, metric kind, action type and CLI option sopkit has."""

from __future__ import annotations

import inspect
import json
import re
import shlex
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import typer
from pydantic import BaseModel
from typer.core import TyperOption

import sopkit
from sopkit._cli.app import app
from sopkit._playbook import models as m
from sopkit._playbook.schema import playbook_schema

DOCS = Path(__file__).resolve().parent.parent / "docs"
PLAYBOOK_MD = DOCS / "playbook.md"


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models inside a field annotation (through Annotated, unions, list, dict)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if typing.get_origin(annotation) is typing.Literal:
        return []
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        found.extend(_models_in(arg))
    return found


def _walk(model: type[BaseModel], seen: dict[type[BaseModel], list[str]]) -> None:
    if model in seen:
        return
    seen[model] = list(model.model_fields)
    for info in model.model_fields.values():
        for inner in _models_in(info.annotation):
            _walk(inner, seen)


def all_models() -> dict[type[BaseModel], list[str]]:
    """Every model reachable from Playbook, with its keys."""
    seen: dict[type[BaseModel], list[str]] = {}
    _walk(m.Playbook, seen)
    return seen


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def test_walk_reaches_every_model_of_the_module() -> None:
    """The recursive walk from Playbook finds every model defined in sopkit._playbook.models."""
    defined = {obj for _, obj in inspect.getmembers(m, inspect.isclass)
               if issubclass(obj, BaseModel) and obj.__module__ == m.__name__
               and not obj.__name__.startswith("_")}
    assert defined == set(all_models())


@pytest.mark.parametrize(
    ("model", "key"),
    [(model, key) for model, keys in all_models().items() for key in keys],
    ids=lambda x: x.__name__ if isinstance(x, type) else str(x),
)
def test_every_model_key_is_documented(model: type[BaseModel], key: str) -> None:
    """Each key of each playbook model appears in docs/playbook.md as `key`."""
    assert f"`{key}`" in _text(PLAYBOOK_MD), f"{model.__name__}.{key} is not in docs/playbook.md"


@pytest.mark.parametrize("kind", typing.get_args(m.MetricKind))
def test_every_metric_kind_has_a_row(kind: str) -> None:
    """Each metric kind has its own row in the metric table of docs/playbook.md."""
    assert re.search(rf"^\| `{kind}` \|", _text(PLAYBOOK_MD), re.MULTILINE), kind


def test_action_types_match_the_models() -> None:
    """ACTION_TYPES lists exactly the `type` literals of the action models."""
    action_models = _models_in(m.Rule.model_fields["actions"].annotation)
    literals = {typing.get_args(a.model_fields["type"].annotation)[0] for a in action_models}
    assert literals == set(m.ACTION_TYPES)


@pytest.mark.parametrize("action", m.ACTION_TYPES)
def test_every_action_type_has_a_section(action: str) -> None:
    """Each action type has a `### `type`` section in docs/playbook.md and is in semantics.md."""
    assert re.search(rf"^### `{action}`$", _text(PLAYBOOK_MD), re.MULTILINE), action
    assert f"`{action}`" in _text(DOCS / "semantics.md"), action


def _example() -> str:
    text = _text(PLAYBOOK_MD)
    section = text.split("## A complete example", 1)[1]
    match = re.search(r"```toml\n(.*?)```", section, re.DOTALL)
    assert match, "no TOML block under '## A complete example'"
    return match.group(1)


def test_complete_example_is_a_valid_playbook(tmp_path: Path) -> None:
    """The complete example in docs/playbook.md passes `sopkit check` and the JSON Schema."""
    source = _example()
    path = tmp_path / "playbooks" / "school.toml"
    path.parent.mkdir()
    path.write_text(source, encoding="utf-8")
    loaded = sopkit.load_playbook(path)
    jsonschema.validate(tomllib.loads(source), playbook_schema())
    model = loaded.model
    kinds = {metric.kind for metric in model.metrics.values()}
    actions = {action.type for rule in model.rules for action in rule.actions}
    assert actions == set(m.ACTION_TYPES), "the example should show every action type"
    assert {"count", "sum", "days_since", "days_until", "days_to_anniversary"} <= kinds


def test_complete_example_runs(tmp_path: Path) -> None:
    """The example simulates: a renewal reminder, a delayed feedback cancelled by a complaint."""
    path = tmp_path / "school.toml"
    path.write_text(_example(), encoding="utf-8")
    rt = sopkit.Runtime(sopkit.load_playbook(path))
    rt.add_profile({"customer_id": "s1", "name": "王小明", "package_expires": "2024-06-05",
                    "owner": "staff-07"})
    out = rt.ingest({"customer_id": "s1", "type": "lesson", "ts": "2024-05-01T16:00:00",
                     "course": "钢琴"})
    out += rt.ingest({"customer_id": "s1", "type": "complaint", "ts": "2024-05-01T20:00:00"})
    out += rt.advance("2024-05-30T00:00:00")
    statuses = {(a.rule, a.status) for a in out}
    assert ("lesson_feedback", "cancelled") in statuses
    (renew,) = [a for a in out if a.rule == "renew_reminder" and a.action == "send"]
    assert renew.time == "2024-05-29T09:00:00+08:00"
    assert renew.details["message"] == "王小明您好，课时包还有 7 天到期，本周续费享 9 折。"


def _commands() -> dict[str, Any]:
    group: Any = typer.main.get_command(app)
    return dict(group.commands)


@pytest.mark.parametrize("name", sorted(_commands()))
def test_every_cli_command_and_option_is_documented(name: str) -> None:
    """Each command has a `## sopkit <command>` section in docs/cli.md naming all its options."""
    text = _text(DOCS / "cli.md")
    assert f"## `sopkit {name}`" in text, name
    section = text.split(f"## `sopkit {name}`", 1)[1].split("\n## ", 1)[0]
    for param in _commands()[name].params:
        if isinstance(param, TyperOption):
            for flag in (*param.opts, *param.secondary_opts):
                if flag != "--help":
                    assert f"`{flag}" in section, f"{name} {flag}"


def test_command_index_lists_every_command_once() -> None:
    """docs/cli.md's command index is one table naming each command once, no more, no less."""
    text = _text(DOCS / "cli.md")
    index = text.split("| command | what it does |\n|---|---|\n", 1)[1].split("\n\n", 1)[0]
    rows = index.splitlines()
    assert all(row.startswith("| [`") for row in rows), "a blank line or stray text in the index"
    listed = [re.match(r"\| \[`([\w-]+)`\]\(#sopkit-([\w-]+)\)", row).groups() for row in rows]
    assert all(name == anchor for name, anchor in listed)
    assert sorted(name for name, _ in listed) == sorted(_commands())


def _anchors(doc: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown file (outside code blocks)."""
    text = re.sub(r"```.*?```", "", _text(doc), flags=re.DOTALL)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#+ (.*)$", text, re.MULTILINE)}


def test_docs_links_resolve() -> None:
    """Relative links between the docs point at files and headings that exist."""
    for doc in DOCS.glob("*.md"):
        for target, anchor in re.findall(r"\]\(([\w./-]*?\.md)?(?:#([^)]+))?\)", _text(doc)):
            path = doc.parent / target if target else doc
            assert path.exists(), f"{doc.name} links to missing {target}"
            if anchor:
                assert anchor in _anchors(path), f"{doc.name} links to missing {target}#{anchor}"


def test_models_module_is_what_was_walked() -> None:
    """Guard: the docs tests import the real models module, not a stale copy."""
    assert isinstance(m, types.ModuleType) and m.__name__ == "sopkit._playbook.models"


def test_engines_doc_shows_what_the_example_compiles_to(tmp_path: Path) -> None:
    """The IR and durable rule shown in docs/engines.md are what the example really gives."""
    from sopkit.engines.durable import DurableEngine

    path = tmp_path / "school.toml"
    path.write_text(_example(), encoding="utf-8")
    ir = sopkit.compile_playbook(sopkit.load_playbook(path).model)
    (rule,) = [r for r in ir["rules"] if r["name"] == "renew_reminder"]
    predicate = ir["predicates"][rule["predicate"]]
    assert (rule["predicate"], predicate["reads"]) == (7, [14, 19])
    assert [ir["slots"][i]["name"] for i in (14, 19)] == ["days_to_expiry", "tag:已提醒续费"]
    assert predicate["cond"] == [
        "and", [["cmp", "<=", ["slot", 14], ["const", 7]],
                ["cmp", ">=", ["slot", 14], ["const", 0]],
                ["not", ["cmp", "==", ["slot", 19], ["const", True]]]]]
    assert ir["wakeups"]["days_to_expiry"] == {"slot": 14, "any": False,
                                               "thresholds": [0, 7, 30],
                                               "boundaries": [-1, 7, 30]}
    assert ir["windows"]["lessons_30d"] == {"slot": 10, "any": False, "thresholds": [4],
                                            "boundaries": [3]}
    engine = DurableEngine(ir)
    (rules,) = engine.definitions.values()
    assert rules["keep"] == {"all": [{"m": {"_k": 1}}]}
    assert rules["p7"] == {"all": [{"m": {"$and": [
        {"$lte": {"s14": 7}}, {"$gte": {"s14": 0}},
        {"$or": [{"n19": True}, {"$neq": {"s19": True}}]}]}}]}
    facts: list[object] = [None] * len(ir["slots"])
    facts[14], facts[19] = 7, False
    assert 7 in engine.evaluate(facts)


# ---- examples in the README and the docs run as written ------------------------------------

ROOT = DOCS.parent
README = ROOT / "README.md"
_BOX = re.compile(r"[\s│┃┏┓┗┛┡┩└┘┌┐├┤┳┻╇╋━─┬┴┼]")
# paths in doc commands that stand for the reader's own files, not files sopkit ships
ILLUSTRATIVE = {
    "playbooks/school.toml",  # cli.md: the complete example of playbook.md, saved by the reader
}
OUTPUT_OPTIONS = {"--out", "--report", "--customers", "--quarantine", "--append-to"}


def _console_commands(doc: Path) -> list[tuple[str, list[str]]]:
    """Each `$ ...` command of the doc's console blocks (continuation lines joined) and the
    output lines shown under it."""
    commands: list[tuple[str, list[str]]] = []
    for block in re.findall(r"```console\n(.*?)```", _text(doc), re.DOTALL):
        lines = block.splitlines()
        i = 0
        while i < len(lines):
            if not lines[i].startswith("$ "):
                commands[-1][1].append(lines[i])
                i += 1
                continue
            command = lines[i][2:]
            while command.rstrip().endswith("\\"):
                i += 1
                command = command.rstrip()[:-1] + " " + lines[i].strip()
            commands.append((command, []))
            i += 1
    return commands


def _squeeze(text: str) -> str:
    """Text without white space and table borders: how a wrapped table cell still matches."""
    return _BOX.sub("", text)


def _run_shown(command: str, shown: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Run one documented command as the CLI and check its exit code and the output shown."""
    from typer.testing import CliRunner

    words = shlex.split(command, comments=True)
    if words[0] == "export":
        name, _, value = words[1].partition("=")
        monkeypatch.setenv(name, value)
        return
    assert words[0] in ("sopkit", ".venv/bin/sopkit"), command
    expected = re.search(r"#\s*exit (\d)", command)
    result = CliRunner().invoke(app, words[1:])
    assert result.exit_code == (int(expected.group(1)) if expected else 0), \
        (command, result.output)
    if shown and not any("…" in line for line in shown):
        assert result.output.splitlines() == [line.rstrip() for line in shown], command
        return
    output = _squeeze(result.output)
    for line in shown:
        for piece in line.split("…"):
            assert _squeeze(piece) in output, (command, piece)


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh folder that looks like a clean checkout: the shipped files, nothing made yet."""
    for name in ("playbooks", "rules", "schema", "examples", "data", "tests"):
        (tmp_path / name).symlink_to(ROOT / name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_doc_commands_name_files_that_ship() -> None:
    """Every input file a README or docs command names (playbook, events …) is in the repo."""
    for doc in (README, *sorted(DOCS.glob("*.md"))):
        for command, _ in _console_commands(doc):
            words = shlex.split(command, comments=True)
            for before, word in zip(["", *words], words, strict=False):
                if before in OUTPUT_OPTIONS or word in ILLUSTRATIVE or "/" not in word:
                    continue
                if re.search(r"\.(toml|jsonl|csv|gz)$", word):
                    assert (ROOT / word).exists(), f"{doc.name}: {command}: no {word}"


def test_readme_tour_runs_as_written(workspace: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Every command of the README tour runs on a clean checkout with the exit code and the
    output the README shows; the action record shown is one the simulation wrote."""
    commands = _console_commands(README)
    assert any("sopkit run " in c for c, _ in commands), "the tour should show a live run"
    for command, shown in commands:
        _run_shown(command, shown, monkeypatch)
    tour = _text(README).split("**3. Simulate it**", 1)[1]
    record = json.loads(re.search(r"```json\n(.*?)```", tour, re.DOTALL).group(1))
    written = [json.loads(line) for line in
               (workspace / "actions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert record in written
    assert (workspace / "out" / "sms.jsonl").exists()  # the live run delivered its SMS lines


@pytest.mark.parametrize("start", [
    "sopkit diff playbooks/membership.toml examples/membership/membership-v2.toml",
    "sopkit check --strict tests/cases/lint/",
])
def test_cli_doc_examples_run_as_written(start: str, workspace: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The `diff` and `check --strict` examples of docs/cli.md print what the doc shows."""
    (found,) = [(c, s) for c, s in _console_commands(DOCS / "cli.md") if c.startswith(start)]
    _run_shown(*found, monkeypatch)


def test_live_example_is_the_membership_playbook() -> None:
    """examples/membership/membership-live.toml differs from the shipped membership playbook
    only in its channels, so the README's live run shows what that playbook does."""
    shipped = sopkit.compile_playbook(sopkit.load_playbook(
        ROOT / "playbooks/membership.toml").model)
    live = sopkit.compile_playbook(sopkit.load_playbook(
        ROOT / "examples/membership/membership-live.toml").model)
    assert {k: v for k, v in live.items() if k != "channels"} == \
        {k: v for k, v in shipped.items() if k != "channels"}
    assert {name: c["type"] for name, c in live["channels"].items()} == \
        {"sms": "jsonl", "wecom": "console"}


def test_readme_links_point_at_files_that_exist() -> None:
    """The README's relative links name files and folders of the repository."""
    for target in re.findall(r"\]\((?!https?:)([^)#]+)(?:#[^)]*)?\)", _text(README)):
        assert (ROOT / target).exists(), target


# contributor pages (how sopkit is built and tested) may name its private modules
_CONTRIBUTOR_DOCS = {"architecture.md", "testing.md"}


def test_user_docs_name_only_public_modules() -> None:
    """The user's docs import and name only public API, never a private `sopkit._x` module."""
    pages = [p for p in sorted(DOCS.glob("*.md")) if p.name not in _CONTRIBUTOR_DOCS]
    pages += [DOCS.parent / "README.md", *sorted((DOCS.parent / "examples").rglob("*.md"))]
    # `sopkit.__all__` is public; `module:Class` is an installed entry point's target, which
    # `sopkit channels` prints as it is registered
    private = re.compile(r"\bsopkit(?:\.\w+)*\._(?!_)\w+(?!\w*:\w)")
    found = [f"{p.name}:{n}: {m.group(0)}" for p in pages
             for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
             for m in private.finditer(line)]
    assert found == [], "private modules named in user docs:\n" + "\n".join(found)


def test_calendar_doc_example_is_the_shipped_playbook_and_runs(
        workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/calendar.md's playbook is examples/calendar/tea.toml, and its commands print what
    the doc shows."""
    doc = DOCS / "calendar.md"
    (toml,) = re.findall(r"```toml\n(.*?)```", _text(doc), re.DOTALL)
    assert toml == _text(ROOT / "examples" / "calendar" / "tea.toml")
    commands = _console_commands(doc)
    assert [c.split()[1] for c, _ in commands] == ["check", "simulate"]
    for command, shown in commands:
        _run_shown(command, shown, monkeypatch)
