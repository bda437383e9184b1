"""`sopkit channels` with real third-party plugins: one that works and one that cannot load.

The plugins are made the way pip installs them (a `*.dist-info` folder with METADATA and
entry_points.txt next to the module) and found through PYTHONPATH by a fresh interpreter.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import unquote

import pytest

from sopkit.channels import ChannelConfigError, Message, Receipt

GOOD = '''
"""A carrier-pigeon channel: writes each message to the loft file in its config."""
import json
from sopkit.channels import ChannelConfigError, Receipt


class PigeonChannel:
    def __init__(self, name, config, env):
        if "loft" not in config:
            raise ChannelConfigError(f"channel '{name}': 'loft' is required")
        self.loft = config["loft"]

    def send(self, message):
        with open(self.loft, "a", encoding="utf-8") as out:
            out.write(json.dumps(message.to_json(), ensure_ascii=False) + "\\n")
        return Receipt.delivered("in the air", provider_id="pigeon-" + message.key)
'''

BROKEN = '''
raise ImportError("brokenplug needs the carrier-sdk package: pip install carrier-sdk")
'''


def _plugin(site: Path, dist: str, module: str, source: str, entry: str) -> None:
    info = site / f"{dist}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n",
                                   encoding="utf-8")
    (info / "entry_points.txt").write_text(f"[sopkit.channels]\n{entry}\n", encoding="utf-8")
    (site / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A folder holding two installed plugins: `pigeon` (works) and `carrier` (broken)."""
    folder = tmp_path / "site"
    _plugin(folder, "goodplug", "goodplug", GOOD, "pigeon = goodplug:PigeonChannel")
    _plugin(folder, "brokenplug", "brokenplug", BROKEN, "carrier = brokenplug:CarrierChannel")
    return folder


def _python(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(site), PYTHONIOENCODING="utf-8")
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          encoding="utf-8", env=env, timeout=120, check=False)


def _rows(stdout: str) -> dict[str, dict[str, Any]]:
    rows = [json.loads(line) for line in stdout.splitlines()]
    return {row["type"]: row for row in rows}


def test_table_names_the_broken_plugin_and_lists_the_others(site: Path) -> None:
    """The table shows the good plugin, the built-ins and the broken one with its error."""
    result = _python(site, "-m", "sopkit", "channels")
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    row = {line.split("│")[1].strip(): line for line in lines if line.startswith("│ ")
           and line.split("│")[1].strip()}
    assert "goodplug" in row["pigeon"] and row["pigeon"].rstrip("│ ").endswith("ok")
    assert row["smtp"].rstrip("│ ").endswith("ok") and row["memory"].rstrip("│ ").endswith("ok")
    assert "brokenplug" in row["carrier"] and "ImportError" in row["carrier"]
    assert "carrier" in lines[-1] and "not usable" in lines[-1]


def test_jsonl_gives_each_type_with_status_and_error(site: Path) -> None:
    """--output jsonl: one object per type, sorted, with target, distribution and error."""
    result = _python(site, "-m", "sopkit", "channels", "--output", "jsonl")
    assert result.returncode == 1, result.stderr
    rows = _rows(result.stdout)
    assert list(rows) == sorted(rows)
    assert rows["pigeon"] == {"type": "pigeon", "target": "goodplug:PigeonChannel",
                              "distribution": "goodplug", "status": "ok", "error": None}
    carrier = rows["carrier"]
    assert (carrier["status"], carrier["distribution"]) == ("broken", "brokenplug")
    assert carrier["error"] == ("ImportError: brokenplug needs the carrier-sdk package: "
                                "pip install carrier-sdk")
    assert rows["smtp"]["status"] == rows["memory"]["status"] == "ok"
    assert rows["smtp"]["target"] == "sopkit.channels._smtp:SmtpChannel"


