"""`sopkit check` refuses the channel settings `sopkit run` refuses, without reading secrets.

The golden texts are tests/cases/invalid/channel_*.toml (errors) and
tests/cases/lint/plain_http.toml (the `--strict` warning); here: the same settings give the
same error from `check_settings` (check) and from `build` (run), for every built-in type.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from live_helpers import ENV
from typer.testing import CliRunner

from sopkit._cli.app import app
from sopkit.channels import ChannelConfigError, build, check_settings

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
ENV_ALL = {"S": SECRET, "TOKEN": "t0ken", "URL": "https://hooks.example.com/x",
           "USER": "u", "PASS": "p", "WECOM_SECRET": "wecom-secret"}

GOOD: dict[str, dict[str, Any]] = {
    "console": {"type": "console"},
    "webhook": {"type": "webhook", "url": "https://crm.example.com/hook", "secret_env": "S",
                "token_env": "TOKEN", "timeout": 5, "headers": {"X-Team": "crm"}},
    "webhook_env": {"type": "webhook", "url_env": "URL"},
    "sms": {"type": "sms", "url": "https://sms.example.com/send", "sign": "【某品牌】",
            "max_segments": 2, "token_env": "TOKEN"},
    "smtp": {"type": "smtp", "host": "mail.example.com", "port": 587,
             "from": "会员中心 <vip@example.com>", "username_env": "USER",
             "password_env": "PASS"},
    "wecom": {"type": "wecom", "corp_id": "ww0123456789abcdef", "agent_id": 1000002,
              "secret_env": "WECOM_SECRET", "tag_ids": {"高价值": "etAbC"}},
}

BAD: list[tuple[str, dict[str, Any], str | None, str]] = [
    # (label, table, the key `check` points at, a piece of the message)
    ("wecom corpid", {"type": "wecom", "corpid": "ww1", "agentid": 1, "secret_env": "W"},
     "corpid", "unknown key 'corpid'; did you mean 'corp_id'?"),
    ("wecom agent_id text", {"type": "wecom", "corp_id": "ww1", "secret_env": "W",
                             "agent_id": "one"}, "agent_id", "AgentId (a number)"),
    ("wecom no secret_env", {"type": "wecom", "corp_id": "ww1"}, "secret_env",
     "'secret_env' is required"),
    ("webhook credentials", {"type": "webhook", "url": "https://u:p@crm.example.com/h"},
     "url", "holds a user name or password"),
    ("webhook url and url_env", {"type": "webhook", "url": "https://a.example.com",
                                 "url_env": "URL"}, "url_env", "not both"),
    ("webhook ftp", {"type": "webhook", "url": "ftp://files.example.com/x"}, "url",
     "must be an http:// or https:// URL"),
    ("webhook Authorization header", {"type": "webhook", "url": "https://a.example.com",
                                      "headers": {"Authorization": "x"}}, "headers",
     "carries a secret"),
    ("webhook secret_env not a name", {"type": "webhook", "url": "https://a.example.com",
                                       "secret_env": 7}, "secret_env",
     "must name an environment variable"),
    ("sms timeout text", {"type": "sms", "url": "https://s.example.com", "timeout": "10s"},
     "timeout", "'timeout' must be a positive number"),
    ("sms segments", {"type": "sms", "url": "https://s.example.com", "max_segments": 0},
     "max_segments", "'max_segments' must be a whole number"),
    ("smtp port", {"type": "smtp", "host": "m.example.com", "from": "a@example.com",
                   "port": 70000}, "port", "'port' must be a whole number"),
    ("smtp tls", {"type": "smtp", "host": "m.example.com", "from": "a@example.com",
                  "tls": "startls"}, "tls", "did you mean 'starttls'?"),
    ("smtp password alone", {"type": "smtp", "host": "m.example.com",
                             "from": "a@example.com", "password_env": "PASS"},
     "password_env", "go together"),
    ("jsonl fsync", {"type": "jsonl", "path": "out.jsonl", "fsync": "yes"}, "fsync",
     "'fsync' must be true or false"),
    ("console key", {"type": "console", "colour": True}, "colour", "unknown key 'colour'"),
    ("not installed", {"type": "pigeon", "loft": "x"}, "type", "no channel plugin of type"),
]


@pytest.mark.parametrize("label", list(GOOD))
def test_good_settings_pass_check_and_build(label: str, tmp_path: Path) -> None:
    """Settings `run` accepts pass `check` too (which needs no secret in the environment)."""
    table = GOOD[label]
    assert check_settings("ch", table) is True
    channel: Any = build("ch", table, ENV_ALL)
    close = getattr(channel, "close", None)
    if close is not None:
        close()


@pytest.mark.parametrize(("label", "table", "key", "text"), BAD, ids=[b[0] for b in BAD])
def test_check_refuses_what_run_refuses_with_the_same_words(
        label: str, table: dict[str, Any], key: str | None, text: str) -> None:
    """Each bad table: check_settings and build raise the same message, naming the key."""
    with pytest.raises(ChannelConfigError) as checked:
        check_settings("ch", table)
    with pytest.raises(ChannelConfigError) as built:
        build("ch", table, {**ENV_ALL, "W": "x"})
    assert str(checked.value) == str(built.value)
    assert text in str(checked.value)
    assert checked.value.key == key


def test_check_creates_no_jsonl_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Checking a jsonl channel opens nothing: its file and folder do not appear."""
    monkeypatch.chdir(tmp_path)
    assert check_settings("out", {"type": "jsonl", "path": "out/actions.jsonl"})
    assert list(tmp_path.iterdir()) == []


