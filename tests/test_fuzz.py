"""Fuzzing the loader and its small languages: hostile text is a located error, never a crash.

Playbooks are the shipped ones and the golden cases, mutated (hostile fragments inserted,
slices cut or repeated, string values replaced); conditions and templates are random texts
built from their own tokens. The properties:

- `load_playbook` returns, or raises PlaybookError whose every Problem names a file and a
  line and column of at least 1 — never any other exception;
- a condition raises nothing but ExprError (at an offset inside the text), a template
  nothing but TemplateError;
- nothing hangs: each example runs under an alarm far longer than any honest example needs.

The number of examples per test is SOPKIT_FUZZ_EXAMPLES (default 40, a few seconds);
`make fuzz` runs many more. Every crash found becomes a golden case under
tests/cases/invalid/ (with its `.expected` from tests/regen_goldens.py).
"""

from __future__ import annotations

import os
import re
import signal
import zoneinfo
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sopkit
from sopkit._lang import expr as e
from sopkit._lang.cron import CronError, parse_every, parse_local
from sopkit._lang.templates import TemplateError, placeholders, render

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = int(os.environ.get("SOPKIT_FUZZ_EXAMPLES", "40"))
HANG_SECONDS = 60  # an example this slow is a hang (the slowest honest one takes well under 1 s)
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

_INCLUDE = re.compile(r'^(include\s*=\s*)\[(.*)\]', re.MULTILINE)


def _seed(path: Path) -> str:
    """A seed playbook with its include paths made absolute, so a mutant written elsewhere
    still finds its fragments."""
    text = path.read_text(encoding="utf-8")

    def absolute(match: re.Match[str]) -> str:
        names = re.findall(r'"([^"]*)"', match.group(2))
        listed = ", ".join(f'"{(path.parent / n).resolve().as_posix()}"' for n in names)
        return f"{match.group(1)}[{listed}]"

    return _INCLUDE.sub(absolute, text)


SEEDS = [_seed(p) for p in sorted([*(ROOT / "playbooks").glob("*.toml"),
                                   *(ROOT / "tests" / "cases" / "invalid").glob("*.toml"),
                                   *(ROOT / "tests" / "cases" / "compile").glob("*.toml")])
         if p.stat().st_size < 20_000]

# hostile pieces of condition text: deep nesting, huge numbers, odd tokens
CONDITION_PIECES = [
    "(", ")", "[", "]", ",", ".", "not ", " and ", " or ", " in ", "-", "+", "*", "/", "==",
    "!=", "<", "<=", ">", ">=", "=", "&&", "|", "tags", "true", "false", "stage", "profile.",
    "days_since_purchase", "event.amount", '"VIP"', "'x'", '"', "\\", "2024-02-29",
    "2024-02-30", "0", "1.5", "9" * 120, "9" * 4400, "(" * 130, ")" * 130, "not " * 1300,
    "- " * 300, "1 + " * 400, "[" * 60, "é", "名", "\x00", "\n", " ",
]
# hostile pieces of template text: many dotted parts, filters, stray braces
TEMPLATE_PIECES = [
    "{{", "}}", "{", "}", " ", "|", ".", "profile", ".name", "default(", ")", '"', "'", "\n",
    "x", "1", "名", "params.code", "{{ profile" + ".a" * 60 + " ! }}", "{{ a" + ".b" * 3000,
    '| default("', "{{{", "}}}", "\\",
]
# hostile pieces of TOML: the fuzzer's past finds and their relatives
TOML_PIECES = [
    "a.b.c = 1\n", "x = " + "9" * 4400 + "\n", "x = " + "9" * 101 + "\n", "x = 1e99999\n",
    "x = " + "[" * 200 + "]" * 200 + "\n", "x = " + "{ a = " * 60 + "1" + " }" * 60 + "\n",
    'timezone = "' + "Z" * 300 + '"\n', 'timezone = "America"\n', 'timezone = "../etc"\n',
    'include = ["' + "f" * 300 + '.toml"]\n', 'include = ["a\\u0000b.toml"]\n',
    'include = ["."]\n', 'include = ["/"]\n', 'include = ["/dev/null"]\n',
    'when = "' + "(" * 130 + "x" + ")" * 130 + '"\n', 'when = "' + "not " * 1300 + 'x"\n',
    'text = "{{ profile' + ".a" * 40 + ' ! }}"\n', "[metrics]\n", "[[rules]]\n", "[[stages]]\n",
    "[tags.x]\n", "[playbook]\n", "[profile]\n", '"""', "'''", "= =\n", "[", "]", "{", "}",
    "\n", "\x00", "inf", "nan", "-0", "1979-05-27T07:32:00Z", "[templates.t]\n",
    'actions = [{ type = "send", channel = "sms", template = "hello" }]\n',
    'kind = "count"\n', 'window = "' + "9" * 30 + 'd"\n', 'per = "0s"\n',
    'every = "' + "*/1 " * 60 + '"\n', 'at = "9999-12-31T23:59"\n',
    "x" + ".a" * 2000 + " = 1\n", "[t" + ".a" * 2000 + "]\n", "[[t" + ".a" * 70 + "]]\n",
    "x = 0x" + "f" * 4400 + "\n", 'name = 0x' + "f" * 4000 + "\n", ".a" * 30,
]


