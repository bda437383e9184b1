"""`sopkit forecast --report`: the forecast as a self-contained HTML page, in the report's
style: a fan chart per channel (the mean per day in its 80% band), the totals, staff load
and, with `--backtest`, what really happened."""

from __future__ import annotations

import datetime as dt
import warnings
from pathlib import Path

from sopkit import __version__
from sopkit._offline.charts import (
    CJK_FONTS,
    Charts,
    day_numbers,
    escape,
    find_cjk_font,
    legend_above,
)
from sopkit._offline.forecast import Forecast
from sopkit._offline.report import _CSS  # one style sheet for both pages


def render_forecast(result: Forecast) -> str:
    """The page as one HTML string: the same forecast, the same bytes."""
    charts = Charts(find_cjk_font(CJK_FONTS))
    with charts.style(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing from")
        fan = _fan(result, charts) if result.channels else "<p>No action forecast.</p>"
    rows = "".join(
        f"<tr><td>{escape(c)}</td><td>{escape(v.text())}</td>"
        f"<td>{escape(result.cost[c].text()) if c in result.cost else ''}</td></tr>"
        for c, v in result.totals.items())
    rows += "".join(f"<tr><td>{escape(label)}</td><td>{escape(v.text())}</td><td></td></tr>"
                    for label, v in (("purchases", result.purchases),
                                     ("suppressed by a cap", result.capped),
                                     ("deferred (quiet hours/days)", result.deferred)))
    body = [
        f"<h1>sopkit forecast: {escape(result.playbook)}</h1>",
        f"<p>{len(result.days)} days from {escape(result.start)}; {result.samples} samples "
        f"(seed {result.seed}); {result.buyers} of {result.customers} customers have "
        "bought. Each figure: the mean over the samples and its 80% interval.</p>",
        f'<section id="forecast" aria-labelledby="forecast-h"><h2 id="forecast-h">Actions '
        f"per day</h2>{fan}</section>",
        '<section id="totals" aria-labelledby="totals-h"><h2 id="totals-h">Over the whole '
        "period</h2><table><thead><tr><th>channel</th><th>actions</th><th>cost</th></tr>"
        f"</thead><tbody>{rows}</tbody></table></section>",
    ]
    if result.owners:
        staff = "".join(f"<tr><td>{escape(o.owner)}</td><td>{escape(o.per_day.text())}</td>"
                        f"<td>{escape(o.peak.text())}</td><td>{escape(o.days_over.text())}"
                        f"</td><td>{escape(o.pushed.text())}</td></tr>" for o in result.owners)
        body.append('<section id="staff" aria-labelledby="staff-h"><h2 id="staff-h">Staff '
                    f"tasks (capacity {result.capacity or 'none'} a day)</h2><table><thead>"
                    "<tr><th>owner</th><th>made per day</th><th>busiest day</th><th>days "
                    "over capacity</th><th>moved to a later day</th></tr></thead>"
                    f"<tbody>{staff}</tbody></table></section>")
    if result.actual is not None:
        check = "".join(
            f"<tr><td>{escape(c)}</td><td>{row['actual']}</td><td>{row['forecast']:.1f}</td>"
            f"<td>{'' if row['error'] is None else format(row['error'], '+.1%')}</td>"
            f"<td>{row['coverage']:.0%}</td></tr>"
            for c, row in result.actual["channels"].items())
        body.append('<section id="backtest" aria-labelledby="backtest-h"><h2 id="backtest-h">'
                    "Backtest</h2><table><thead><tr><th>channel</th><th>actual</th><th>"
                    "forecast</th><th>error</th><th>days inside the interval</th></tr>"
                    f"</thead><tbody>{check}</tbody></table></section>")
    body.append("<ul>" + "".join(f"<li>{escape(n)}</li>" for n in result.notes) + "</ul>")
    body.append(f"<footer>Made by sopkit {escape(__version__)}. This file needs no network "
                "connection.</footer>")
    return ("<!DOCTYPE html>\n<html lang=\"zh-CN\">\n<head>\n<meta charset=\"utf-8\">\n"
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>sopkit forecast: {escape(result.playbook)}</title>\n<style>{_CSS}</style>"
            "\n</head>\n<body>\n<main>\n" + "\n".join(body) + "\n</main>\n</body>\n</html>\n")


def write_forecast(result: Forecast, path: Path) -> None:
    """Write the page to `path`."""
    path.write_text(render_forecast(result), encoding="utf-8", newline="\n")


def _fan(result: Forecast, charts: Charts) -> str:
    days = day_numbers(dt.date.fromisoformat(d) for d in result.days)
    fig = charts.figure(8, 3.2)
    ax = fig.add_subplot()
    for channel in result.channels:
        cells = [result.by_day[d][channel] for d in result.days]
        line = ax.plot(days, [c.mean for c in cells], label=channel)[0]
        ax.fill_between(days, [c.low for c in cells], [c.high for c in cells],
                        color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_ylabel("actions per day")
    ax.xaxis_date()
    legend_above(ax)
    return charts.svg(fig, "fan", "Forecast actions per day and channel, with 80% bands")
