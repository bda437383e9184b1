"""report: one self-contained HTML page about a simulation, charts as inline SVG.

`ReportData` collects what the summary does not keep (actions per day and channel, customers
per stage every day, task load per staff member, reasons) while `simulate` runs;
`write_report` turns it and the `Summary` into a page that works offline: no scripts, no
external fonts, styles or images. Chart text stays text (`svg.fonttype = "none"`) and the page
names a list of Chinese fonts for it (`CHART_FONTS`), so the viewer's browser draws Chinese
labels with whichever of them it has, whatever fonts the machine that made the report had.
The same inputs give the same bytes.
"""

from __future__ import annotations

import datetime as dt
import re
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sopkit._mask import mask_text
from sopkit._offline.charts import (
    CHART_FONTS,
    CJK_FONTS,
    NO_CJK_FONT,
    PALETTE,
    STATUS_COLOURS,
    find_cjk_font,
)
from sopkit._offline.charts import Buckets as _Buckets
from sopkit._offline.charts import Charts as _Charts
from sopkit._offline.charts import bucket_end as _bucket_end
from sopkit._offline.charts import date_axis as _date_axis
from sopkit._offline.charts import day_numbers as _days
from sopkit._offline.charts import escape as _e
from sopkit._offline.charts import legend_above as _legend_above
from sopkit._offline.charts import time_buckets as _buckets
from sopkit._offline.charts import whole_numbers as _whole_numbers
from sopkit._version import __version__

if TYPE_CHECKING:
    from sopkit._offline.simulate import Summary
    from sopkit._runtime.runtime import Action, Runtime

TOP_RULES = 15
TOP_STAFF = 12
TOP_TAGS = 30
MAX_TABLE_ROWS = 200
INTERNAL = ("tag", "untag", "set_stage", "reassign")
_TIME = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?")


def reason_group(reason: str) -> str:
    """A reason with its times replaced by `<time>`, so equal reasons group together.

    >>> reason_group("cooldown until 2024-05-01T09:00:00+08:00")
    'cooldown until <time>'
    """
    return _TIME.sub("<time>", reason)


@dataclass
class ReportData:
    """What the report needs beyond the Summary; filled by `simulate(..., report=...)`."""

    description: str = ""
    timezone: str = ""
    stage_order: list[str] = field(default_factory=list)
    stage_descriptions: dict[str, str] = field(default_factory=dict)
    rule_descriptions: dict[str, str] = field(default_factory=dict)
    tag_groups: dict[str, str] = field(default_factory=dict)
    first: str | None = None  # the first reported moment (--start, or the first event)
    # planned actions per (local date, series): a channel name for send and webhook, "task"
    outreach: Counter[tuple[str, str]] = field(default_factory=Counter)
    internal: Counter[str] = field(default_factory=Counter)  # planned tag/stage/owner changes
    rules: dict[str, Counter[str]] = field(default_factory=dict)  # rule -> status -> records
    # (status, reason group) -> rule -> records
    reasons: dict[tuple[str, str], Counter[str]] = field(default_factory=dict)
    tasks: Counter[tuple[str, str]] = field(default_factory=Counter)  # (assignee, date)
    stage_days: dict[str, dict[str, int]] = field(default_factory=dict)  # playbook day -> ...
    # customers per RFM segment at the end; `simulate` fills it when the playbook has [rfm]
    segments: dict[str, int] = field(default_factory=dict)
    _start: int | None = field(default=None, init=False, repr=False)

    def begin(self, runtime: Runtime, start: int | None) -> None:
        """Take the playbook's names and descriptions; `start` is --start as a timestamp."""
        model = runtime.playbook.model
        self.description = model.playbook.description
        self.timezone = runtime.ir["timezone"]
        self.stage_order = [s.name for s in model.stages]
        self.stage_descriptions = {s.name: s.description for s in model.stages}
        self.rule_descriptions = {r.name: r.description for r in model.rules}
        self.rules = {r.name: Counter() for r in model.rules}
        self.tag_groups = {name: t.group or "" for name, t in model.tags.items()}
        self._start = start
        if start is not None:
            self.first = runtime.calendar.format(start)

    def action(self, action: Action) -> None:
        """Count one reported action record (any status)."""
        self.rules.setdefault(action.rule, Counter())[action.status] += 1
        reason = action.details.get("reason")
        group = reason_group(str(reason)) if reason else ""
        self.reasons.setdefault((action.status, group), Counter())[action.rule] += 1
        if action.status not in ("planned", "deferred"):  # what is delivered, and when
            return
        day = str(action.details.get("deliver_at", action.time))[:10]
        if action.action in INTERNAL:
            self.internal[action.action] += 1
        elif action.action == "task":
            self.outreach[day, "task"] += 1
            assignee = action.details.get("assignee")
            self.tasks[str(assignee) if assignee else "(unassigned)", day] += 1
        else:
            self.outreach[day, str(action.details.get("channel", action.action))] += 1

    def sample(self, runtime: Runtime) -> None:
        """Record customers per stage now, as the state of the current playbook day
        (`simulate`, which drives the clock, calls it at each day's last second)."""
        if runtime.now_ts is None or (self._start is not None and runtime.now_ts < self._start):
            return
        day = dt.date.fromordinal(runtime.calendar.day_index(runtime.now_ts)).isoformat()
        self.stage_days[day] = {stage or "(none)": n
                                for stage, n in runtime.stage_counts.items() if n > 0}