def test_check_then_run_agree_on_a_playbook(tmp_path: Path) -> None:
    """The corpid playbook: `check` fails, `run` refuses it with the same words before the
    store is created; spelled corp_id/agent_id, `check` passes."""
    bad = Path(__file__).parent / "cases" / "invalid" / "channel_wecom_corpid.toml"
    checked = CliRunner().invoke(app, ["check", str(bad)])
    assert checked.exit_code == 1 and "did you mean 'corp_id'?" in checked.stdout
    store = tmp_path / "s.db"
    ran = CliRunner().invoke(app, ["run", str(bad), "--store", str(store), "--once"],
                             env={"WECOM_SECRET": "x"})
    assert ran.exit_code == 2
    assert "unknown key 'corpid'; did you mean 'corp_id'?" in ran.stderr
    assert not store.exists()
    good = tmp_path / "good.toml"
    good.write_text(bad.read_text(encoding="utf-8").replace("corpid", "corp_id")
                    .replace("agentid", "agent_id"), encoding="utf-8")
    assert CliRunner().invoke(app, ["check", str(good)]).exit_code == 0


def test_a_bare_channel_table_is_a_label_for_simulate(tmp_path: Path) -> None:
    """A channel with only `type` checks clean (simulate needs no settings)."""
    playbook = tmp_path / "bare.toml"
    playbook.write_text('[playbook]\nname = "bare"\n[events.purchase]\namount = "decimal"\n'
                        '[channels.sms]\ntype = "sms"\n[templates.t]\ntext = "hi"\n'
                        '[[rules]]\nname = "r"\non = "purchase"\nactions = [{ type = "send", '
                        'channel = "sms", template = "t" }]\n', encoding="utf-8")
    result = CliRunner().invoke(app, ["check", str(playbook)], env=ENV)
    assert result.exit_code == 0, result.stdout


def test_every_channel_table_in_the_docs_passes_check() -> None:
    """Each `[channels.NAME]` table shown in docs/*.md and README.md has settings `run` takes
    (the docs once showed corpid/agentid, which `run` refuses)."""
    import re
    import tomllib

    from sopkit.channels import installed

    types = {plugin.type for plugin in installed()}  # the docs' plugin example is skipped
    root = Path(__file__).resolve().parent.parent
    seen = 0
    for doc in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        for block in re.findall(r"```toml\n(.*?)```", doc.read_text(encoding="utf-8"),
                                re.DOTALL):
            try:
                data = tomllib.loads(block)
            except tomllib.TOMLDecodeError:
                continue  # a fragment with placeholders, not a whole TOML document
            for name, table in (data.get("channels") or {}).items():
                if not isinstance(table, dict) or set(table) <= {"type", "description"} \
                        or table.get("type") not in types:
                    continue
                try:
                    check_settings(name, table)
                except ChannelConfigError as exc:
                    raise AssertionError(f"{doc.name}: [channels.{name}]: {exc}") from None
                seen += 1
    assert seen >= 5


def test_a_type_no_plugin_provides_is_an_error_at_type(tmp_path: Path) -> None:
    """A channel with settings whose type is not installed: `check` fails at its `type` line."""
    playbook = tmp_path / "pigeon.toml"
    playbook.write_text('[playbook]\nname = "p"\n[events.purchase]\namount = "decimal"\n'
                        '[channels.birds]\ntype = "pigeon"\nloft = "/var/loft"\n'
                        '[[rules]]\nname = "r"\non = "purchase"\nactions = [{ type = "task", '
                        'note = "call" }]\n', encoding="utf-8")
    result = CliRunner().invoke(app, ["check", "--output", "jsonl", str(playbook)])
    assert result.exit_code == 1
    assert '"line": 6' in result.stdout and '"key": "channels.birds.type"' in result.stdout
    assert "no channel plugin of type 'pigeon' is installed" in result.stdout
