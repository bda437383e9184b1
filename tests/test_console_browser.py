"""The web console in a real headless Chromium (Playwright): what an operator clicks through.

Skips without /usr/bin/chromium unless SOPKIT_REQUIRE_BROWSER=1 (CI sets it). Screenshots go
to the test's tmp folder, and to docs/console/ with SOPKIT_CONSOLE_SHOTS=1 (the docs' PNGs).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from http_receiver import Receiver, Reply
from live_helpers import shop_history, shop_playbook
from serve_helpers import Served

CHROMIUM = Path("/usr/bin/chromium")
ADMIN = "admin-key-0003"
KEYS = {"SOPKIT_API_KEYS": f"ingest:ingest-key-0001,admin:{ADMIN}"}
CLOCK = "2025-01-02T12:00:00"  # after the purchases (a day late at most), before the campaign
DOCS = Path(__file__).parent.parent / "docs" / "console"
CAMPAIGN = '''
[experiments.spring]
holdout = 0.1
variants = ["a", "b"]

[templates.spring_a]
text = "{{ profile.name }}，春季会员日：满 100 减 20"

[templates.spring_b]
text = "{{ profile.name }}，春季会员日：满 100 减 30"

[[campaigns]]
name = "spring"
at = "2025-01-20T10:00:00"
audience = "purchases >= 1"
experiment = "spring"
actions = [{ type = "send", channel = "hook", template = "spring_a", ''' \
    '''variants = { b = { template = "spring_b" } } }]
'''

if not CHROMIUM.exists() or not shutil.which(str(CHROMIUM)):
    if os.environ.get("SOPKIT_REQUIRE_BROWSER") == "1":
        raise RuntimeError("SOPKIT_REQUIRE_BROWSER=1 but /usr/bin/chromium is missing")
    pytest.skip("no /usr/bin/chromium", allow_module_level=True)

if os.environ.get("SOPKIT_REQUIRE_BROWSER") == "1":
    import playwright.sync_api as sync_api  # required: a missing package fails, not skips
else:
    sync_api = pytest.importorskip("playwright.sync_api")


def test_an_operator_signs_in_reads_a_customer_retries_previews_and_simulates(
        tmp_path: Path) -> None:
    """Signed in with an admin key: the overview's per-day chart and its numbers (still open
    after the page refreshes), a customer found and their timeline read, another found by
    phone, a dead letter retried and delivered by the webhook, a campaign preview with each
    variant's message, a simulation whose report opens, then one of a playbook file read
    into the upload form; no browser console error on the way."""
    shots = tmp_path / "shots"
    shots.mkdir()
    histories = tmp_path / "histories"
    histories.mkdir()
    shop_history(histories, customers=40)
    events = [{"type": "profile", "customer_id": "c1", "ts": "2025-01-02T09:00:00",
               "name": "王芳", "phone": "13812345678", "owner": "zhang"},
              {"type": "profile", "customer_id": "c2", "ts": "2025-01-02T09:30:00",
               "name": "李雷", "phone": "13900001111"},
              {"customer_id": "c1", "type": "purchase", "ts": "2025-01-02T10:00:00",
               "amount": "20"},
              {"customer_id": "c2", "type": "purchase", "ts": "2025-01-02T11:00:00",
               "amount": "35"},
              {"type": "staff_departed", "staff": "zhang", "ts": "2025-01-02T11:30:00"}]
    with Receiver() as rx:
        rx.script(Reply(400, body={"error": "bad"}), path="/hook")  # c1's thanks: dead
        playbook = shop_playbook(tmp_path, rx.url + "/hook", CAMPAIGN)
        with Served(playbook, tmp_path / "live.db", "--histories", str(histories),
                    "--lateness", "1d", clock=CLOCK, env=KEYS) as server:
            accepted = server.post("/v1/events", events,
                                   headers={"Authorization": "Bearer ingest-key-0001"})
            server.applied(accepted.json()["last_seq"])
            assert rx.wait_for(2), "both thank-yous were tried"
            errors = _browse(server.url, shots, rx)
            code, err = server.stop()
    assert code == 0, err
    assert errors == []
    if os.environ.get("SOPKIT_CONSOLE_SHOTS") == "1":
        DOCS.mkdir(exist_ok=True)
        for shot in shots.iterdir():
            shutil.copy(shot, DOCS / shot.name)


def _browse(url: str, shots: Path, rx: Receiver) -> list[str]:
    """Click through the console; the browser console's errors."""
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        context = browser.new_context(locale="zh-CN", viewport={"width": 1200, "height": 800},
                                      extra_http_headers={"Accept-Language": "zh-CN,zh"})
        outside: list[str] = []  # every asset is the console's own: no request leaves it
        context.on("request", lambda r: None if r.url.startswith((url, "data:"))
                   else outside.append(r.url))

        def watch(opened: Any) -> None:  # every tab's console errors, the report's too
            opened.on("console", lambda m: errors.append(m.text) if m.type == "error"
                      else None)
            opened.on("pageerror", lambda e: errors.append(str(e)))

        context.on("page", watch)
        page = context.new_page()
        expect = sync_api.expect

        page.goto(url + "/")
        expect(page).to_have_url(url + "/sign-in?next=%2F")
        page.fill("input[name=key]", ADMIN)
        page.click("button[type=submit]")
        expect(page.locator("h1")).to_have_text("概览")
        dead = page.locator("#dead tbody tr")
        expect(dead).to_have_count(1)
        page.screenshot(path=shots / "overview.png", full_page=True)
        expect(page.locator("svg.chart")).to_have_count(2)  # the task list's and hook's
        page.click("#by-day-numbers summary")  # the chart's numbers stay open on refresh
        expect(page.locator("#by-day tbody tr").first).to_contain_text("2025-01-02")
        page.evaluate("document.getElementById('by-day-numbers').dataset.before = 'yes'")
        expect(page.locator("#by-day-numbers:not([data-before])")).to_have_count(
            1, timeout=15_000)  # the page's own refresh replaced it
        expect(page.locator("#by-day-numbers")).to_have_attribute("open", "")

        dead.locator("button.retry").click()
        expect(page.locator(".notice")).to_contain_text("已重新排队 1 条死信")
        assert rx.wait_for(3, timeout=10), "the retried row was sent again"
        last = rx.requests[-1]
        assert last.status == 200 and "王芳，感谢第 1 次购买" in last.text
        page.reload()
        expect(page.locator("#no-dead")).to_be_visible()

        page.click("nav >> text=客户")
        page.fill("input[name=id]", "c1")
        page.click("form.card button[type=submit]")
        expect(page.locator("#profile")).to_contain_text("王芳")
        expect(page.locator("#profile")).to_contain_text("138****5678")
        expect(page.locator("#facts")).to_contain_text("purchases")
        timeline = page.locator("#timeline")  # find a customer and read their timeline
        expect(timeline.locator("tr.entry-action").first).to_contain_text("thanks")
        expect(timeline.locator("tr.entry-action").first).to_contain_text("动作")
        expect(timeline.locator("tr.entry-owner").last).to_contain_text("zhang ->")
        page.screenshot(path=shots / "customer.png", full_page=True)
        page.check("input[name=unmasked]")  # an admin may see the phone number in full
        page.click("form.card button[type=submit]")
        expect(page.locator("#profile")).to_contain_text("13812345678")
        page.fill("#phone-search input[name=phone]", "+86 139-0000-1111")  # by phone
        page.uncheck("#phone-search input[name=unmasked]")  # ticked above: masked again
        page.click("#phone-search button[type=submit]")
        expect(page.locator("#phone-results")).to_contain_text("139****1111")
        page.locator("#phone-results a").click()
        expect(page.locator("#profile")).to_contain_text("李雷")

        page.click("nav >> text=群发")
        upcoming = page.locator("#upcoming tbody tr")
        expect(upcoming).to_have_count(1)
        expect(upcoming).to_contain_text("spring")
        page.screenshot(path=shots / "campaigns.png", full_page=True)
        upcoming.locator("a").click()
        expect(page.locator("#audience")).to_have_text("2")
        messages = page.locator("#messages")
        expect(messages).to_contain_text("满 100 减 20")
        expect(messages).to_contain_text("满 100 减 30")
        page.screenshot(path=shots / "preview.png", full_page=True)

        page.click("nav >> text=剧本")
        expect(page.locator("#findings")).to_contain_text("shop.toml:")
        page.screenshot(path=shots / "playbook.png", full_page=True)
        page.click("nav >> text=离职继承")
        expect(page.locator("#handover-summary")).to_contain_text("共 1 位客户交接")
        expect(page.locator("#staff tbody tr")).to_contain_text("zhang")
        page.screenshot(path=shots / "handover.png", full_page=True)

        page.click("nav >> text=模拟")
        page.select_option("#simulate select[name=events]", "events.jsonl")
        page.select_option("#simulate select[name=profiles]", "profiles.jsonl")
        page.click("#simulate button[type=submit]")
        link = page.locator("#jobs a.report").first
        expect(link).to_be_visible(timeout=20_000)
        expect(page.locator("#jobs progress").first).to_have_attribute("value", "100")
        summary = page.locator("#jobs .summary").first
        expect(summary).to_have_text(re.compile(r"^40 客户, [1-9][0-9]* 动作$"))
        page.screenshot(path=shots / "simulations.png", full_page=True)
        with context.expect_page() as opened:
            link.click()
        report = opened.value
        report.wait_for_load_state()
        assert "shop" in report.title()
        report.close()

        page.set_input_files("#upload input[type=file]",  # the shop playbook, read into the text
                             str(shots.parent / "shop.toml"))
        expect(page.locator("#upload-text")).to_have_value(re.compile(r'name = "shop"'))
        page.select_option("#upload select[name=events]", "events.jsonl")
        page.click("#upload button[type=submit]")
        expect(page.locator('#jobs tr[data-job="2"] a.report')).to_be_visible(timeout=20_000)
        browser.close()
    assert outside == []
    return errors