def test_named_types_decide_the_exit_code(site: Path) -> None:
    """Naming types checks only those: 0 when all load, 1 for a broken or unknown one."""
    ok = _python(site, "-m", "sopkit", "channels", "smtp", "memory", "pigeon")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "3 channel types, all load" in ok.stdout and "carrier" not in ok.stdout
    broken = _python(site, "-m", "sopkit", "channels", "pigeon", "carrier", "--output", "jsonl")
    assert broken.returncode == 1 and set(_rows(broken.stdout)) == {"pigeon", "carrier"}
    typo = _python(site, "-m", "sopkit", "channels", "pigeno", "--output", "jsonl")
    assert typo.returncode == 1
    assert _rows(typo.stdout)["pigeno"] == {
        "type": "pigeno", "target": None, "distribution": None, "status": "missing",
        "error": "not installed; did you mean 'pigeon'?"}


def test_the_good_plugin_delivers_through_build(site: Path, tmp_path: Path) -> None:
    """The third-party channel is built from a playbook table and delivers a message."""
    loft = tmp_path / "loft.jsonl"
    script = textwrap.dedent(f"""
        import json
        from sopkit.channels import Message, build
        channel = build("birds", {{"type": "pigeon", "loft": {str(loft)!r}}}, {{}})
        message = Message(key="shop:1:生日:c1:1:0", kind="send", channel="birds",
                          customer_id="c1", rule="生日", time="2025-01-01T09:00:00+08:00",
                          body={{"message": "生日快乐"}})
        print(json.dumps(channel.send(message).to_json(), ensure_ascii=False))
    """)
    result = _python(site, "-c", script)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"status": "delivered", "detail": "in the air",
                                         "provider_id": "pigeon-shop:1:生日:c1:1:0"}
    (sent,) = [json.loads(line) for line in loft.read_text(encoding="utf-8").splitlines()]
    assert sent["body"] == {"message": "生日快乐"} and sent["channel"] == "birds"


def _doc_plugin() -> str:
    text = (Path(__file__).resolve().parent.parent / "docs" / "channels.md").read_text(
        encoding="utf-8")
    section = text.split("### A complete plugin", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "no Python block under '### A complete plugin' in docs/channels.md"
    return match.group(1)


class _Api(BaseHTTPRequestHandler):
    """The far side of the documented example: answers each POST from a script."""

    script: ClassVar[list[tuple[int, dict[str, str], bytes]]] = []
    seen: ClassVar[list[tuple[dict[str, str], Any]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append((dict(self.headers), body))
        status, headers, reply = type(self).script.pop(0)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        pass


def test_documented_example_plugin_maps_replies_to_receipts(site: Path) -> None:
    """The example in docs/channels.md runs: 200 delivered, 503 retry-after, 401 disables."""
    (site / "sopkit_pigeon").mkdir()
    (site / "sopkit_pigeon" / "__init__.py").write_text(_doc_plugin(), encoding="utf-8")
    spec = importlib.util.spec_from_file_location("sopkit_pigeon",
                                                  site / "sopkit_pigeon" / "__init__.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Api.seen.clear()
    _Api.script[:] = [(200, {}, b'{"id": "m-1"}'),
                      (503, {"Retry-After": "7"}, b"busy, call 13812345678"),
                      (401, {}, b"token revoked")]
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1/messages"
        channel = module.PigeonChannel("birds", {"url": url, "token_env": "PIGEON_TOKEN"},
                                       {"PIGEON_TOKEN": "t0ken"})
        message = Message(key="shop:1:生日:c1:1:0", kind="send", channel="birds",
                          customer_id="c1", rule="生日", time="t",
                          body={"message": "生日快乐"}, contact={"phone": "13812345678"})
        receipts = [channel.send(message) for _ in range(3)]
    finally:
        server.shutdown()
        server.server_close()
    assert receipts[0] == Receipt.delivered(provider_id="m-1")
    assert (receipts[1].status, receipts[1].retry_after) == ("retry", 7.0)
    assert "138****5678" in receipts[1].detail
    assert (receipts[2].status, receipts[2].disable) == ("failed", True)
    headers, body = _Api.seen[0]
    assert headers["Authorization"] == "Bearer t0ken"
    assert unquote(headers["Idempotency-Key"]) == "shop:1:生日:c1:1:0"
    assert body == {"to": "13812345678", "text": "生日快乐"}
    with pytest.raises(ChannelConfigError, match="PIGEON_TOKEN"):
        module.PigeonChannel("birds", {"url": url, "token_env": "PIGEON_TOKEN"}, {})
