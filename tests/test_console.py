"""The web console of `sopkit serve` (server side): sign-in, CSRF, escaping, languages."""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from http_receiver import Receiver, Reply
from live_helpers import shop_playbook
from serve_helpers import Served
from wecom_fake import WECOM_TABLE, WecomFake

from sopkit._console.chart import by_day
from sopkit._lang.clock import Calendar
from sopkit._live.inbox import Inbox
from sopkit._live.openstore import open_store
from sopkit._live.store import OutboxRow

INGEST, READ, ADMIN = "ingest-key-0001", "read-key-0002", "admin-key-0003"
KEYS = {"SOPKIT_API_KEYS": f"ingest:{INGEST},read:{READ},admin:{ADMIN}"}
XSS = "<script>alert(1)</script>"


@contextlib.contextmanager
def _signed_in(server: Served, key: str, language: str = "en") -> Iterator[httpx.Client]:
    """A client signed in to the console with `key` (its cookie jar holds the session)."""
    with httpx.Client(base_url=server.url, timeout=30,
                      headers={"Accept-Language": language}) as client:
        reply = client.post("/sign-in", data={"key": key, "next": "/"})
        assert reply.status_code == 303, reply.text
        yield client


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, "the page has a form with a CSRF token"
    return found.group(1)


def test_sign_in_sets_a_strict_httponly_cookie_and_posts_need_the_csrf_token(
        tmp_path: Path) -> None:
    """A read key signs in (HttpOnly, SameSite=Strict cookie); a wrong or ingest-only key
    gets 401 (ten in a minute: 429); a POST without the session's CSRF token, from another
    origin, or with a read key where admin is needed, is refused with 403; a simulation
    reads only files of --histories."""
    playbook = shop_playbook(tmp_path, "http://127.0.0.1:9/hook")
    (tmp_path / "histories").mkdir()
    (tmp_path / "histories" / "events.jsonl").write_text("", encoding="utf-8")
    with Served(playbook, tmp_path / "live.db", "--histories", str(tmp_path / "histories"),
                env=KEYS) as server:
        first = httpx.get(server.url + "/customers?id=c1")
        assert first.status_code == 303
        assert first.headers["location"] == "/sign-in?next=%2Fcustomers%3Fid%3Dc1"
        ok = httpx.post(server.url + "/sign-in", data={"key": READ, "next": "/playbook"})
        assert ok.status_code == 303 and ok.headers["location"] == "/playbook"
        cookie = ok.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        assert READ not in cookie
        for key in ("not-a-key-at-all", INGEST):
            wrong = httpx.post(server.url + "/sign-in", data={"key": key})
            assert wrong.status_code == 401 and "set-cookie" not in wrong.headers
            assert "not known" in wrong.text
        with _signed_in(server, READ) as client:
            page = client.get("/")
            assert page.status_code == 200 and "Dead letters" in page.text
            assert "default-src 'none'" in page.headers["content-security-policy"]
        with _signed_in(server, ADMIN) as admin:
            token = _csrf(admin.get("/").text)
            assert admin.get("/v1/outbox").status_code == 401  # the cookie opens no API
            assert admin.post("/outbox/retry", data={}).status_code == 403
            assert admin.post("/outbox/retry", data={"csrf": "forged"}).status_code == 403
            other = admin.post("/outbox/retry", data={"csrf": token},
                               headers={"Origin": "https://evil.example"})
            assert other.status_code == 403
            fine = admin.post("/outbox/retry", data={"csrf": token},
                              headers={"Origin": server.url})
            assert fine.status_code == 303 and "No%20dead%20letters" in \
                fine.headers["location"]
            outside = admin.post("/simulations", data={"csrf": token, "events": "../live.db"})
            assert outside.status_code == 303 and "no%20history%20named" in \
                outside.headers["location"]  # a form names a file of --histories, no path
            assert admin.post("/simulations", data={"events": "events.jsonl"}).status_code == 403
        with _signed_in(server, READ) as reader:
            token = _csrf(reader.get("/").text)  # the sign-out form's
            refused = reader.post("/outbox/retry", data={"csrf": token})
            assert refused.status_code == 403 and "admin" in refused.text
            assert reader.post("/sign-out", data={"csrf": token}).status_code == 303
            assert reader.get("/").status_code == 303  # signed out: to the sign-in page
        for _ in range(8):  # ten wrong keys in a minute (two above): this address must wait
            httpx.post(server.url + "/sign-in", data={"key": "guess-guess-guess"})
        late = httpx.post(server.url + "/sign-in", data={"key": READ})
        assert late.status_code == 429 and "wait a minute" in late.text
        code, err = server.stop()
    assert code == 0, err


