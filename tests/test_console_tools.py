"""The web console's tools (server side): customer search by phone, an uploaded playbook
simulated over a stored history."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from live_helpers import DATA, shop_history, shop_playbook
from serve_helpers import Served

INGEST, READ, ADMIN = "ingest-key-0001", "read-key-0002", "admin-key-0003"
KEYS = {"SOPKIT_API_KEYS": f"ingest:{INGEST},read:{READ},admin:{ADMIN}"}


@contextlib.contextmanager
def _signed_in(server: Served, key: str) -> Iterator[tuple[httpx.Client, str]]:
    """A client signed in with `key`, and its session's CSRF token."""
    with httpx.Client(base_url=server.url, timeout=30,
                      headers={"Accept-Language": "en"}) as client:
        assert client.post("/sign-in", data={"key": key, "next": "/"}).status_code == 303
        found = re.search(r'name="csrf" value="([^"]+)"', client.get("/customers").text)
        assert found, "the customers page has a form with a CSRF token"
        yield client, found.group(1)


def test_a_read_key_finds_a_customer_by_a_phone_number_typed_in_another_form(
        tmp_path: Path, store_url: str) -> None:
    """On SQLite and PostgreSQL alike, `+86 138 1234 5678` finds the customer stored with
    13812345678 (and not the other); a read key sees the number masked and never in full;
    an admin who ticks unmasked sees it; a customer whose id is the number is listed
    masked, without a link holding it."""
    playbook = shop_playbook(tmp_path, "http://127.0.0.1:9/hook")
    events = [{"type": "profile", "customer_id": "c1", "ts": "2025-01-02T09:00:00",
               "name": "王芳", "phone": "13812345678"},
              {"type": "profile", "customer_id": "c2", "ts": "2025-01-02T09:10:00",
               "name": "李雷", "phone": "139-0000-1111"},
              {"type": "profile", "customer_id": "13700002222", "ts": "2025-01-02T09:20:00",
               "name": "韩梅梅", "phone": "13700002222"}]
    with Served(playbook, store_url, env=KEYS,
                quarantine=tmp_path / "quarantine.jsonl") as server:
        accepted = server.post("/v1/events", events,
                               headers={"Authorization": f"Bearer {INGEST}"})
        server.applied(accepted.json()["last_seq"])
        with _signed_in(server, READ) as (reader, token):
            assert 'action="/customers/search"' in reader.get("/customers").text
            page = reader.post("/customers/search", data={
                "csrf": token, "phone": "+86 138 1234 5678", "unmasked": "1"})
            assert page.status_code == 200, page.text
            assert 'href="/customers?id=c1"' in page.text and "id=c2" not in page.text
            assert "138****5678" in page.text
            assert "13812345678" not in page.text and "1234 5678" not in page.text
            other = reader.post("/customers/search", data={"csrf": token,
                                                           "phone": "13900001111"})
            assert 'href="/customers?id=c2"' in other.text and "139-****-1111" in other.text
            assert "id=c1" not in other.text
            itself = reader.post("/customers/search", data={"csrf": token,
                                                            "phone": "137 0000 2222"})
            assert "137****2222" in itself.text and "13700002222" not in itself.text
            assert "its id is a phone number" in itself.text
            none = reader.post("/customers/search", data={"csrf": token,
                                                          "phone": "138 0000 0000"})
            assert none.status_code == 200 and "No stored customer" in none.text
            bad = reader.post("/customers/search", data={"csrf": token, "phone": "5678"})
            assert bad.status_code == 400 and "Not a whole phone number" in bad.text
            assert reader.post("/customers/search",
                               data={"phone": "13812345678"}).status_code == 403
        with _signed_in(server, ADMIN) as (admin, token):
            shown = admin.post("/customers/search", data={
                "csrf": token, "phone": "0086-138-1234-5678", "unmasked": "1"})
            assert "13812345678" in shown.text and 'href="/customers?id=c1"' in shown.text
        code, err = server.stop()
    assert code == 0, err
    assert "13812345678" not in err and "1234 5678" not in err


def _wait_done(client: httpx.Client, job: int) -> dict[str, object]:
    """The job's JSON once it is no longer running (polls the real server, bounded)."""
    for _ in range(600):
        jobs = {j["id"]: j for j in client.get("/simulations/progress").json()["jobs"]}
        if jobs[job]["state"] != "running":
            return dict(jobs[job])
        time.sleep(0.05)
    raise AssertionError(f"simulation {job} did not finish")


def test_an_admin_simulates_an_uploaded_playbook_and_bad_ones_start_nothing(
        tmp_path: Path) -> None:
    """A pasted playbook runs over a stored history and its report opens; one with a wrong
    type shows `sopkit check`'s line and key and starts nothing, as does one that includes
    a file; a read key is refused (403); a playbook over 256 KB is refused and says so."""
    playbook = shop_playbook(tmp_path, "http://127.0.0.1:9/hook")
    histories = tmp_path / "histories"
    histories.mkdir()
    shop_history(histories, customers=12)
    text = (DATA / "shop.toml").read_text(encoding="utf-8").replace(
        "RECEIVER_URL", "http://127.0.0.1:9/hook").replace('name = "shop"',
                                                            'name = "shop-trial"')
    files = {"events": "events.jsonl", "profiles": "profiles.jsonl"}
    with Served(playbook, tmp_path / "live.db", "--histories", str(histories),
                env=KEYS) as server:
        with _signed_in(server, READ) as (reader, token):
            assert 'id="upload"' not in reader.get("/simulations").text
            refused = reader.post("/simulations/upload",
                                  data={"csrf": token, "playbook": text, **files})
            assert refused.status_code == 403 and "admin" in refused.text
        with _signed_in(server, ADMIN) as (admin, token):
            assert 'id="upload"' in admin.get("/simulations").text
            wrong = text.replace('amount = "decimal"', 'amount = "decimall"')
            line = wrong.splitlines().index('amount = "decimall"') + 1
            invalid = admin.post("/simulations/upload",
                                 data={"csrf": token, "playbook": wrong, **files})
            assert invalid.status_code == 400
            assert f"uploaded.toml:{line}:" in invalid.text
            assert "events.purchase.amount" in invalid.text and "nothing was run" in invalid.text
            included = admin.post("/simulations/upload", data={
                "csrf": token, **files,
                "playbook": text.replace("[playbook]\n", '[playbook]\ninclude = ["../x.toml"]\n')})
            assert included.status_code == 400 and "cannot include" in included.text
            huge = admin.post("/simulations/upload", data={
                "csrf": token, **files, "playbook": text + "#" * (256 * 1024)})
            assert huge.status_code == 413 and "over 256 KB" in huge.text
            assert admin.get("/simulations/progress").json()["jobs"] == []
            started = admin.post("/simulations/upload",
                                 data={"csrf": token, "playbook": text, **files})
            assert started.status_code == 303, started.text
            job = _wait_done(admin, 1)
            assert job["state"] == "done" and job["customers"] == 12, job
            assert job["playbook"] == "shop-trial"
            assert "(shop-trial)" in admin.get("/simulations").text
            report = admin.get("/simulations/1/report")
            assert report.status_code == 200 and "shop-trial" in report.text
        code, err = server.stop()
    assert code == 0, err
