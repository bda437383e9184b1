"""`sopkit serve`'s OpenAPI document: committed, current, and what the live server does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from live_helpers import shop_playbook
from serve_helpers import Served

from sopkit._serve.openapi_doc import text

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "docs" / "openapi.json"
ADMIN = "admin-key-0003"
KEYS = {"SOPKIT_API_KEYS": f"admin:{ADMIN}"}
EXAMPLES = int(os.environ.get("SOPKIT_SCHEMATHESIS_EXAMPLES", "15"))  # per operation
SEED = os.environ.get("SOPKIT_SCHEMATHESIS_SEED", "16")


def test_the_committed_openapi_document_is_the_apps() -> None:
    """docs/openapi.json is what the app says, byte for byte (else: run `make openapi`)."""
    assert COMMITTED.read_text(encoding="utf-8") == text(), \
        "docs/openapi.json differs from the app's schema: run `make openapi` and commit it"


def test_every_operation_is_documented_with_its_problems() -> None:
    """Each operation has a summary and its answers; errors are problem+json."""
    doc = json.loads(COMMITTED.read_text(encoding="utf-8"))
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            assert operation.get("summary"), where
            assert "422" not in operation["responses"], where  # the app answers 400
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")):
                    assert list(response["content"]) == ["application/problem+json"], where
            if method == "post" and not path.endswith("/retry"):  # ingest: 202 for a body
                assert "202" in operation["responses"] and "requestBody" in operation, where


@pytest.mark.timeout(240)
def test_schemathesis_finds_no_server_error_and_every_answer_is_documented(
        tmp_path: Path) -> None:
    """schemathesis, over every operation of docs/openapi.json against a real server with
    an admin key: no 5xx, and each status, content type and body is the documented one."""
    playbook = shop_playbook(tmp_path, "http://127.0.0.1:9/hook")
    with Served(playbook, tmp_path / "live.db", env=KEYS) as server:
        run = subprocess.run(
            [str(Path(sys.executable).with_name("st")), "run", str(COMMITTED),
             "--url", server.url, "--header", f"Authorization: Bearer {ADMIN}",
             "--checks", "not_a_server_error,status_code_conformance,"
             "content_type_conformance,response_schema_conformance",
             "--max-examples", str(EXAMPLES), "--seed", SEED, "--workers", "1",
             "--request-timeout", "20", "--no-shrink", "--suppress-health-check", "all",
             "--phases", "examples,coverage,fuzzing"],
            capture_output=True, text=True, cwd=tmp_path, timeout=200,
            env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_HOOKS": ""})
        assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
        assert server.proc.poll() is None  # still serving
        code, err = server.stop()
    assert code == 0, err


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("fuzzfound")
    with Served(shop_playbook(tmp, "http://127.0.0.1:9/hook"), tmp / "live.db",
                env=KEYS) as server:
        yield server


def _send(server: Served, path: str, raw: bytes) -> httpx.Response:
    return httpx.post(server.url + path, content=raw, timeout=30,
                      headers={"Authorization": f"Bearer {ADMIN}",
                               "Content-Type": "application/json"})


def test_an_identify_whose_context_is_no_object_is_a_400_naming_it(served: Served) -> None:
    """Found by schemathesis (was a 500): `context` that is not an object is named."""
    answer = _send(served, "/v1/identify", b'{"userId": "c1", "context": "web"}')
    assert answer.status_code == 400
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["errors"] == [{"pointer": "/context", "detail": "expected an object"}]


def test_a_lone_surrogate_is_a_400_naming_it_and_nothing_is_stored(served: Served) -> None:
    """Found by schemathesis (was a 503 "store unavailable"): a string with an unpaired
    \\uD800-\\uDFFF escape is valid JSON but no text; the request is refused whole."""
    before = httpx.get(served.url + "/readyz").json()["position"]
    answer = _send(served, "/v1/events", b'[{"customer_id": "c1", "type": "purchase", '
                   b'"ts": "2025-01-02T10:00:00", "amount": "1"}, {"customer_id": "c\\ud961", '
                   b'"type": "purchase", "ts": "2025-01-02T10:00:00", "amount": "1"}]')
    assert answer.status_code == 400
    assert answer.json()["errors"] == [{"pointer": "/1/customer_id",
                                        "detail": "unpaired surrogate"}]
    paired = _send(served, "/v1/events", b'{"customer_id": "c\\ud83d\\ude00", "type": '
                   b'"purchase", "ts": "2025-01-02T10:00:00", "amount": "1"}')
    assert paired.status_code == 202  # an escaped emoji (a pair) is text
    assert paired.json()["last_seq"] == before + 1  # nothing of the refused one was stored


@pytest.mark.parametrize("limit", ["\u00b2", "9" * 5000, "0", "1001", "-1", "1.0"])
def test_a_limit_that_is_no_small_ascii_number_is_a_400(served: Served, limit: str) -> None:
    """Found by schemathesis (was a 500): `limit=²` (a digit to Python, no number) or a
    5,000-digit one answers 400 naming the parameter, on both paged reads."""
    for path in ("/v1/outbox", "/v1/quarantine"):
        answer = httpx.get(served.url + path, params={"limit": limit},
                           headers={"Authorization": f"Bearer {ADMIN}"})
        assert answer.status_code == 400, path
        assert answer.json()["errors"][0]["parameter"] == "limit"