def test_customer_data_is_shown_as_text_and_the_language_follows_the_browser(
        tmp_path: Path) -> None:
    """A profile name `<script>alert(1)</script>` is shown escaped on the customer page;
    Accept-Language zh gives the page in Chinese, en (or none) in English."""
    playbook = shop_playbook(tmp_path, "http://127.0.0.1:9/hook")
    events = [{"type": "profile", "customer_id": "c1", "ts": "2025-01-02T09:00:00",
               "name": XSS, "phone": "13812345678"},
              {"customer_id": "c1", "type": "purchase", "ts": "2025-01-02T10:00:00",
               "amount": "20"}]
    with Served(playbook, tmp_path / "live.db", env=KEYS) as server:
        accepted = server.post("/v1/events", events,
                               headers={"Authorization": f"Bearer {INGEST}"})
        server.applied(accepted.json()["last_seq"])
        with _signed_in(server, READ) as client:
            page = client.get("/customers", params={"id": "c1"})
            assert page.status_code == 200
            assert XSS not in page.text
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
            assert "138****5678" in page.text and "13812345678" not in page.text
            asked = client.get("/customers", params={"id": "c1", "unmasked": "1"})
            assert "13812345678" not in asked.text  # in full for an admin key only
            assert "purchases" in page.text and "thanks" in page.text  # a fact, a pending row
            assert client.get("/customers", params={"id": "nobody"}).status_code == 404
        with _signed_in(server, READ, "zh-CN,zh;q=0.9,en;q=0.8") as client:
            page = client.get("/")
            assert '<html lang="zh-CN">' in page.text and "死信" in page.text
            assert page.headers["content-language"] == "zh"
        with _signed_in(server, READ, "en-GB,en;q=0.9,zh;q=0.5") as client:
            page = client.get("/")
            assert '<html lang="en">' in page.text and "Dead letters" in page.text
        code, err = server.stop()
    assert code == 0, err


def test_the_playbook_page_shows_the_version_its_migrations_and_strict_findings(
        tmp_path: Path) -> None:
    """Served with --no-history, the customer page says it has no timeline; after `sopkit
    migrate` to version 2 the playbook page names version 2, the migration from shop:1 with
    its new rule, and check --strict's finding at shop-v2.toml's line (served without API
    keys: the console asks no sign-in)."""
    v1 = shop_playbook(tmp_path, "http://127.0.0.1:9/hook")
    store = tmp_path / "live.db"
    with Served(v1, store, "--no-history", env=KEYS) as server:
        accepted = server.post("/v1/events", [
            {"customer_id": "c1", "type": "purchase", "ts": "2025-01-02T10:00:00",
             "amount": "20"}], headers={"Authorization": f"Bearer {INGEST}"})
        server.applied(accepted.json()["last_seq"])
        with _signed_in(server, READ) as client:  # no kept history: the page says so
            page = client.get("/customers", params={"id": "c1"})
            assert page.status_code == 200 and 'id="no-history"' in page.text
            assert "restart it with --history" in page.text
        code, err = server.stop()
    assert code == 0, err
    v2 = tmp_path / "shop-v2.toml"
    v2.write_text(v1.read_text(encoding="utf-8").replace('version = "1"', 'version = "2"')
                  + '\n[[rules]]\nname = "big_spender"\non = "purchase"\nwhen = "purchases '
                  '>= 5"\nactions = [{ type = "task", note = "VIP" }]\n', encoding="utf-8")
    migrated = subprocess.run([sys.executable, "-m", "sopkit", "migrate", str(v2), "--store",
                               str(store)], capture_output=True, text=True, timeout=120)
    assert migrated.returncode == 0, migrated.stderr
    with Served(v2, store) as server:  # no SOPKIT_API_KEYS (loopback): no sign-in asked
        with httpx.Client(base_url=server.url, timeout=30, follow_redirects=True) as client:
            page = client.get("/playbook")
            assert page.status_code == 200 and "HttpOnly" in \
                page.history[0].headers["set-cookie"]
            version = re.search(r'<dd id="version">([^<]*)</dd>', page.text)
            assert version and version.group(1) == "shop 2"
            history = page.text.split('id="migrations"')[1].split("</table>")[0]
            assert "shop:1" in history and "shop:2" in history and "big_spender" in history
            assert re.search(r"shop-v2\.toml:\d+", page.text)  # the uncapped channel warning
        code, err = server.stop()
    assert code == 0, err


