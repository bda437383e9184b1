"""RFM facts: scores against the population's quintiles, checked against pandas on CDNOW."""

from __future__ import annotations

import datetime as dt
import gzip
import json
from pathlib import Path

import pytest

import sopkit
from sopkit._stats.rfm import breakpoints, segment

ROOT = Path(__file__).parent.parent
PLAYBOOK = Path(__file__).parent / "data" / "rfm" / "cdnow_rfm.toml"
AT = "1997-09-01T09:00:00+08:00"  # a Monday day start: a refit


def test_breakpoints_interpolate_like_numpy() -> None:
    """Quintile breakpoints use linear interpolation between ranks."""
    assert breakpoints([1, 2, 3, 4, 5, 6]) == (2.0, 3.0, 4.0, 5.0)
    assert breakpoints([10]) == (10, 10, 10, 10)
    assert breakpoints([]) is None


def test_segments_follow_the_classic_eight() -> None:
    """High R, F and M is 重要价值客户; high M alone with low R and F is 重要挽留客户."""
    assert segment(5, 4, 3) == "重要价值客户"
    assert segment(1, 2, 5) == "重要挽留客户"
    assert segment(4, 1, 1) == "一般发展客户"


def test_rfm_scores_match_an_independent_pandas_computation() -> None:
    """Every CDNOW customer's R, F, M and segment equal pandas' on the same history."""
    import pandas as pd
    rt = sopkit.Runtime(sopkit.load_playbook(PLAYBOOK), engine="native")
    at = rt.calendar.parse(AT)
    rows = []
    with gzip.open(ROOT / "data/cdnow/events.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            event = json.loads(line)
            if rt.calendar.parse(event["ts"]) > at:
                break
            rt.ingest(event)
            rows.append(event)
    rt.advance(AT)
    frame = pd.DataFrame(rows)
    local = pd.to_datetime(frame["ts"]).dt.tz_localize("Asia/Shanghai")
    # playbook days start at 09:00: shift by 9 hours, take the date
    frame["day"] = (local - pd.Timedelta(hours=9)).dt.date
    frame["when"] = local
    frame["amount"] = frame["amount"].astype(float)
    at_local = pd.Timestamp(AT)
    today = (at_local - pd.Timedelta(hours=9)).date()
    window = frame[frame["when"] > at_local - pd.Timedelta(days=365)]
    recency = frame.groupby("customer_id")["day"].max().map(lambda d: (today - d).days)
    frequency = window.groupby("customer_id").size().reindex(recency.index, fill_value=0)
    monetary = window.groupby("customer_id")["amount"].sum().reindex(recency.index,
                                                                     fill_value=0.0)
    quantiles = [0.2, 0.4, 0.6, 0.8]
    qr, qf, qm = (list(s.quantile(quantiles)) for s in (recency, frequency, monetary))
    expected = {}
    for cid in recency.index:
        r = 5 - sum(recency[cid] > b for b in qr)
        f = 1 + sum(frequency[cid] > b for b in qf)
        m = 1 + sum(monetary[cid] > b for b in qm)
        expected[cid] = (r, f, m)
    got = {}
    for cid in recency.index:
        view = rt.state(cid).metrics
        got[cid] = (view["rfm_r"], view["rfm_f"], view["rfm_m"])
        assert view["rfm_segment"] == segment(*got[cid])
        assert view["rfm_segment"] in rt.state(cid).tags
    assert len(got) > 20000
    assert got == expected
    assert {s for s in got.values()} != {(5, 5, 5)}


def test_segment_facts_drive_rules_and_templates() -> None:
    """A rule on the 重要价值客户 tag fires and its message shows the scores."""
    rt = sopkit.Runtime(sopkit.load_playbook(PLAYBOOK), engine="native")
    out = []
    for i, day in enumerate(range(1, 20)):
        ts = dt.datetime(2024, 1, day, 10).isoformat()
        for n in range(5):
            if n <= i % 5:
                out += rt.ingest({"customer_id": f"c{n}", "type": "purchase", "ts": ts,
                                  "amount": str(10 * (n + 1))})
    out += rt.advance("2024-01-29T10:00:00")
    welcomed = [a for a in out if a.rule == "vip_welcome"]
    assert welcomed and all("您已成为重要价值客户（R" in a.details["message"] for a in welcomed)


def test_a_bad_rfm_metric_is_named_with_a_suggestion(tmp_path: Path) -> None:
    """[rfm] naming a metric of the wrong kind is a located problem."""
    path = tmp_path / "bad.toml"
    path.write_text(PLAYBOOK.read_text(encoding="utf-8").replace(
        'frequency = "purchases_365d"', 'frequency = "spend_365d"'), encoding="utf-8")
    with pytest.raises(sopkit.PlaybookError) as err:
        sopkit.load_playbook(path)
    assert "rfm.frequency: metric 'spend_365d' is a sum; frequency needs a count metric" in \
        str(err.value)
