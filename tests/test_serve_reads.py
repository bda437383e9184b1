"""`sopkit serve`'s read endpoints: a customer, the outbox, the quarantine; PII masked."""

from __future__ import annotations

from pathlib import Path

import httpx
from live_helpers import shop_playbook
from serve_helpers import Served

INGEST, READ, ADMIN = "ingest-key-0001", "read-key-0002", "admin-key-0003"
KEYS = {"SOPKIT_API_KEYS": f"ingest:{INGEST},read:{READ},admin:{ADMIN}"}
PHONE = "13812345678"


def _as(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_a_customer_and_the_outbox_are_read_masked_unless_an_admin_asks(
        tmp_path: Path) -> None:
    """GET /v1/customers/{id} gives facts, profile and pending actions; /v1/outbox filters
    rows; a read key sees phone numbers masked, an admin may ask for them in full."""
    playbook = shop_playbook(tmp_path, "http://127.0.0.1:9/hook")
    events = [{"type": "profile", "customer_id": PHONE, "ts": "2025-01-02T09:00:00",
               "name": "王芳", "phone": PHONE},
              {"customer_id": PHONE, "type": "purchase", "ts": "2025-01-02T10:00:00",
               "amount": "20"},
              {"customer_id": "c2", "type": "purchase", "ts": "2025-01-02T11:00:00",
               "amount": "5"},
              {"customer_id": PHONE, "type": "purchase", "ts": "2025-01-03T10:00:00",
               "amount": "7"}]
    with Served(playbook, tmp_path / "live.db", env=KEYS) as server:
        accepted = server.post("/v1/events", events, headers=_as(INGEST))
        assert accepted.status_code == 202
        unmapped = server.post("/v1/track", {"userId": "c3", "event": "Signed Up"},
                               headers=_as(INGEST))
        server.applied(unmapped.json()["last_seq"])
        get = lambda path, key: httpx.get(server.url + path, headers=_as(key))  # noqa: E731
        masked = get(f"/v1/customers/{PHONE}", READ).json()
        assert masked["customer_id"] == "138****5678"
        assert masked["facts"]["purchases"] == 2
        assert masked["profile"] == {"name": "王芳", "phone": "138****5678"}
        assert [a["rule"] for a in masked["pending_actions"]] == ["thanks", "thanks"]
        assert all("138****5678" in a["key"] for a in masked["pending_actions"])
        assert PHONE not in get(f"/v1/customers/{PHONE}", READ).text
        assert get(f"/v1/customers/{PHONE}?unmasked=true", READ).status_code == 403
        full = get(f"/v1/customers/{PHONE}?unmasked=true", ADMIN).json()
        assert full["profile"]["phone"] == PHONE and full["customer_id"] == PHONE
        assert get(f"/v1/customers/{PHONE}", INGEST).status_code == 403
        assert get("/v1/customers/nobody", READ).status_code == 404
        rows = get("/v1/outbox?customer_id=c2", READ).json()["rows"]
        assert [(r["customer_id"], r["rule"], r["status"]) for r in rows] == \
            [("c2", "thanks", "suppressed")]  # no name to greet
        assert len(get("/v1/outbox?limit=2", READ).json()["rows"]) == 2
        assert get("/v1/outbox?status=sent", READ).status_code == 400
        assert get("/v1/outbox?limit=0", READ).status_code == 400
        jailed = get("/v1/quarantine", READ).json()["records"]
        assert [q["reason"] for q in jailed] == [
            "no [ingest.segment.events] mapping for Segment event 'Signed Up'"]
        code, err = server.stop()
    assert code == 0, err