WECOM = WECOM_TABLE + '''
[[campaigns]]
name = "newyear"
at = "2025-01-03T12:00"
audience = "purchases >= 1"
actions = [{{ type = "send", channel = "hook", template = "thanks" }}]
'''
PHONE = "13812345678"
SHOP = [{"type": "profile", "customer_id": PHONE, "ts": "2025-01-02T09:00:00", "name": "王芳",
         "phone": PHONE, "owner": "zhang", "external_userid": "wm0001"},
        {"type": "profile", "customer_id": "c2", "ts": "2025-01-02T09:00:00", "name": "李雷",
         "owner": "zhang", "external_userid": "wm0002"},
        {"customer_id": PHONE, "type": "purchase", "ts": "2025-01-02T10:00:00", "amount": "20"},
        {"customer_id": "c2", "type": "purchase", "ts": "2025-01-02T11:00:00", "amount": "5"},
        {"type": "staff_departed", "staff": "zhang", "ts": "2025-01-04T18:00:00"}]


def test_the_console_shows_a_timeline_past_firings_and_wecom_transfer_results(
        tmp_path: Path) -> None:
    """Served events: the customer page shows `explain`'s timeline (the rule that fired; in
    Chinese too); the campaigns page a past firing's counts; the hand-over page the departed
    owner's customers with WeCom's word on each transfer."""
    with Receiver() as rx, WecomFake() as fake:
        fake.add_customer("wm0001", "zhang")
        fake.add_customer("wm0002", "zhang")
        fake.add_staff("li", "wang")
        fake.resign("zhang")
        playbook = shop_playbook(tmp_path, rx.url + "/hook", WECOM.format(url=fake.url))
        playbook.write_text(playbook.read_text(encoding="utf-8").replace(
            'team = ["li", "wang"]', 'team = ["li", "wang"]\nchannel = "wecom"'),
            encoding="utf-8")
        with Served(playbook, tmp_path / "live.db", "--lateness", "30d",
                    clock="2025-01-05T00:00:00",
                    env={**KEYS, "SOPKIT_TEST_WECOM_SECRET": "fake-corpsecret-0123"}) as server:
            accepted = server.post("/v1/events", SHOP,
                                   headers={"Authorization": f"Bearer {INGEST}"})
            server.applied(accepted.json()["last_seq"])
            for _ in range(300):  # polling the real server until both transfers went out
                if sum(len(b["external_userid"]) for b in fake.bodies(
                        "externalcontact/resigned/transfer_customer")) == 2:
                    break
                time.sleep(0.05)
            fake.set_transfer_status("wm0001", 1)
            with _signed_in(server, READ) as client:
                page = client.get("/customers", params={"id": PHONE})
                timeline = page.text.split('id="timeline"')[1].split("</section>")[0]
                assert "thanks" in timeline and "purchase" in timeline
                assert "138****5678" in timeline and PHONE not in timeline
                campaigns = client.get("/campaigns").text
                past = campaigns.split('id="results"')[1].split("</table>")[0]
                assert "newyear" in past and "2025-01-03 12:00" in past
                assert "delivered 2" in past and "100%" in past
                handover = client.get("/handover").text
                transfers = handover.split('class="transfers"')[1].split("</table>")[0]
                assert "138****5678" in transfers and "c2" in transfers
                assert "1 接替完毕" in transfers and "2 等待接替" in transfers
                assert "2 customers handed over, 1 taken over, 1 not yet" in handover
            with _signed_in(server, READ, "zh-CN") as client:
                page = client.get("/customers", params={"id": PHONE}).text
                assert "时间线" in page and "动作" in page and "thanks" in page
            code, err = server.stop()
    assert code == 0, err


SECOND_PURCHASE = '''
[[rules]]
name = "regular"
on = "purchase"
when = "purchases == 2"
actions = [{ type = "task", note = "a regular" }]
'''


def _by_day(page: str) -> list[list[str]]:
    """The cells of the overview's per-day table, row by row, as a reader sees them."""
    table = page.split('id="by-day"')[1].split("</table>")[0]
    return [[re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(
        r"<t[dh][^>]*>(.*?)</t[dh]>", row)] for row in re.findall(r"<tr[^>]*>(.*?)</tr>",
                                                                 table, re.S)]


