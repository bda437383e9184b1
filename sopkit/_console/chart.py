"""The overview's chart of outbox rows per day: the numbers, and the geometry of an inline SVG
(one small chart a channel, each day's bar stacked by status, all on one scale) that the
template draws. No script, no style attribute: the colours are console.css classes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sopkit._live.store import STATUSES

WIDTH, HEIGHT = 640, 132  # the SVG's viewBox
LEFT, RIGHT, TOP, BOTTOM = 40, 16, 8, 20  # room for the scale (left) and the dates (below)


def by_day(days: Sequence[dt.date], found: Sequence[tuple[int, str, str, int]]
           ) -> dict[str, Any]:
    """The chart and its table from `Inbox.outbox_by_day` rows over `days` (oldest first)."""
    counts: dict[str, dict[int, dict[str, int]]] = {}
    for day, channel, status, n in found:
        counts.setdefault(channel, {}).setdefault(day, {})[status] = n
    statuses = [s for s in STATUSES if any(s in c for per in counts.values()
                                           for c in per.values())]
    top = _nice(max((sum(c.values()) for per in counts.values() for c in per.values()),
                    default=0))
    slot = (WIDTH - LEFT - RIGHT) / max(len(days), 1)
    names = [d.isoformat() for d in days]
    panels = [{"channel": channel, "total": sum(n for c in per.values() for n in c.values()),
               "bars": _bars(per, statuses, names, top, slot)}
              for channel, per in sorted(counts.items())]
    rows: list[dict[str, Any]] = [
        {"day": names[day], "channel": channel,
         "counts": [per[day].get(s, 0) for s in statuses], "total": sum(per[day].values())}
        for day in range(len(days)) for channel, per in sorted(counts.items()) if day in per]
    bottom = HEIGHT - BOTTOM
    return {"width": WIDTH, "height": HEIGHT, "left": LEFT, "right": WIDTH - RIGHT,
            "bottom": bottom, "statuses": statuses, "panels": panels, "rows": rows,
            "first": names[0] if names else "", "last": names[-1] if names else "",
            "totals": [sum(r["counts"][i] for r in rows) for i in range(len(statuses))],
            "total": sum(r["total"] for r in rows),
            "ticks": [{"y": round(bottom - (bottom - TOP) * k / 2, 1), "label": top * k // 2}
                      for k in (0, 1, 2)],
            "labels": [{"x": round(LEFT + slot * (i + 0.5), 1), "text": names[i][5:]}
                       for i in range(len(days) - 1, -1, -7)]}


def _bars(per: dict[int, dict[str, int]], statuses: list[str], names: list[str], top: int,
          slot: float) -> list[dict[str, Any]]:
    """Each day's segments, bottom up in status order."""
    bottom, scale = HEIGHT - BOTTOM, (HEIGHT - BOTTOM - TOP) / top
    out = []
    for day, count in sorted(per.items()):
        y = float(bottom)
        for status in statuses:
            n = count.get(status, 0)
            if not n:
                continue
            height = max(n * scale, 1.0)  # a few rows beside many still show
            y -= height
            out.append({"x": round(LEFT + slot * day + slot * 0.15, 1), "y": round(y, 1),
                        "w": round(slot * 0.7, 1), "h": round(height, 1), "status": status,
                        "n": n, "day": names[day]})
    return out


def _nice(n: int) -> int:
    """The scale's top: the least of 2, 4, 10, 20, 40, 100, ... at or above `n` (even, so
    that the middle line is a whole number)."""
    top = 2
    while top < n:
        top = top * 5 // 2 if str(top).startswith("4") else top * 2
    return top
