"""The report's charts: matplotlib figures as inline SVG with fixed ids and text as text, the
fonts their labels are measured with and drawn in, the palette, and the day/week/month
buckets of the time charts (report.py lays out the page around them)."""

from __future__ import annotations

import datetime as dt
import html
import io
import re
import shutil
import subprocess
import unicodedata
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sopkit._mask import mask_text

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# Fonts with Chinese glyphs, best first; Latin text uses them too, with DejaVu Sans (shipped
# with matplotlib) for anything they lack.
CJK_FONTS = (
    "Noto Sans CJK SC", "Source Han Sans SC", "Noto Sans SC", "WenQuanYi Zen Hei",
    "WenQuanYi Micro Hei", "Sarasa Gothic SC", "Microsoft YaHei", "PingFang SC", "SimHei",
    "Heiti SC", "Droid Sans Fallback", "AR PL UMing CN", "Noto Sans CJK JP",
    "Source Han Sans", "Noto Sans CJK TC", "Noto Sans CJK KR",
)
# What the viewer's browser draws chart text with: the first of these it has (every desktop
# and phone system has one of the Chinese fonts), then its own sans-serif.
CHART_FONTS = (
    "Noto Sans CJK SC", "Source Han Sans SC", "PingFang SC", "Hiragino Sans GB",
    "Microsoft YaHei", "WenQuanYi Micro Hei", "WenQuanYi Zen Hei", "Noto Sans SC", "SimHei",
    "Heiti SC", "Droid Sans Fallback", "DejaVu Sans", "sans-serif",
)
NO_CJK_FONT = ("no font with Chinese glyphs found here: the charts' Chinese labels are still "
               "text the browser draws, but their space was measured without Chinese glyphs "
               "and may be tight; install one for a better layout, e.g. "
               "`apt-get install fonts-noto-cjk`")
# Okabe & Ito's palette, readable with every common colour-vision deficiency
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442",
           "#000000", "#999999")
STATUS_COLOURS = {"planned": "#0072B2", "suppressed": "#E69F00", "cancelled": "#999999"}
_SVG_HEAD = re.compile(r"\A.*?(?=<svg\b)", re.S)
_SVG_NS = re.compile(r' xmlns(?::xlink)?="[^"]*"')
_SVG_META = re.compile(r"\s*<metadata>.*?</metadata>", re.S)
_SVG_ID = re.compile(r'\bid="([^"]+)"')
_SVG_REF = re.compile(r'(href="#|url\(#)')
_SVG_FAMILY = re.compile(r"font-family: [^;\"]*(?:; )?")


def find_cjk_font(names: Sequence[str] = CJK_FONTS) -> str | None:
    """The first of `names` matplotlib can use; fonts installed after its cache was built
    are found through fontconfig. None if there is none."""
    from matplotlib import font_manager

    def known() -> str | None:
        have = {f.name for f in font_manager.fontManager.ttflist}
        return next((n for n in names if n in have), None)

    found = known()
    if found is not None:
        return found
    fc_list = shutil.which("fc-list")
    if fc_list is None:
        return None
    try:
        listing = subprocess.run([fc_list, ":lang=zh", "file"], capture_output=True,
                                 text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in sorted(listing.splitlines()):
        fname = line.split(":")[0].strip()
        if fname:
            try:
                font_manager.fontManager.addfont(fname)
            except (OSError, RuntimeError, ValueError):
                continue
    return known()


class Charts:
    """Makes matplotlib figures into inline SVG with fixed ids, no dates, text as text.

    matplotlib lays text out with `families` (the Chinese font found here, if any); the SVG
    keeps each label as a <text> element without a font name of its own, so the page's
    `CHART_FONTS` list decides how the browser draws it."""

    def __init__(self, font: str | None) -> None:
        self.families = [font, "DejaVu Sans"] if font else ["DejaVu Sans"]

    def style(self) -> Any:
        """The matplotlib settings every chart is drawn with (a context manager)."""
        import matplotlib

        return matplotlib.rc_context({
            "svg.fonttype": "none", "font.family": self.families, "font.size": 10,
            "axes.unicode_minus": False, "axes.spines.top": False, "axes.spines.right": False,
            "legend.frameon": False, "figure.dpi": 72, "path.simplify": True,
            "date.epoch": "1970-01-01T00:00:00", "date.converter": "concise",
        })

    def figure(self, width: float, height: float) -> Figure:
        from matplotlib.figure import Figure

        return Figure(figsize=(width, height), layout="constrained")

    def svg(self, fig: Figure, chart_id: str, label: str) -> str:
        buf = io.StringIO()
        import matplotlib

        # a salt per chart: ids stay fixed from run to run and differ between charts
        with matplotlib.rc_context({"svg.hashsalt": f"sopkit-{chart_id}"}), \
                warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Glyph .* missing from")
            fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None,
                                                     "Format": None, "Type": None})
        text = _SVG_META.sub("", _SVG_HEAD.sub("", buf.getvalue()))
        text = _SVG_NS.sub("", text)
        text = _SVG_ID.sub(lambda m: f'id="{chart_id}-{m.group(1)}"', text)
        text = _SVG_REF.sub(lambda m: f"{m.group(1)}{chart_id}-", text)
        text = _SVG_FAMILY.sub("", text)  # the page's `svg text` rule names the fonts
        return text.replace("<svg ", f'<svg role="img" aria-label="{escape(label)}" ', 1).strip()