def test_the_overview_charts_the_last_30_days_rows_by_the_playbook_day_they_are_due(
        tmp_path: Path) -> None:
    """Purchases over three days (one at 08:30, before the shop's 09:00 day start, counts on
    the day before): the overview draws one SVG chart a channel, and its table says per
    playbook day and channel how many rows were delivered and dead (in Chinese too)."""
    profiles = [{"type": "profile", "customer_id": c, "ts": "2025-01-02T09:00:00",
                 "name": c.upper()} for c in ("c1", "c2", "c3")]
    first = {"customer_id": "c1", "type": "purchase", "ts": "2025-01-02T10:00:00",
             "amount": "20"}
    later = [{"customer_id": cid, "type": "purchase", "ts": ts, "amount": "20"}
             for cid, ts in (("c2", "2025-01-02T11:00:00"), ("c1", "2025-01-03T08:30:00"),
                             ("c3", "2025-01-03T12:00:00"), ("c2", "2025-01-04T10:00:00"),
                             ("c3", "2025-01-04T20:00:00"))]
    ingest = {"Authorization": f"Bearer {INGEST}"}
    with Receiver() as rx:
        rx.script(Reply(400, body={"error": "bad"}), path="/hook")  # c1's first thanks: dead
        playbook = shop_playbook(tmp_path, rx.url + "/hook", SECOND_PURCHASE)
        with Served(playbook, tmp_path / "live.db", "--lateness", "30d",
                    clock="2025-01-05T12:00:00", env=KEYS) as server:
            with _signed_in(server, READ) as client:
                assert 'id="no-by-day"' in client.get("/").text
                accepted = server.post("/v1/events", [*profiles, first], headers=ingest)
                server.applied(accepted.json()["last_seq"])
                assert rx.wait_for(1), "the first thank-you was tried"
                accepted = server.post("/v1/events", later, headers=ingest)
                server.applied(accepted.json()["last_seq"])
                assert rx.wait_for(6), "every thank-you was tried"
                expected = [
                    ["day", "channel", "delivered", "dead", "total"],
                    ["2025-01-02", "(task list)", "1", "0", "1"],
                    ["2025-01-02", "hook", "2", "1", "3"],
                    ["2025-01-03", "hook", "1", "0", "1"],
                    ["2025-01-04", "(task list)", "2", "0", "2"],
                    ["2025-01-04", "hook", "2", "0", "2"],
                    ["total", "", "8", "1", "9"]]
                for _ in range(200):  # polling the real server until the marks are committed
                    page = client.get("/parts/overview").text
                    if _by_day(page) == expected:
                        break
                    time.sleep(0.05)
                assert _by_day(page) == expected
                section = page.split('id="by-day-section"')[1].split("</section>")[0]
                assert section.count("<svg") == 2 and "style=" not in section
                assert section.count('<rect class="s-delivered"') == 5  # a day and channel each
                assert section.count('<rect class="s-dead"') == 1
                assert "<title>2025-01-02 hook: dead 1</title>" in section
                assert "2024-12-07 to 2025-01-05" in section  # the last 30 playbook days
            with _signed_in(server, READ, "zh-CN") as client:
                page = client.get("/").text
                assert "近 30 天每日到期的动作" in page and "每日数字" in page
                assert _by_day(page)[1] == ["2025-01-02", "（任务清单）", "1", "0", "1"]
            code, err = server.stop()
    assert code == 0, err


def test_rows_per_day_count_each_playbook_day_of_a_dst_change(store_url: str) -> None:
    """On SQLite and PostgreSQL alike, outbox rows fall on the playbook day (Berlin, days
    from 06:00) their due time is in, the 23-hour day of the spring change too; rows outside
    the window are not counted."""
    cal = Calendar("Europe/Berlin", 6 * 60)
    first = dt.date(2025, 3, 29).toordinal()
    starts = [cal.day_start(d) for d in range(first, first + 4)]  # three days
    assert starts[1] - starts[0] == 23 * 3600  # the clocks go forward on 03-30 at 02:00
    due = {"early": starts[0] - 1, "a": starts[0], "b": starts[1] - 1, "c": starts[1],
           "d": starts[2] - 1, "e": starts[2] + 1, "late": starts[3]}
    statuses = {"b": "dead", "d": "suppressed"}
    store = open_store(store_url)
    try:
        store.commit({}, {}, [OutboxRow(
            key=key, playbook="p", customer_id="c1", rule="r", kind="task" if key == "e"
            else "send", channel="" if key == "e" else "sms",
            status=statuses.get(key, "pending"), due_at=when, created_at=when)
            for key, when in due.items()])
    finally:
        store.close()
    inbox = Inbox(store_url)
    try:
        found = inbox.outbox_by_day(starts)
    finally:
        inbox.close()
    assert found == [(0, "sms", "dead", 1), (0, "sms", "pending", 1),
                     (1, "sms", "pending", 1), (1, "sms", "suppressed", 1), (2, "", "pending", 1)]
    chart = by_day([dt.date.fromordinal(first + i) for i in range(3)], found)
    assert [(r["day"], r["channel"], r["counts"], r["total"]) for r in chart["rows"]] == [
        ("2025-03-29", "sms", [1, 1, 0], 2), ("2025-03-30", "sms", [1, 0, 1], 2),
        ("2025-03-31", "", [1, 0, 0], 1)]
    assert chart["statuses"] == ["pending", "dead", "suppressed"] and chart["total"] == 5