# values that fit TOML but maybe not the playbook: wrong types, edge numbers, odd durations
TOML_VALUES = [
    "0", "-1", "1.5", "true", '"x"', '""', "[]", "{}", '[1, "a"]', '{ kind = "count" }',
    '"2024-02-30"', "1979-05-27", "07:32:00", '"90d"', '"-1d"', '"0s"', '"1y"', '"25:00"',
    "9223372036854775808", "-9223372036854775809", "1e308", "inf", "-inf", "nan", '"名"',
    '"' + "x" * 300 + '"', '"{{ profile' + ".a" * 40 + ' ! }}"', '"not not x"', '"America"',
    '"purchase"', '"sms"', '"hello"', '"send"', '["VIP"]', '[{ type = "tag", tag = "vip" }]',
]
_ASSIGNMENT = re.compile(r"^([A-Za-z0-9_.\"-]+\s*=\s*)(.*)$", re.MULTILINE)


@contextmanager
def _no_hang(seconds: int = HANG_SECONDS) -> Iterator[None]:
    """Fail the example (instead of hanging the suite) if it runs longer than `seconds`."""

    def stop(signum: int, frame: FrameType | None) -> None:
        raise AssertionError(f"still running after {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@st.composite
def _mutants(draw: st.DrawFn) -> str:
    """A seed playbook with one to four mutations."""
    text = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(["insert", "line", "line", "cut", "repeat", "string",
                                     "string", "value", "value", "value", "char"]))
        if kind == "insert":
            text = text[:at] + draw(st.sampled_from(TOML_PIECES)) + text[at:]
        elif kind == "line":  # a hostile line at a line start
            start = text.rfind("\n", 0, at) + 1
            text = text[:start] + draw(st.sampled_from(TOML_PIECES)) + text[start:]
        elif kind == "cut":
            text = text[:at] + text[at + draw(st.integers(1, 80)):]
        elif kind == "repeat":
            piece = text[at : at + draw(st.integers(1, 40))]
            text = text[:at] + piece * draw(st.integers(2, 50)) + text[at:]
        elif kind == "string":  # replace the next quoted value by hostile text
            opening = text.find('"', at)
            closing = text.find('"', opening + 1)
            if opening >= 0 and closing >= 0:
                pieces = CONDITION_PIECES + TEMPLATE_PIECES
                body = "".join(draw(st.lists(st.sampled_from(pieces), min_size=1, max_size=6)))
                body = body.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
                text = text[: opening + 1] + body + text[closing:]
        elif kind == "value":  # the value of the next `key = value` line, replaced
            match = _ASSIGNMENT.search(text, at) or _ASSIGNMENT.search(text)
            if match:
                text = text[: match.start(2)] + draw(st.sampled_from(TOML_VALUES)) + \
                    text[match.end(2) :]
        else:
            text = text[:at] + draw(st.characters()) + text[at + 1 :]
    return text


def _assert_loads_or_located(path: Path) -> None:
    try:
        sopkit.load_playbook(path)
    except sopkit.PlaybookError as exc:
        assert exc.problems, "a PlaybookError without problems"
        for problem in exc.problems:
            where = problem.location
            assert where.file == str(path) or Path(where.file).is_file(), where
            assert where.line >= 1 and where.column >= 1, where
            assert problem.message


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One directory for the module's mutants (hypothesis runs examples one at a time)."""
    return tmp_path_factory.mktemp("fuzz")


@SETTINGS
@given(_mutants())
def test_mutated_playbooks_load_or_fail_located(workdir: Path, text: str) -> None:
    """A mutated playbook loads, or fails with problems that each name file:line:column."""
    path = workdir / "playbook.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    with _no_hang():
        _assert_loads_or_located(path)


def test_every_seed_is_used() -> None:
    """The fuzzer starts from the shipped playbooks and every golden case."""
    assert len(SEEDS) >= 3 + 25
    assert any("[[campaigns]]" in seed for seed in SEEDS)


_SCOPE_NAMES = {"days_since_purchase": "number", "stage": "string", "profile.name": "string",
                "profile.birthday": "date", "event.amount": "number", "x": "bool"}


@SETTINGS
@given(st.lists(st.sampled_from(CONDITION_PIECES) | st.text(max_size=4), max_size=12))
def test_conditions_fail_only_with_located_errors(pieces: list[str]) -> None:
    """A random condition parses and type-checks, or raises ExprError inside its text."""
    text = "".join(pieces)
    scope = e.Scope(_SCOPE_NAMES, frozenset({"VIP"}), frozenset({"active"}), allow_event=True)
    with _no_hang():
        try:
            e.check(e.parse(text), scope)
        except e.ExprError as exc:
            assert 0 <= exc.offset <= len(text)
            assert exc.message


