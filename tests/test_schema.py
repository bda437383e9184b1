"""The committed JSON Schema is current and accepts every shipped playbook and fragment."""

from __future__ import annotations

import copy
import json
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from typer.testing import CliRunner

from sopkit._cli.app import app

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_FILE = ROOT / "schema" / "playbook.schema.json"
FRAGMENT_SCHEMA_FILE = ROOT / "schema" / "fragment.schema.json"
PLAYBOOKS = sorted((ROOT / "playbooks").glob("*.toml"))
FRAGMENTS = sorted((ROOT / "rules").glob("*.toml"))


def _schema() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    return data


def _validator() -> jsonschema.protocols.Validator:
    schema = _schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _errors(data: dict[str, Any]) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in _validator().iter_errors(data)]


def _toml(path: Path) -> dict[str, Any]:
    with path.open("rb") as handle:
        return tomllib.load(handle)


def test_committed_schema_is_current() -> None:
    """schema/playbook.schema.json is exactly what `sopkit schema` prints."""
    result = CliRunner().invoke(app, ["schema"])
    assert result.exit_code == 0, result.output
    assert SCHEMA_FILE.read_text(encoding="utf-8") == result.stdout, (
        "schema/playbook.schema.json is out of date with _playbook/models.py: run `make schema`")


def test_committed_fragment_schema_is_current() -> None:
    """schema/fragment.schema.json is exactly what `sopkit schema --fragment` prints."""
    result = CliRunner().invoke(app, ["schema", "--fragment"])
    assert result.exit_code == 0, result.output
    assert FRAGMENT_SCHEMA_FILE.read_text(encoding="utf-8") == result.stdout, (
        "schema/fragment.schema.json is out of date with _playbook/models.py: run `make schema`")


def test_schema_is_a_valid_json_schema() -> None:
    """The schema itself is valid under the JSON Schema dialect it declares."""
    schema = _schema()
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.validators.validator_for(schema).check_schema(schema)


def test_there_are_shipped_playbooks_and_fragments() -> None:
    """The parametrised tests below have something to check."""
    assert PLAYBOOKS and FRAGMENTS


@pytest.mark.parametrize("path", PLAYBOOKS, ids=lambda p: p.name)
def test_shipped_playbook_validates(path: Path) -> None:
    """Every playbook under playbooks/ is valid against the schema its `#:schema` line names."""
    first_line = path.read_text(encoding="utf-8").splitlines()[0]
    assert first_line == "#:schema ../schema/playbook.schema.json"
    assert _errors(_toml(path)) == []


@pytest.mark.parametrize("path", FRAGMENTS, ids=lambda p: p.name)
def test_shipped_fragment_validates_against_the_fragment_schema(path: Path) -> None:
    """A fragment under rules/ names the fragment schema and validates against it as is."""
    first_line = path.read_text(encoding="utf-8").splitlines()[0]
    assert first_line == "#:schema ../schema/fragment.schema.json"
    schema = json.loads(FRAGMENT_SCHEMA_FILE.read_text(encoding="utf-8"))
    validator = jsonschema.validators.validator_for(schema)(schema)
    assert [e.message for e in validator.iter_errors(_toml(path))] == []
    assert _errors(_toml(path)), "the playbook schema should require [playbook]"


def test_bad_duration_and_time_fail_the_schema() -> None:
    """The schema flags `cooldown = "3 days"` and `day_starts = "9am"` as an editor types."""
    data = _toml(ROOT / "playbooks" / "retail.toml")
    data["rules"][0]["cooldown"] = "3 days"
    data["playbook"]["day_starts"] = "9am"
    assert len(_errors(data)) == 2


def test_unknown_key_fails_schema_validation() -> None:
    """A misspelt key (`cooldwn`) in a rule is rejected by the schema, as by `sopkit check`."""
    data = _toml(ROOT / "playbooks" / "retail.toml")
    assert _errors(data) == []
    bad = copy.deepcopy(data)
    bad["rules"][0]["cooldwn"] = bad["rules"][0].pop("cooldown")
    errors = _errors(bad)
    assert any("cooldwn" in e for e in errors), errors


@pytest.mark.parametrize(
    ("where", "change"),
    [
        ("top level", lambda d: d.update(playbok={"name": "x"})),
        ("[playbook]", lambda d: d["playbook"].update(time_zone="UTC")),
        ("a metric", lambda d: d["metrics"]["purchases_total"].update(windw="90d")),
        ("an action", lambda d: d["rules"][0]["actions"][0].update(chanel="sms")),
    ],
)
def test_unknown_keys_anywhere_fail(where: str, change: Any) -> None:
    """Unknown keys are rejected at every level of the playbook, not only in rules."""
    data = _toml(ROOT / "playbooks" / "retail.toml")
    change(data)
    assert _errors(data), f"an unknown key in {where} passed the schema"


def test_wrong_enum_value_fails() -> None:
    """A metric kind or profile type outside the documented set fails the schema."""
    data = _toml(ROOT / "playbooks" / "retail.toml")
    data["metrics"]["purchases_total"]["kind"] = "cnt"
    data["profile"]["vip"] = "boolean"
    assert len(_errors(data)) == 2
