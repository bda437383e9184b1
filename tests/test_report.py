"""`sopkit simulate --report`: a self-contained HTML page with inline SVG charts, drawn for real
by headless Chromium."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import sopkit
from sopkit._cli.app import app
from sopkit._offline.report import ReportData, render_report
from sopkit._offline.simulate import simulate

ROOT = Path(__file__).resolve().parent.parent
MEMBERSHIP = [str(ROOT / "playbooks/membership.toml"),
              "--events", str(ROOT / "examples/membership/events.jsonl"),
              "--profiles", str(ROOT / "examples/membership/profiles.csv")]
CHROMIUM = Path("/usr/bin/chromium")
CDNOW_CUSTOMERS = 300  # the first 300 CDNOW customers: about 1,000 purchases over 18 months


@pytest.fixture(autouse=True)
def _at_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


def _run(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


class _Tables(HTMLParser):
    """Every <table> of a page: caption -> rows of cell texts (header row first)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._name = ""
        self._caption: list[str] | None = None
        self._rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._rows = []
        elif tag == "caption":
            self._caption = []
        elif tag == "tr":
            self._rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "caption" and self._caption is not None:
            self._name = "".join(self._caption)
            self._caption = None
        elif tag in ("td", "th") and self._cell is not None:
            self._rows[-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self.tables[self._name] = self._rows

    def handle_data(self, data: str) -> None:
        if self._caption is not None:
            self._caption.append(data)
        elif self._cell is not None:
            self._cell.append(data)


def _tables(page: str) -> dict[str, list[list[str]]]:
    parser = _Tables()
    parser.feed(page)
    return parser.tables


def _as_dicts(rows: list[list[str]]) -> list[dict[str, str]]:
    return [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]


def _int(text: str) -> int:
    return int(text.replace(",", ""))


def _section(page: str, sid: str) -> str:
    match = re.search(rf'<section id="{sid}".*?</section>', page, re.S)
    assert match, f"no section {sid}"
    return match.group(0)


@pytest.fixture(scope="module")
def cdnow(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The first CDNOW customers' purchases and profiles, as small JSONL files."""
    folder = tmp_path_factory.mktemp("cdnow")
    paths = []
    for name in ("events", "profiles"):
        with gzip.open(ROOT / "data" / "cdnow" / f"{name}.jsonl.gz", "rt",
                       encoding="utf-8") as source:
            lines = [line for line in source
                     if int(json.loads(line)["customer_id"].split("-")[1]) <= CDNOW_CUSTOMERS]
        path = folder / f"{name}.jsonl"
        path.write_text("".join(lines), encoding="utf-8")
        paths.append(path)
    return paths[0], paths[1]


@pytest.fixture(scope="module")
def cdnow_run(cdnow: tuple[Path, Path],
              tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict, Path, Path]:
    """The retail playbook over the CDNOW slice: (page, summary, report path, actions path)."""
    folder = tmp_path_factory.mktemp("cdnow-run")
    report, actions = folder / "report.html", folder / "actions.jsonl"
    text = CliRunner().invoke(app, [
        "simulate", str(ROOT / "playbooks/retail.toml"), "--events", str(cdnow[0]),
        "--profiles", str(cdnow[1]), "--end", "1998-12-31", "--out", str(actions), "--report",
        str(report),
        "--output", "jsonl", "--no-progress"]).output
    summary = json.loads(text.splitlines()[-1])
    return report.read_text(encoding="utf-8"), summary, report, actions


@pytest.fixture(scope="module")
def membership_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    """The membership example until 2025-04-30, with a report: (page, summary)."""
    folder = tmp_path_factory.mktemp("membership")
    report = folder / "report.html"
    text = CliRunner().invoke(app, ["simulate", *MEMBERSHIP, "--end", "2025-04-30",
                                    "--report", str(report), "--output", "jsonl",
                                    "--quarantine", str(folder / "q.jsonl"),
                                    "--no-progress"]).output
    return report.read_text(encoding="utf-8"), json.loads(text.splitlines()[-1])


def test_report_is_self_contained(membership_run: tuple[str, dict],
                                  cdnow_run: tuple[str, dict, Path, Path]) -> None:
    """The page loads nothing from anywhere: no scripts, links, or http(s) sources."""
    for page in (membership_run[0], cdnow_run[0]):
        assert page.startswith("<!DOCTYPE html>")
        assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:|//|file:)""", page, re.I)
        assert not re.search(r"url\(\s*['\"]?\s*(?:https?:|//)", page, re.I)
        assert "<script" not in page and "<link" not in page and "@import" not in page
        assert "<img" not in page and "<image" not in page  # charts are vector, not bitmaps
        # every in-page reference points at an id of the page
        ids = set(re.findall(r'\bid="([^"]+)"', page))
        refs = set(re.findall(r'(?:href="#|url\(#)([^")]+)', page))
        assert refs and refs <= ids, sorted(refs - ids)[:5]
        assert len(ids) == len(re.findall(r'\bid="', page)), "ids must be unique"


def test_each_chart_is_inline_svg(cdnow_run: tuple[str, dict, Path, Path]) -> None:
    """Actions, stages, tags, rules and staff load each have an inline <svg> in their section."""
    page = cdnow_run[0]
    for sid, chart in (("actions", "c-actions"), ("stages", "c-stages"), ("tags", "c-tags"),
                       ("rules", "c-rules"), ("staff", "c-staff")):
        section = _section(page, sid)
        assert re.search(r'<svg role="img" aria-label="[^"]+"', section), sid
        assert f'id="{chart}-' in section, sid
    assert "RFM" not in page  # retail has no [rfm]: no empty section
    assert 'id="segments"' not in page


def _svg_texts(html_text: str) -> list[str]:
    """The text of every <text> element of the charts in `html_text`."""
    return [re.sub(r"<[^>]+>", "", inner)
            for inner in re.findall(r"<text\b[^>]*>(.*?)</text>", html_text, re.S)]


def test_chinese_labels_stay_text_for_the_browser(
        cdnow_run: tuple[str, dict, Path, Path]) -> None:
    """Tag names are <text> in the chart, with no font of their own: the page's font list,
    Chinese fonts first, tells the browser how to draw them; no glyph outlines are embedded."""
    page, summary = cdnow_run[0], cdnow_run[1]
    held = [tag for tag, n in summary["tags"].items() if n]
    assert held and all(tag in page for tag in summary["tags"])
    chart = _section(page, "tags")
    labels = _svg_texts(chart)
    for tag in held:
        assert tag in labels, tag
    assert "font-family" not in "".join(re.findall(r"<svg\b.*?</svg>", page, re.S))
    rule = re.search(r"figure svg text\{font-family:([^}]*)\}", page)
    assert rule, "no font list for chart text"
    fonts = [f.strip('"') for f in rule.group(1).split(",")]
    assert fonts[0] == "Noto Sans CJK SC" and "Microsoft YaHei" in fonts
    assert "PingFang SC" in fonts and fonts[-1] == "sans-serif"
    assert not re.search(r'id="c-[\w-]*(?:DejaVuSans|NotoSansCJK)', page)  # no glyph outlines


def test_every_number_is_in_a_table(cdnow_run: tuple[str, dict, Path, Path]) -> None:
    """The tables repeat the summary's counts: per rule, tag, stage, channel and staff."""
    page, summary = cdnow_run[0], cdnow_run[1]
    tables = _tables(page)
    rules = {row["rule"]: row for row in _as_dicts(tables["Action records per rule and status"])}
    for rule, counts in summary["by_rule"].items():
        for status in ("planned", "suppressed", "cancelled"):
            assert _int(rules[rule][status]) == counts.get(status, 0), (rule, status)
    tags = {row["tag"]: _int(row["customers"])
            for row in _as_dicts(tables["Customers per tag at the end"])}
    assert tags == summary["tags"]
    stages = _as_dicts(tables["Customers per stage at the end of each week"])
    final = {k: _int(v) for k, v in stages[-1].items() if k != "week from" and _int(v)}
    assert final == summary["stages"]
    channels = _as_dicts(tables["Planned actions per week and channel"])
    total = channels[-1]
    assert total["week from"] == "total"
    for channel, n in summary["by_channel"].items():
        assert _int(total[channel]) == n
    assert _int(total["task"]) == summary["by_type"]["task"]
    staff = _as_dicts(tables["Tasks per staff member"])
    assert sum(_int(row["tasks"]) for row in staff) == summary["by_type"]["task"]
    header = page.split("</header>")[0]
    for count in (summary["customers"], summary["events_applied"]):
        assert f"{count:,}" in header


def test_reasons_are_grouped(cdnow_run: tuple[str, dict, Path, Path]) -> None:
    """Suppression reasons that differ only in their time share one row, counts intact."""
    page, _, _, actions = cdnow_run
    records = [json.loads(line) for line in actions.read_text(encoding="utf-8").splitlines()]
    by_status = Counter(r["status"] for r in records)
    rows = _as_dicts(_tables(page)["Action records by status and reason"])
    table_status: Counter[str] = Counter()
    for row in rows:
        table_status[row["status"]] += _int(row["records"])
        assert not re.search(r"\d{4}-\d{2}-\d{2}", row["reason"]), row
    assert table_status == by_status
    cooldowns = [r for r in records if r.get("reason", "").startswith("cooldown until")]
    assert len({r["reason"] for r in cooldowns}) > 1  # the slice has several different times
    cooldown_rows = [row for row in rows if row["reason"].startswith("cooldown until")]
    assert [_int(row["records"]) for row in cooldown_rows] == [len(cooldowns)]


def test_report_leaves_actions_unchanged(cdnow: tuple[Path, Path],
                                         cdnow_run: tuple[str, dict, Path, Path],
                                         tmp_path: Path) -> None:
    """Sampling stages every day does not change a single action record."""
    plain = tmp_path / "plain.jsonl"
    _run("simulate", "playbooks/retail.toml", "--events", str(cdnow[0]), "--profiles",
         str(cdnow[1]), "--end", "1998-12-31", "--out", str(plain), "--no-progress")
    assert plain.read_bytes() == cdnow_run[3].read_bytes()


def test_same_inputs_give_identical_bytes(tmp_path: Path) -> None:
    """Two separate processes write byte-identical reports for the same inputs."""
    pages = []
    for n in (1, 2):
        report = tmp_path / f"r{n}.html"
        subprocess.run(
            [sys.executable, "-m", "sopkit", "simulate", *MEMBERSHIP, "--end", "2025-04-30",
             "--report", str(report), "--quarantine", str(tmp_path / "q.jsonl"),
             "--no-progress"], check=True, capture_output=True, cwd=ROOT, timeout=300,
            env={**os.environ, "PYTHONHASHSEED": str(n)})
        pages.append(report.read_bytes())
    assert pages[0] == pages[1]
    assert b"<svg" in pages[0]


def test_contacts_are_masked(tmp_path: Path) -> None:
    """Staff ids that are e-mail addresses or phone numbers appear masked, never in full."""
    profiles = tmp_path / "profiles.csv"
    text = (ROOT / "examples/membership/profiles.csv").read_text(encoding="utf-8")
    profiles.write_text(text.replace("coach-01", "li.lei@example.com")
                        .replace("coach-03", "13812345678"), encoding="utf-8")
    report = tmp_path / "report.html"
    _run("simulate", "playbooks/membership.toml", "--events",
         "examples/membership/events.jsonl", "--profiles", str(profiles), "--end",
         "2025-04-30", "--report", str(report), "--quarantine", str(tmp_path / "q.jsonl"),
         "--no-progress")
    page = report.read_text(encoding="utf-8")
    staff = {row["staff"] for row in _as_dicts(_tables(page)["Tasks per staff member"])}
    assert staff == {"l***@example.com", "138****5678"}
    assert "li.lei@" not in page and "13812345678" not in page


def test_buckets_follow_the_period(membership_run: tuple[str, dict], tmp_path: Path) -> None:
    """A month is charted by day, three months by week; sections without data are left out."""
    report = tmp_path / "short.html"
    _run("simulate", *MEMBERSHIP, "--end", "2025-02-20", "--report", str(report),
         "--quarantine", str(tmp_path / "q.jsonl"), "--no-progress")
    short = report.read_text(encoding="utf-8")
    assert "Actions per day and channel" in short
    assert "Customers per stage at the end of each day" in short
    assert 'id="staff"' not in short  # no task before 20 February: no staff chart
    page = membership_run[0]
    assert "Actions per week and channel" in page
    assert 'id="staff"' in page


def test_long_runs_are_charted_by_month(tmp_path: Path) -> None:
    """Past two years the time charts and their tables go by month."""
    events = tmp_path / "events.jsonl"
    events.write_text("".join(
        json.dumps({"customer_id": "m001", "type": "login", "ts": f"{year}-0{month}-01T12:00"})
        + "\n" for year in (2025, 2026, 2027) for month in (2, 5, 8)), encoding="utf-8")
    report = tmp_path / "long.html"
    _run("simulate", "playbooks/membership.toml", "--events", str(events), "--profiles",
         "examples/membership/profiles.csv", "--report", str(report), "--no-progress",
         "--quarantine", str(tmp_path / "q.jsonl"))
    tables = _tables(report.read_text(encoding="utf-8"))
    months = [row[0] for row in tables["Customers per stage at the end of each month"][1:]]
    assert months[0] == "2025-02" and months[-1] == "2027-08" and len(months) == 31


def test_stage_samples_count_every_customer(tmp_path: Path) -> None:
    """Each day's stage counts add up to the customers known then; the last is the end."""
    loaded = sopkit.load_playbook(ROOT / "playbooks/membership.toml")
    data = ReportData()
    summary = simulate(loaded, ROOT / "examples/membership/events.jsonl",
                       profiles=ROOT / "examples/membership/profiles.csv", end="2025-04-30",
                       quarantine=tmp_path / "q.jsonl", report=data)
    days = sorted(data.stage_days)
    assert days[0] == "2025-02-01" and days[-1] == "2025-04-29"
    assert len(days) == 88  # every playbook day from 1 February to 29 April
    assert all(sum(data.stage_days[d].values()) == summary.customers for d in days)
    assert data.stage_days[days[-1]] == summary.stages


def test_stage_counts_follow_set_stage_actions(tmp_path: Path) -> None:
    """Runtime.stage_counts stays exact when rules move customers with set_stage."""
    path = tmp_path / "p.toml"
    path.write_text(
        '[playbook]\nname = "p"\n[events.complaint]\n'
        '[metrics.complaints]\nkind = "count"\nevent = "complaint"\n'
        '[[stages]]\nname = "冷静期"\nwhen = "complaints > 2"\n'
        '[[stages]]\nname = "new"\n[[stages]]\nname = "watched"\nwhen = "complaints > 9"\n'
        '[[rules]]\nname = "escalate"\nwhen = "complaints == 2"\n'
        'actions = [{ type = "set_stage", stage = "watched" }]\n', encoding="utf-8")
    runtime = sopkit.Runtime(sopkit.load_playbook(path))
    moves = ["a", "b", "a", "c", "a", "b", "a", "b", "b"]
    for n, who in enumerate(moves):
        runtime.ingest({"customer_id": who, "type": "complaint",
                        "ts": f"2025-01-01T10:{n:02d}:00"})
        actual = Counter(runtime.state(c).stage for c in runtime.customer_ids())
        assert +runtime.stage_counts == actual, (n, who)
    assert +runtime.stage_counts == {"冷静期": 2, "new": 1}


def test_missing_chinese_font_degrades_with_a_warning(tmp_path: Path) -> None:
    """Without a Chinese font to measure with, the report is still written with Chinese chart
    labels as text, and its maker is warned that their layout may be tight."""
    loaded = sopkit.load_playbook(ROOT / "playbooks/membership.toml")
    data = ReportData()
    summary = simulate(loaded, ROOT / "examples/membership/events.jsonl",
                       profiles=ROOT / "examples/membership/profiles.csv", end="2025-03-10",
                       quarantine=tmp_path / "q.jsonl", report=data)
    page, notes = render_report(summary, data, fonts=("No Such Font 字体",))
    assert len(notes) == 1 and "fonts-noto-cjk" in notes[0]
    assert notes[0] not in page  # for whoever made the page, not for its readers
    assert page.count("<svg") == 5
    assert "lapsed 已过期" in _svg_texts(page)  # still text, which the browser draws


def test_segments_section_appears_only_with_data(tmp_path: Path) -> None:
    """The RFM hook: segment sizes, when something provides them, get a chart and table."""
    loaded = sopkit.load_playbook(ROOT / "playbooks/membership.toml")
    data = ReportData()
    summary = simulate(loaded, ROOT / "examples/membership/events.jsonl",
                       profiles=ROOT / "examples/membership/profiles.csv", end="2025-03-10",
                       quarantine=tmp_path / "q.jsonl", report=data)
    assert 'id="segments"' not in render_report(summary, data)[0]
    data.segments = {"重要价值客户": 3, "一般挽留客户": 2}
    section = _section(render_report(summary, data)[0], "segments")
    assert "<svg" in section and "重要价值客户" in section


def test_an_rfm_playbook_reports_its_segment_sizes(tmp_path: Path) -> None:
    """With [rfm] (playbooks/vip.toml), the segments section shows the summary's counts."""
    import gzip
    import json

    events = tmp_path / "events.jsonl"
    with gzip.open(ROOT / "data/cdnow/events.jsonl.gz", "rt", encoding="utf-8") as src:
        events.write_text("".join(line for _, line in zip(range(3000), src, strict=False)),
                          encoding="utf-8")
    data = ReportData()
    summary = simulate(sopkit.load_playbook(ROOT / "playbooks/vip.toml"), events,
                       end="1997-06-30", quarantine=tmp_path / "q.jsonl", report=data,
                       engine="native")
    assert summary.rfm_segments and data.segments == summary.rfm_segments
    section = _section(render_report(summary, data)[0], "segments")
    assert "<svg" in section
    for name, count in summary.rfm_segments.items():
        if count:
            assert name in section and f"{count:,}" in section
    json.dumps(summary.to_json(), ensure_ascii=False)  # the summary stays JSON


def test_report_folder_must_exist(tmp_path: Path) -> None:
    """--report into a missing folder is a usage error before the run, naming the folder."""
    result = CliRunner().invoke(app, ["simulate", *MEMBERSHIP, "--report",
                                      str(tmp_path / "nope" / "r.html")])
    assert result.exit_code == 2
    assert "does not exist" in result.output and "nope" in result.output


def _screenshot(page: Path, png: Path, size: tuple[int, int]) -> Any:
    """Headless Chromium's picture of `page`, offline, as an RGB array of ints."""
    import numpy as np
    from PIL import Image

    subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={png.parent / 'profile'}", f"--screenshot={png}",
         f"--window-size={size[0]},{size[1]}", page.as_uri()],
        check=True, capture_output=True, timeout=300, cwd=png.parent)
    with Image.open(png) as image:
        assert image.size == size
        return np.asarray(image.convert("RGB")).astype(int)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium and a Chinese font "
                    "(.ci/run installs them: apt-get install chromium fonts-noto-cjk)")