@SETTINGS
@given(st.lists(st.sampled_from(TEMPLATE_PIECES) | st.text(max_size=4), max_size=12),
       st.text(max_size=20))
def test_templates_fail_only_with_template_errors(pieces: list[str], value: str) -> None:
    """A random template is read or raises TemplateError, and renders the value as given."""
    text = "".join(pieces)
    with _no_hang():
        try:
            names = placeholders(text)
        except TemplateError:
            return
        shown = render(text, lambda name: value)
    if names and value:
        assert value in shown


# pieces of campaign schedule texts (`every`, `at`, `until`)
SCHEDULE_PIECES = [
    "*", "/", ",", "-", " ", "0", "1", "7", "59", "60", "9" * 30, "mon", "sun", "jan", "@daily",
    "@x", "daily", "weekly", "monthly", "09:00", "24:00", "2024-02-29", "2024-02-30", "T",
    "9999-12-31", "0001-01-01", "+14:00", "-14:00", "Z", "1" * 5000, "名", "\n",
]


@SETTINGS
@given(st.lists(st.sampled_from(SCHEDULE_PIECES) | st.text(max_size=3), max_size=10))
def test_schedules_fail_only_with_their_errors(pieces: list[str]) -> None:
    """A random `every` is read or is a CronError; a random `at`/`until` is read or a
    ValueError (which `check` reports at the key)."""
    text = "".join(pieces)
    zone = zoneinfo.ZoneInfo("Asia/Shanghai")
    with _no_hang():
        try:
            parse_every(text)
        except CronError as exc:
            assert exc.message
        for end_of_day in (False, True):
            with suppress(ValueError):
                parse_local(text, zone, end_of_day=end_of_day)


def test_placeholder_of_ten_thousand_parts_is_read() -> None:
    """A placeholder of 10,000 dotted parts is read; with a bad tail it is an error, at once.

    The old regular expression backtracked twice as long per part (28 parts: over a minute),
    so this input could never finish with it."""
    name = "profile" + ".a" * 10_000
    assert placeholders("Hi {{ " + name + " }}") == [name]
    with pytest.raises(TemplateError, match="cannot read placeholder"):
        placeholders("Hi {{ " + name + " ! }}")
    with pytest.raises(TemplateError, match="unbalanced"):
        placeholders("{{ " * 10_000 + "x")


def test_condition_limits_are_errors_not_crashes() -> None:
    """Past each documented limit a condition is an ExprError naming the limit."""
    cases = {
        "x > " + "9" * (e.MAX_DIGITS + 1): "digits",
        "(" * (e.MAX_DEPTH + 1) + "x" + ")" * (e.MAX_DEPTH + 1): "levels deep",
        "not " * (e.MAX_DEPTH + 1) + "x": "levels deep",
        "1" + " + 1" * (e.MAX_DEPTH + 1) + " > 0": "levels deep",
        "x or " * (e.MAX_LENGTH // 5) + "x": "characters long",
    }
    for text, words in cases.items():
        with pytest.raises(e.ExprError, match=words):
            e.parse(text)


def test_condition_at_the_limits_is_accepted() -> None:
    """Just inside the limits a condition still parses: the limits reject nothing sensible."""
    depth = e.MAX_DEPTH - 2  # the comparison and its operand take two levels
    text = "(" * depth + "x > " + "9" * e.MAX_DIGITS + ")" * depth
    assert isinstance(e.parse(text), e.Compare)
    assert isinstance(e.parse(" or ".join(["x"] * 2000)), e.BoolOp)  # long but flat


def test_customer_data_is_never_rendered_as_a_template(tmp_path: Path) -> None:
    """A profile name `{{ profile.phone }}` reaches the message as those braces, not a phone."""
    path = tmp_path / "playbook.toml"
    path.write_text("""\
[playbook]
name = "greet"

[profile]
name = "string"
phone = "string"

[channels.sms]
type = "sms"

[templates.hello]
text = "Hello {{ profile.name }}, we will call {{ profile.phone }}"

[[rules]]
name = "greet"
on = "signup"
actions = [{ type = "send", channel = "sms", template = "hello" }]

[events.signup]
""", encoding="utf-8")
    runtime = sopkit.Runtime(sopkit.load_playbook(path))
    runtime.add_profile({"customer_id": "c1", "name": "{{ profile.phone }}",
                         "phone": "13800138000"})
    actions = runtime.ingest({"customer_id": "c1", "type": "signup",
                              "ts": "2024-01-01T09:00:00+00:00"})
    messages = [a.details["message"] for a in actions if a.action == "send"]
    assert messages == ["Hello {{ profile.phone }}, we will call 13800138000"]
