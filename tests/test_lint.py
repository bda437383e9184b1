"""`sopkit check --strict`: lints of valid playbooks, as golden cases and as properties.

Each case is `tests/cases/lint/<name>.toml` (its first line says what it shows) and
`<name>.expected`, the exact stdout of `sopkit check --strict tests/cases/lint/<name>.toml`
run from the repository root. A case whose golden says `ok` pins that nothing is reported.
Rewrite a golden with `.venv/bin/sopkit check --strict CASE > CASE.expected` from the root,
then read the diff.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import sopkit
from sopkit._cli.app import app
from sopkit._ir.compile import compile_playbook
from sopkit._lang import expr as e
from sopkit._playbook import limits as _limits
from sopkit._playbook import lint as _lint
from sopkit._playbook import models as m
from sopkit._playbook import terms as _terms
from sopkit._playbook.load import LoadedPlaybook
from sopkit.engines.native import NativeEngine

ROOT = Path(__file__).resolve().parent.parent
CASES = Path("tests", "cases", "lint")
CASE_FILES = sorted((ROOT / CASES).glob("*.toml"))
PLAYBOOKS = sorted((ROOT / "playbooks").glob("*.toml"))


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """A CLI runner working from the repository root, so findings print relative paths."""
    monkeypatch.chdir(ROOT)
    return CliRunner()


@pytest.mark.parametrize("case", CASE_FILES, ids=[case.stem for case in CASE_FILES])
def test_lint_case_output(case: Path, run: CliRunner) -> None:
    """`sopkit check --strict` prints exactly the golden text; exit 1 on warnings, else 0."""
    expected = case.with_suffix(".expected").read_text(encoding="utf-8")
    result = run.invoke(app, ["check", "--strict", (CASES / case.name).as_posix()])
    assert result.stdout == expected
    assert result.exit_code == (1 if ": warning: " in expected else 0)


def test_every_lint_has_a_case() -> None:
    """Each lint code is shown by at least one golden case, and every case says what it shows."""
    seen: set[str] = set()
    for case in CASE_FILES:
        assert case.with_suffix(".expected").is_file(), f"{case.name} has no .expected"
        first = case.read_text(encoding="utf-8").splitlines()[0]
        assert first.startswith("# "), f"{case.name} must start with a comment saying what it is"
        seen.update(f.code for f in _lint.findings(sopkit.load_playbook(case)))
    assert seen == set(_lint.CODES)


def test_without_strict_check_stays_as_it_was(run: CliRunner) -> None:
    """Without --strict a playbook with lint warnings still checks `ok`, exit 0."""
    case = (CASES / "never_true_bounds.toml").as_posix()
    result = run.invoke(app, ["check", case])
    assert result.exit_code == 0
    assert result.stdout == f"{case}: ok (1 rules, 0 tags, 0 stages, 3 metrics)\n"


def test_jsonl_marks_warnings_and_errors(run: CliRunner) -> None:
    """--output jsonl gives each finding a severity: warning for lints, error for mistakes."""
    lint_case = (CASES / "shadowed_stage_interval.toml").as_posix()
    invalid = "tests/cases/invalid/unknown_timezone.toml"
    result = run.invoke(app, ["check", "--strict", "--output", "jsonl", lint_case, invalid])
    assert result.exit_code == 1
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["file"], r["line"], r["column"], r["key"], r["severity"]) for r in rows] == [
        (lint_case, 19, 1, "stages[1].when", "warning"),
        (invalid, 4, 1, "playbook.timezone", "error"),
    ]
    assert rows[0]["suggestion"] == "move 'dormant' above 'quiet', or narrow 'quiet's condition"


@pytest.mark.parametrize("playbook", PLAYBOOKS, ids=[p.stem for p in PLAYBOOKS])
def test_shipped_playbooks_lint_clean(playbook: Path) -> None:
    """The shipped playbooks (with their [policy] caps) give no lint findings at all."""
    found = _lint.findings(sopkit.load_playbook(playbook))
    assert found == [], [str(f.problem) for f in found]


def test_no_cap_findings_name_each_used_channel() -> None:
    """Without a [policy] cap, every channel that sends gets exactly one no-cap warning."""
    loaded = sopkit.load_playbook(ROOT / CASES / "no_cap.toml")
    found = [f.problem for f in _lint.findings(loaded) if f.code == "no-cap"]
    assert found and all(p.location.key.startswith("channels.") for p in found)
    assert len({p.location.key for p in found}) == len(found)


# ---- a [policy] table ----------------------------------------------------------------------


def _with_policy(case: str, policy: str, tmp: Path) -> LoadedPlaybook:
    path = tmp / case
    path.write_text((ROOT / CASES / case).read_text(encoding="utf-8") + "\n" + policy,
                    encoding="utf-8")
    return sopkit.load_playbook(path)


def test_a_policy_cap_silences_no_cap_and_wecom_limit(tmp_path: Path) -> None:
    """A [policy] cap on the WeCom channel within WeCom's limit leaves nothing to report."""
    cap = '[[policy.caps]]\nchannel = "wecom"\nmax = 1\nper = "1d"\n'
    assert _lint.findings(_with_policy("wecom_short_cooldown.toml", cap, tmp_path)) == []