def escape(value: Any) -> str:
    """Escaped for HTML, with phone numbers and e-mail addresses masked."""
    return html.escape(mask_text(str(value)), quote=True)


@dataclass(frozen=True)
class Buckets:
    unit: str  # day | week | month
    starts: list[dt.date]

    def key(self, day: dt.date) -> dt.date:
        if self.unit == "week":
            return day - dt.timedelta(days=day.weekday())
        if self.unit == "month":
            return day.replace(day=1)
        return day

    @property
    def column(self) -> str:
        return "week from" if self.unit == "week" else self.unit

    def label(self, start: dt.date) -> str:
        if self.unit == "month":
            return start.strftime("%Y-%m")
        return start.isoformat()

    def width(self) -> float:
        return {"day": 0.8, "week": 5.6, "month": 24.0}[self.unit]


def time_buckets(days: Iterable[str]) -> Buckets | None:
    """Days up to 62, weeks (from Monday) up to two years, months beyond."""
    dates = sorted(dt.date.fromisoformat(d) for d in days)
    if not dates:
        return None
    first, last = dates[0], dates[-1]
    span = (last - first).days + 1
    unit = "day" if span <= 62 else "week" if span <= 731 else "month"
    probe = Buckets(unit, [])
    starts: list[dt.date] = []
    day = first
    while day <= last:
        key = probe.key(day)
        if not starts or starts[-1] != key:
            starts.append(key)
        day += dt.timedelta(days=1)
    return Buckets(unit, starts)


def whole_numbers(axis: Any) -> None:
    from matplotlib.ticker import MaxNLocator, StrMethodFormatter

    axis.set_major_locator(MaxNLocator(integer=True))
    axis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))


_EPOCH = dt.date(1970, 1, 1)  # matplotlib's date numbers count days from here (see style)


def day_numbers(dates: Iterable[dt.date]) -> list[float]:
    """Dates as matplotlib date numbers."""
    return [float((d - _EPOCH).days) for d in dates]


def legend_above(ax: Axes) -> None:
    """The legend in rows above the plot, as many entries a row as fit its width."""
    labels = ax.get_legend_handles_labels()[1]
    widest = max((text_width(label) for label in labels), default=1) + 6
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.01), ncols=max(1, min(len(labels),
              120 // widest)), borderaxespad=0, handlelength=1.2, columnspacing=1.5)


def text_width(text: str) -> int:
    """Width in Latin letters: CJK characters count 2."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def date_axis(ax: Axes, buckets: Buckets) -> None:
    """A date x axis over the whole period, the same on every time chart."""
    ax.xaxis_date()
    lo, hi = day_numbers([buckets.starts[0], bucket_end(buckets, buckets.starts[-1])])
    ax.set_xlim(lo, hi)


def bucket_end(buckets: Buckets, start: dt.date) -> dt.date:
    if buckets.unit == "week":
        return start + dt.timedelta(days=7)
    if buckets.unit == "month":
        return (start + dt.timedelta(days=32)).replace(day=1)
    return start + dt.timedelta(days=1)