def test_chromium_draws_chinese_chart_labels(cdnow_run: tuple[str, dict, Path, Path],
                                             tmp_path: Path) -> None:
    """The tags chart's Chinese labels come out as real glyphs, not boxes: the same labels
    with their characters reversed look different (boxes would look the same)."""
    page, summary = cdnow_run[0], cdnow_run[1]
    style = re.search(r"<style>.*?</style>", page, re.S)
    chart_match = re.search(r"<svg\b.*?</svg>", _section(page, "tags"), re.S)
    assert style and chart_match
    chart = chart_match.group(0)
    held = sorted((tag for tag, n in summary["tags"].items() if n), key=len, reverse=True)
    assert held and all(f">{tag}</text>" in chart for tag in held)
    reversed_chart = chart
    for tag in held:
        reversed_chart = reversed_chart.replace(f">{tag}</text>", f">{tag[::-1]}</text>")
    pictures = []
    for name, svg in (("labels", chart), ("reversed", reversed_chart)):
        html_page = tmp_path / f"{name}.html"
        html_page.write_text(f'<!DOCTYPE html><html lang="zh-CN"><head><meta charset="utf-8">'
                             f"{style.group(0)}</head><body><main><figure>{svg}</figure></main>"
                             "</body></html>", encoding="utf-8")
        pictures.append(_screenshot(html_page, tmp_path / f"{name}.png", (1000, 600)))
    ink = [int((p.sum(axis=2) < 300).sum()) for p in pictures]
    assert min(ink) > 2_000, ink  # the labels, ticks and axes are drawn
    changed = int((abs(pictures[0] - pictures[1]).sum(axis=2) > 150).sum())
    assert changed > 300, changed  # each label's glyphs moved: real characters, not boxes


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium for a real "
                    "screenshot (.ci/run installs it: apt-get install chromium)")