def test_a_loose_policy_cap_still_breaks_the_wecom_limit(tmp_path: Path) -> None:
    """A cap allowing 2 a day does not keep a customer within WeCom's monthly limit."""
    cap = '[[policy.caps]]\nchannel = "wecom"\nmax = 2\nper = "1d"\n'
    found = _lint.findings(_with_policy("wecom_short_cooldown.toml", cap, tmp_path))
    assert [f.code for f in found] == ["wecom-limit"]


def test_a_cap_for_every_channel_covers_them_all(tmp_path: Path) -> None:
    """A cap that names no channel covers every channel."""
    cap = '[[policy.caps]]\nmax = 3\nper = "7d"\n'
    assert _lint.findings(_with_policy("no_cap.toml", cap, tmp_path)) == []


def test_without_policy_there_are_no_caps() -> None:
    """A playbook with no [policy] caps has no caps at all."""
    assert _limits.policy_caps(sopkit.load_playbook(ROOT / CASES / "no_cap.toml").model) == {}



# ---- SMS length --------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("好" * 70, (70, 1, 70)),
    ("好" * 71, (71, 2, 67)),
    ("好" * 201, (201, 3, 67)),
    ("好" * 202, (202, 4, 67)),
    ("a" * 160, (160, 1, 160)),
    ("a" * 459, (459, 3, 153)),
    ("a" * 460, (460, 4, 153)),
    ("a" * 150 + "好", (151, 3, 67)),
])
def test_sms_segments(text: str, expected: tuple[int, int, int]) -> None:
    """Chinese text counts 70 a message and 67 a part; plain ASCII 160 and 153."""
    assert _limits.sms_segments(text) == expected


def test_rough_render_uses_params_defaults_and_ten_characters() -> None:
    """Params are filled in, a placeholder with a default shows it, others count 10 chars."""
    text = '{{ profile.name | default("您好") }}，券码 {{ params.code }}，{{ days }} 天'
    assert _limits.rough_render(text, {"code": "BDAY20"}) == "您好，券码 BDAY20，XXXXXXXXXX 天"


# ---- the condition analysis is sound: it never reports what can happen --------------------