def write_report(path: Path, summary: Summary, data: ReportData, *,
                 fonts: Sequence[str] = CJK_FONTS) -> list[str]:
    """Write the HTML report to `path`; return warnings for the person running it."""
    page, notes = render_report(summary, data, fonts=fonts)
    path.write_text(page, encoding="utf-8", newline="\n")
    return notes


def render_report(summary: Summary, data: ReportData, *,
                  fonts: Sequence[str] = CJK_FONTS) -> tuple[str, list[str]]:
    """The report as one HTML string, and warnings for the person making it (such as no
    Chinese font to measure chart labels with)."""
    font = find_cjk_font(fonts)
    notes = [] if font else [NO_CJK_FONT]
    charts = _Charts(font)
    period = _buckets([*data.stage_days, *(d for d, _ in data.outreach),
                       *(d for _, d in data.tasks)])
    with charts.style(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing from")
        sections = [s for s in (
            _actions_section(data, charts, period),
            _stages_section(data, charts, period),
            _tags_section(summary, data, charts),
            _rules_section(data, charts),
            _reasons_section(data),
            _staff_section(data, charts, period),
            _segments_section(data, charts),
        ) if s is not None]
    title = f"sopkit report: {summary.playbook}"
    body = [_header(summary, data)]  # notes are for whoever made the page, not its readers
    body.append('<nav aria-label="Sections"><ol>' + "".join(
        f'<li><a href="#{sid}">{_e(heading)}</a></li>' for sid, heading, _ in sections)
        + "</ol></nav>")
    for sid, heading, content in sections:
        body.append(f'<section id="{sid}" aria-labelledby="{sid}-h">'
                    f'<h2 id="{sid}-h">{_e(heading)}</h2>{content}</section>')
    body.append(f"<footer>Made by sopkit {_e(__version__)} from the simulation of "
                f"{_e(summary.playbook)}. Phone numbers and e-mail addresses are masked. "
                "This file needs no network connection.</footer>")
    page = ("<!DOCTYPE html>\n"
            '<html lang="zh-CN">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>\n"
            + "\n".join(body) + "\n</main>\n</body>\n</html>\n")
    return page, notes


def _m(value: str) -> str:
    """Masked, for chart labels."""
    return mask_text(value)


def _n(value: int) -> str:
    return f"{value:,}"


def _s(count: int) -> str:
    return "" if count == 1 else "s"


def _figure_block(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{_e(caption)}</figcaption></figure>"


_NUMBER = re.compile(r"-?[\d,]+(?:\.\d+)?%?")


def _table(caption: str, head: Sequence[str], rows: Iterable[Sequence[Any]],
           scroll: bool = False) -> str:
    """An HTML table; the first cell of a row is its header, columns of numbers align right."""
    rows = list(rows)
    numeric = [i > 0 and bool(rows) and all(
        (isinstance(r[i], int) and not isinstance(r[i], bool))
        or (isinstance(r[i], str) and _NUMBER.fullmatch(r[i]) is not None) for r in rows)
        for i in range(len(head))]
    parts = [f"<table><caption>{_e(caption)}</caption><thead><tr>"]
    parts.extend(f'<th scope="col"{" class=num" if numeric[i] else ""}>{_e(h)}</th>'
                 for i, h in enumerate(head))
    parts.append("</tr></thead><tbody>")
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            text = _n(cell) if isinstance(cell, int) and not isinstance(cell, bool) else _e(cell)
            if i == 0:
                cells.append(f'<th scope="row">{text}</th>')
            else:
                cells.append(f'<td{" class=num" if numeric[i] else ""}>{text}</td>')
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</tbody></table>")
    table = "".join(parts)
    if scroll:
        return f'<div class="scroll" tabindex="0" role="region" aria-label="{_e(caption)}">' \
               f"{table}</div>"
    return table


def _header(summary: Summary, data: ReportData) -> str:
    statuses: Counter[str] = Counter()
    for counts in data.rules.values():
        statuses.update(counts)
    period = f"{data.first or summary.start or '—'} → {summary.end or '—'}"
    tasks = sum(data.tasks.values())
    cards = [
        ("customers", summary.customers), ("events applied", summary.events_applied),
        ("actions planned", statuses.get("planned", 0)),
        ("suppressed", statuses.get("suppressed", 0)),
        ("cancelled", statuses.get("cancelled", 0)), ("staff tasks", tasks),
        ("quarantined", summary.quarantined),
    ]
    rows = [
        ("playbook", summary.playbook),
        ("engine", summary.engine),
        ("period", period + (f" ({data.timezone})" if data.timezone else "")),
        ("events", f"{_n(summary.events_read)} read, {_n(summary.events_applied)} applied"
                   + (f", {_n(summary.events_after_end)} after --end"
                      if summary.events_after_end else "")),
        ("customers", f"{_n(summary.customers)} ({_n(summary.profiles)} profiles)"),
        ("actions", f"{_n(summary.actions)} record{_s(summary.actions)}: "
                    + ", ".join(f"{_n(n)} {s}" for s, n in sorted(statuses.items()))
                    + (f"; {_n(summary.warmup_actions)} during warm-up before --start"
                       if summary.warmup_actions else "")
                    + (f"; {_n(summary.pending_at_end)} delayed, still pending at the end"
                       if summary.pending_at_end else "")),
        ("quarantined", f"{_n(summary.quarantined)} record{_s(summary.quarantined)}"
                        + (f" in {summary.quarantine_file}" if summary.quarantined
                           and summary.quarantine_file else "")),
    ]
    out = [f"<header><h1>{_e(summary.playbook)}: simulation report</h1>"]
    if data.description:
        out.append(f'<p class="lead">{_e(data.description)}</p>')
    out.append('<ul class="cards">' + "".join(
        f'<li><span class="value">{_n(v)}</span><span class="label">{_e(k)}</span></li>'
        for k, v in cards) + "</ul>")
    out.append("<dl>" + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in rows)
               + "</dl>")
    if summary.quarantine_reasons:
        out.append(_table("Quarantined records by reason", ("reason", "records"),
                          sorted(summary.quarantine_reasons.items(),
                                 key=lambda kv: (-kv[1], kv[0]))))
    out.append("</header>")
    return "".join(out)


def _actions_section(data: ReportData, charts: _Charts,
                     buckets: _Buckets | None) -> tuple[str, str, str] | None:
    if not data.outreach and not data.internal:
        return None
    heading = "Actions per day and channel"
    series = sorted({s for _, s in data.outreach},
                    key=lambda s: (-sum(n for (_, k), n in data.outreach.items() if k == s), s))
    internal = ", ".join(f"{_n(n)} {k}" for k, n in sorted(data.internal.items()))
    note = (f"<p>Planned messages by channel and staff tasks. Changes the playbook makes to "
            f"itself are not charted: {_e(internal)}.</p>" if internal else "")
    if buckets is None or not data.outreach:
        return "actions", heading, note + "<p>No messages or tasks were planned.</p>"
    heading = f"Actions per {buckets.unit} and channel"
    per: dict[dt.date, Counter[str]] = defaultdict(Counter)
    for (day, s), n in data.outreach.items():
        per[buckets.key(dt.date.fromisoformat(day))][s] += n
    fig = charts.figure(10, 3.6)
    ax = fig.add_subplot()
    bottom = [0] * len(buckets.starts)
    for i, s in enumerate(series):
        values = [per[b][s] for b in buckets.starts]
        ax.bar(_days(buckets.starts), values, width=buckets.width(), bottom=bottom,
               align="edge",
               color=PALETTE[i % len(PALETTE)], label=_m(s), linewidth=0)
        bottom = [a + b for a, b in zip(bottom, values, strict=True)]
    ax.set_ylabel(f"planned per {buckets.unit}")
    _whole_numbers(ax.yaxis)
    _legend_above(ax)
    _date_axis(ax, buckets)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    svg = charts.svg(fig, "c-actions", f"Stacked bars: planned actions per {buckets.unit} by "
                     "channel; the numbers are in the table below.")
    rows = [(buckets.label(b), *(per[b][s] for s in series), sum(per[b].values()))
            for b in buckets.starts]
    rows.append(("total", *(sum(per[b][s] for b in buckets.starts) for s in series),
                 sum(data.outreach.values())))
    table = _table(f"Planned actions per {buckets.unit} and channel",
                   (buckets.column, *series, "total"), rows, scroll=True)
    return "actions", heading, note + _figure_block(
        svg, f"Planned actions per {buckets.unit}, stacked by channel (task: staff tasks).") \
        + table


def _stages_section(data: ReportData, charts: _Charts,
                    buckets: _Buckets | None) -> tuple[str, str, str] | None:
    if not data.stage_days or not data.stage_order or buckets is None:
        return None  # a playbook without stages has nothing to show here
    present = {s for counts in data.stage_days.values() for s in counts}
    stages = [s for s in data.stage_order if s in present]
    stages += sorted(present - set(stages))
    if not stages:
        return None  # no customer at any sample (a history of bad records): nothing to stack
    last: dict[dt.date, dict[str, int]] = {}
    for day in sorted(data.stage_days):  # the last sample of each bucket: its end state
        last[buckets.key(dt.date.fromisoformat(day))] = data.stage_days[day]
    xs = [b for b in buckets.starts if b in last]
    fig = charts.figure(10, 3.6)
    ax = fig.add_subplot()
    colours = [PALETTE[i % len(PALETTE)] if s != "(none)" else "#DDDDDD"
               for i, s in enumerate(stages)]
    labels = [_m(s + (f" {data.stage_descriptions[s]}" if data.stage_descriptions.get(s)
                      else "")) for s in stages]
    # each day's end state at the end of that day; bucket ends when there are many days
    days = sorted(data.stage_days)
    if len(days) <= 1000:
        points = [(dt.date.fromisoformat(d) + dt.timedelta(days=1), data.stage_days[d])
                  for d in days]
    else:
        points = [(_bucket_end(buckets, x), last[x]) for x in xs]
    if len(points) == 1:  # one sample: draw it as a flat band across its day
        points.insert(0, (points[0][0] - dt.timedelta(days=1), points[0][1]))
    ax.stackplot(_days(p for p, _ in points),
                 [[counts.get(s, 0) for _, counts in points] for s in stages], labels=labels,
                 colors=colours, linewidth=0)
    ax.set_ylabel("customers")
    _whole_numbers(ax.yaxis)
    _legend_above(ax)
    _date_axis(ax, buckets)
    ax.grid(axis="y", alpha=0.3)
    svg = charts.svg(fig, "c-stages", f"Stacked area: customers per stage at the end of each "
                     f"{buckets.unit}; the numbers are in the table below.")
    rows = [(buckets.label(x), *(last[x].get(s, 0) for s in stages)) for x in xs]
    table = _table(f"Customers per stage at the end of each {buckets.unit}",
                   (buckets.column, *stages), rows, scroll=True)
    text = ("<p>Customers the simulation knows, by lifecycle stage, sampled at the end of every "
            "playbook day (its day starts at the playbook's <code>day_starts</code>). "
            "<em>(none)</em>: not evaluated yet or no stage applies.</p>")
    return "stages", f"Customers per stage over time (by {buckets.unit})", text + \
        _figure_block(svg, f"Customers per stage at the end of each {buckets.unit}.") + table


def _hbar(charts: _Charts, chart_id: str, label: str, names: Sequence[str],
          series: Sequence[tuple[str, Sequence[int], str]], xlabel: str) -> str:
    """Horizontal bars, one row per name (first at the top), stacked by series."""
    height = 0.9 + 0.32 * len(names)
    fig = charts.figure(10, height)
    ax = fig.add_subplot()
    ys = list(range(len(names)))
    left = [0] * len(names)
    for sname, values, colour in series:
        ax.barh(ys, values, left=left, color=colour, label=_m(sname), height=0.7, linewidth=0)
        left = [a + b for a, b in zip(left, values, strict=True)]
    for y, total in zip(ys, left, strict=True):
        ax.annotate(_n(total), (total, y), xytext=(4, 0), textcoords="offset points",
                    va="center", fontsize=9)
    ax.set_yticks(ys, [_m(n) for n in names])
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    _whole_numbers(ax.xaxis)
    ax.set_xlim(0, max(max(left, default=0) * 1.08, 1))
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    if len(series) > 1:
        _legend_above(ax)
    return charts.svg(fig, chart_id, label)


def _tags_section(summary: Summary, data: ReportData,
                  charts: _Charts) -> tuple[str, str, str] | None:
    if not summary.tags:
        return None
    ranked = sorted(summary.tags.items(), key=lambda kv: (-kv[1], kv[0]))
    shown = [(t, n) for t, n in ranked[:TOP_TAGS] if n]
    total = summary.customers or 1
    rows = [(t, data.tag_groups.get(t, ""), n, f"{100 * n / total:.1f}%") for t, n in ranked]
    table = _table("Customers per tag at the end", ("tag", "group", "customers", "share"), rows)
    if not shown:
        return "tags", "Tags at the end", "<p>No customer held a tag at the end.</p>" + table
    svg = _hbar(charts, "c-tags", "Horizontal bars: customers holding each tag at the end; "
                "the numbers are in the table below.", [t for t, _ in shown],
                [("customers", [n for _, n in shown], PALETTE[0])], "customers")
    more = f" (the chart shows the top {TOP_TAGS})" if len(ranked) > TOP_TAGS else ""
    return "tags", "Tags at the end", _figure_block(
        svg, f"Customers holding each tag when the simulation ended{more}.") + table


def _rules_section(data: ReportData, charts: _Charts) -> tuple[str, str, str] | None:
    totals = {r: sum(c.values()) for r, c in data.rules.items()}
    if not any(totals.values()):
        return None
    statuses = ["planned", "suppressed", "cancelled"]
    statuses += sorted({s for c in data.rules.values() for s in c} - set(statuses))
    ranked = sorted((r for r in data.rules if totals[r]), key=lambda r: (-totals[r], r))
    shown = ranked[:TOP_RULES]
    extra = [s for s in statuses if s not in STATUS_COLOURS]
    colours = dict(STATUS_COLOURS)
    colours.update({s: PALETTE[(4 + i) % len(PALETTE)] for i, s in enumerate(extra)})
    used = [s for s in statuses if any(data.rules[r][s] for r in shown)]
    svg = _hbar(charts, "c-rules", "Horizontal stacked bars: action records per rule by "
                "status; the numbers are in the table below.", shown,
                [(s, [data.rules[r][s] for r in shown], colours[s]) for s in used],
                "action records")
    rows = [(r, data.rule_descriptions.get(r, ""), *(data.rules[r][s] for s in statuses),
             totals[r]) for r in sorted(data.rules, key=lambda r: (-totals[r], r))]
    more = f" (the chart shows the top {TOP_RULES})" if len(ranked) > TOP_RULES else ""
    return "rules", "Rules: planned, suppressed, cancelled", _figure_block(
        svg, f"Action records per rule by status{more}. A rule with two actions that fires "
        "once counts 2.") + _table("Action records per rule and status",
                                   ("rule", "description", *statuses, "total"), rows)


def _reasons_section(data: ReportData) -> tuple[str, str, str] | None:
    if not data.reasons:
        return None
    order = {"planned": 0, "suppressed": 1, "cancelled": 2}
    rows = []
    for (status, reason), rules in sorted(
            data.reasons.items(),
            key=lambda kv: (order.get(kv[0][0], 3), kv[0][0], -sum(kv[1].values()), kv[0][1])):
        top = sorted(rules.items(), key=lambda kv: (-kv[1], kv[0]))
        named = ", ".join(f"{r} ({_n(n)})" for r, n in top[:3])
        if len(top) > 3:
            named += f", and {len(top) - 3} more"
        rows.append((status, reason or "—", sum(rules.values()), named))
    text = ("<p>Every status the action records carry, with their reasons grouped (times "
            "shown as <code>&lt;time&gt;</code>), and the rules behind them.</p>")
    return "statuses", "Statuses and reasons", text + _table(
        "Action records by status and reason", ("status", "reason", "records", "rules"),
        rows)


def _staff_section(data: ReportData, charts: _Charts,
                   buckets: _Buckets | None) -> tuple[str, str, str] | None:
    if not data.tasks or buckets is None:
        return None
    per_staff: Counter[str] = Counter()
    for (who, _), n in data.tasks.items():
        per_staff[who] += n
    ranked = sorted(per_staff, key=lambda w: (-per_staff[w], w))
    top = ranked[:TOP_STAFF]
    grid: dict[str, Counter[dt.date]] = defaultdict(Counter)
    for (who, day), n in data.tasks.items():
        grid[who][buckets.key(dt.date.fromisoformat(day))] += n
    import numpy as np

    edges = [*buckets.starts, _bucket_end(buckets, buckets.starts[-1])]
    values = np.array([[grid[w][b] for b in buckets.starts] for w in top], dtype=float)
    fig = charts.figure(10, 1.2 + 0.34 * len(top))
    ax = fig.add_subplot()
    mesh = ax.pcolormesh(np.array(_days(edges)), np.arange(len(top) + 1), values,
                         cmap="Blues", vmin=0, edgecolors="white", linewidth=0.5)
    ax.set_yticks([i + 0.5 for i in range(len(top))], [_m(w) for w in top])
    ax.invert_yaxis()
    _date_axis(ax, buckets)
    ax.spines[["left", "bottom"]].set_visible(False)
    bar = fig.colorbar(mesh, ax=ax, pad=0.01, aspect=30)
    if bar.solids is not None:  # matplotlib draws long colour bars as a bitmap; keep vectors
        bar.solids.set_rasterized(False)
    bar.set_label(f"tasks per {buckets.unit}")
    _whole_numbers(bar.ax.yaxis)
    svg = charts.svg(fig, "c-staff", f"Heat map: staff tasks per {buckets.unit} for the "
                     f"{len(top)} busiest staff; the numbers are in the tables below.")
    summary_rows = []
    for who in ranked[:MAX_TABLE_ROWS]:
        days = {d: n for (w, d), n in data.tasks.items() if w == who}
        busiest = max(days, key=lambda d: (days[d], d))
        summary_rows.append((who, per_staff[who], f"{busiest} ({days[busiest]})", len(days),
                             f"{per_staff[who] / len(days):.1f}"))
    more = (f" (the first {MAX_TABLE_ROWS} of {len(ranked)})" if len(ranked) > MAX_TABLE_ROWS
            else "")
    matrix = _table(f"Tasks per {buckets.unit} for the {len(top)} busiest staff",
                    (buckets.column, *top),
                    [(buckets.label(b), *(grid[w][b] for w in top)) for b in buckets.starts],
                    scroll=True)
    text = ("<p>Follow-up tasks the playbook assigns (to the customer's owner unless the rule "
            "names an assignee), per person. Who is overloaded, and when?</p>")
    return "staff", "Staff task load", text + _figure_block(
        svg, f"Tasks per {buckets.unit} for the {len(top)} busiest staff (darker: more).") + \
        _table(f"Tasks per staff member{more}", ("staff", "tasks", "busiest day",
                                                 "days with tasks", "tasks per such day"),
               summary_rows) + matrix


def _segments_section(data: ReportData, charts: _Charts) -> tuple[str, str, str] | None:
    """Customers per RFM segment at the end, when the playbook has [rfm] (or a caller fills
    `ReportData.segments`)."""
    if not data.segments:
        return None
    ranked = sorted(data.segments.items(), key=lambda kv: (-kv[1], kv[0]))
    svg = _hbar(charts, "c-segments", "Horizontal bars: customers per RFM segment; the "
                "numbers are in the table below.", [s for s, _ in ranked],
                [("customers", [n for _, n in ranked], PALETTE[2])], "customers")
    return "segments", "RFM segments", _figure_block(svg, "Customers per RFM segment.") + \
        _table("Customers per RFM segment", ("segment", "customers"), ranked)


_CSS = """
:root{color-scheme:light;--ink:#1f2328;--muted:#57606a;--line:#d0d7de;--bg:#f6f8fa}
*{box-sizing:border-box}
body{margin:0;background:#fff;color:var(--ink);font:15px/1.5 system-ui,-apple-system,
"Segoe UI","Noto Sans CJK SC","PingFang SC","Microsoft YaHei","WenQuanYi Zen Hei",sans-serif}
main{max-width:1100px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:26px;margin:0 0 4px}
h2{font-size:20px;margin:40px 0 8px;padding-top:12px;border-top:1px solid var(--line)}
.lead{color:var(--muted);margin:0 0 16px}
.cards{display:flex;flex-wrap:wrap;gap:10px;list-style:none;padding:0;margin:16px 0}
.cards li{background:var(--bg);border:1px solid var(--line);border-radius:8px;
padding:10px 14px;min-width:130px}
.cards .value{display:block;font-size:22px;font-weight:600;font-variant-numeric:tabular-nums}
.cards .label{color:var(--muted);font-size:13px}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:12px 0}
dt{color:var(--muted)}dd{margin:0}
nav ol{columns:2;margin:8px 0;padding-left:20px}
a{color:#0969da}
figure{margin:12px 0}
figure svg{display:block;width:100%;height:auto}
figure svg text{font-family:FONTS}
figcaption{color:var(--muted);font-size:13px}
table{border-collapse:collapse;margin:12px 0;font-size:13px;min-width:40%}
caption{text-align:left;font-weight:600;padding:4px 0;color:var(--ink)}
th,td{border-bottom:1px solid var(--line);padding:4px 10px;text-align:left;
vertical-align:top}
thead th{background:var(--bg);position:sticky;top:0}
.num{text-align:right;font-variant-numeric:tabular-nums}
.scroll{max-height:320px;overflow:auto;border:1px solid var(--line);border-radius:6px;
margin:12px 0}
.scroll table{margin:0;width:100%}
.scroll caption{padding:6px 10px}
footer{margin-top:48px;color:var(--muted);font-size:12px}
code{background:var(--bg);padding:0 4px;border-radius:4px}
@media print{.scroll{max-height:none;overflow:visible}h2{break-after:avoid}
figure,table{break-inside:avoid}}
""".replace("FONTS", ",".join(f'"{f}"' if " " in f else f for f in CHART_FONTS))