def test_chromium_draws_the_report(cdnow_run: tuple[str, dict, Path, Path],
                                   tmp_path: Path) -> None:
    """Headless Chromium renders the page offline: text and the charts' colours are there."""
    pixels = _screenshot(cdnow_run[2], tmp_path / "report.png", (1280, 4000))
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    dark = int(((r + g + b) < 200).sum())  # text and axes
    blue = int(((r < 30) & (g > 90) & (g < 140) & (b > 150) & (b < 210)).sum())  # #0072B2
    orange = int(((r > 200) & (g > 130) & (g < 180) & (b < 40)).sum())  # #E69F00
    assert dark > 20_000, dark
    assert blue > 50_000 and orange > 5_000, (blue, orange)


def test_a_history_without_customers_still_gives_a_report(tmp_path: Path) -> None:
    """A history whose every record is unreadable writes a report, with no stage chart."""
    events = tmp_path / "events.jsonl"
    events.write_text("{not json\n", encoding="utf-8")
    page = tmp_path / "r.html"
    result = CliRunner().invoke(app, ["simulate", str(ROOT / "playbooks/membership.toml"),
                                      "--events", str(events), "--end", "2025-04-30",
                                      "--quarantine", str(tmp_path / "q.jsonl"),
                                      "--report", str(page)])
    assert result.exit_code == 1, result.output  # every event record was quarantined
    text = page.read_text(encoding="utf-8")
    assert 'id="stages"' not in text and "quarantined" in text