_PLAYBOOK = m.Playbook.model_validate({
    "playbook": {"name": "p"},
    "profile": {"vip": "bool"},
    "events": {"buy": {"amount": "decimal"}},
    "metrics": {"n": {"kind": "count", "event": "buy"},
                "d": {"kind": "sum", "event": "buy", "field": "amount"}},
    "stages": [{"name": "a", "when": "n > 100"}, {"name": "b"}],
    "tags": {"t": {}, "A": {"when": "n > 0"}, "B": {"when": "n > 0"}},
})
_VALUES = {
    "n": [None, *range(-2, 7)],
    "d": [None, -1, 0, 0.75, 1.5, 1.75, 2, 2.5, 3, 4],
    "profile.vip": [None, True, False],
    "stage": [None, "a", "b"],
    "tag:t": [True, False],
}
_atoms = st.one_of(
    st.builds("n {} {}".format, st.sampled_from(["==", "!=", "<", "<=", ">", ">="]),
              st.integers(-1, 5)),
    st.builds("d {} {}".format, st.sampled_from(["==", "!=", "<", "<=", ">", ">="]),
              st.sampled_from(["0", "1.5", "2", "3", "-1"])),
    st.builds("n {}in [{}, {}]".format, st.sampled_from(["", "not "]), st.integers(0, 5),
              st.integers(0, 5)),
    st.sampled_from(["profile.vip", "profile.vip == true", "profile.vip != false",
                     'stage == "a"', 'stage != "b"', 'stage in ["a", "b"]',
                     'stage not in ["a"]', '"t" in tags', '"t" not in tags']),
)
_conditions = st.recursive(_atoms, lambda inner: st.one_of(
    st.builds("not ({})".format, inner),
    st.builds("({}) and ({})".format, inner, inner),
    st.builds("({}) or ({})".format, inner, inner),
    st.builds("({}) and ({}) and ({})".format, inner, inner, inner),
), max_leaves=5)


def _truth_table(a: str, b: str) -> list[tuple[bool, bool]]:
    """(a holds, b holds) for every combination of the facts' values, by the native engine."""
    data = _PLAYBOOK.model_dump(exclude_none=True)
    data["tags"]["A"]["when"], data["tags"]["B"]["when"] = a, b
    ir = compile_playbook(m.Playbook.model_validate(data))
    slots = {slot["name"]: i for i, slot in enumerate(ir["slots"])}
    pid = {tag["name"]: tag["predicate"] for tag in ir["tags"]}
    engine = NativeEngine(ir)
    rows = []
    names = [name for name in _VALUES if name in slots]
    for values in itertools.product(*(_VALUES[name] for name in names)):
        facts: list[Any] = [None] * len(ir["slots"])
        for name, value in zip(names, values, strict=True):
            facts[slots[name]] = value
        true = engine.evaluate(facts)
        rows.append((pid["A"] in true, pid["B"] in true))
    return rows


@settings(max_examples=150, deadline=None)
@given(_conditions, _conditions)
def test_condition_analysis_is_sound(a: str, b: str) -> None:
    """Never-true means no facts make it true; `implies` means no facts make a but not b."""
    terms = _terms.Terms(_PLAYBOOK)
    ta, tb = terms.term(e.parse(a)), terms.term(e.parse(b))
    table = _truth_table(a, b)
    if _terms.unsatisfiable(ta):
        assert not any(x for x, _ in table), a
    if _terms.implies(ta, tb):
        assert all(y for x, y in table if x), (a, b)


@pytest.mark.parametrize(("a", "b"), [
    ("n > 5 and n < 3", None),
    ("n >= 3 and n < 3", None),
    ("n == 1 and n == 2", None),
    ("n > 3 and n < 4", None),
    ("not (n > 5) and n > 7", None),
    ("profile.vip != true and profile.vip != false", None),
    ('"t" in tags and not ("t" in tags)', None),
    ("n > 200", "n > 180"),
    ("n >= 5 and d > 1", "n >= 5"),
    ("n in [6, 7]", "n > 5"),
    ('stage == "a"', 'stage != "b"'),
])
def test_condition_analysis_finds(a: str, b: str | None) -> None:
    """The analysis is not idle: it proves these contradictions and implications."""
    terms = _terms.Terms(_PLAYBOOK)
    if b is None:
        assert _terms.unsatisfiable(terms.term(e.parse(a)))
    else:
        assert _terms.implies(terms.term(e.parse(a)), terms.term(e.parse(b)))


@pytest.mark.parametrize(("a", "b"), [
    ("d > 3 and d < 4", None),
    ("not (n > 5) and not (n < 3)", None),
    ("n > 180", "n > 200"),
    ("not (n < 5)", "n >= 5"),
])
def test_condition_analysis_does_not_overreach(a: str, b: str | None) -> None:
    """What can hold is not called never-true (decimals, missing facts), nor implied."""
    terms = _terms.Terms(_PLAYBOOK)
    if b is None:
        assert not _terms.unsatisfiable(terms.term(e.parse(a)))
    else:
        assert not _terms.implies(terms.term(e.parse(a)), terms.term(e.parse(b)))
