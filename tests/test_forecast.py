"""`sopkit forecast`: K drawn futures of purchases run through the playbook, with intervals.

The backtest fits on an eighth of the CDNOW customers up to 1997-10-01 and forecasts the
retail playbook's next 30 days; the real history of those days is the check. The whole
history and 90 days are in docs/analytics.md#forecast (`--backtest`)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sopkit._cli.app import app

ROOT = Path(__file__).parent.parent
CDNOW = ROOT / "data/cdnow"
RETAIL = ROOT / "playbooks/retail.toml"


def _eighth(src: Path, dest: Path) -> Path:
    """The records of customers whose number is a multiple of 8 (about 2,900 customers)."""
    with gzip.open(src, "rt", encoding="utf-8") as lines, dest.open("w", encoding="utf-8") as out:
        for line in lines:
            if int(json.loads(line)["customer_id"].split("-")[1]) % 8 == 0:
                out.write(line)
    return dest


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(events, profiles) of an eighth of CDNOW."""
    folder = tmp_path_factory.mktemp("cdnow8")
    return (_eighth(CDNOW / "events.jsonl.gz", folder / "events.jsonl"),
            _eighth(CDNOW / "profiles.jsonl.gz", folder / "profiles.jsonl"))


def _forecast(*args: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(per-day lines, summary) of `sopkit forecast --output jsonl`."""
    result = CliRunner().invoke(app, ["forecast", *args, "--output", "jsonl"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines()]
    return lines[:-1], lines[-1]


@pytest.fixture(scope="module")
def backtest(history: tuple[Path, Path]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The 30-day backtest from 1997-10-01, 10 samples."""
    events, profiles = history
    return _forecast(str(RETAIL), "--events", str(events), "--profiles", str(profiles),
                     "--at", "1997-10-01", "--days", "30", "--samples", "10", "--backtest")


def test_the_backtest_forecasts_each_channel_within_a_tenth(
        backtest: tuple[list[dict[str, Any]], dict[str, Any]]) -> None:
    """Fitted to 1997-10-01, the 30-day forecast per channel is within 10% of what happened."""
    _days, summary = backtest
    channels = summary["actual"]["channels"]
    assert set(channels) == {"sms", "task", "wecom"}
    for name, row in channels.items():
        assert row["actual"] > 50, name  # enough to judge
        assert abs(row["error"]) <= 0.10, (name, row)
        assert 0 <= row["days_inside"] <= 30
        assert row["forecast"] == summary["totals"][name]["mean"]


def test_every_day_and_channel_has_a_mean_inside_its_interval(
        backtest: tuple[list[dict[str, Any]], dict[str, Any]]) -> None:
    """One line per day and channel, 30 days from 1997-10-01, low <= mean <= high."""
    days, summary = backtest
    assert summary["days"] == 30 and summary["samples"] == 10
    assert sorted({d["day"] for d in days}) == [f"1997-10-{n:02d}" for n in range(1, 31)]
    assert len(days) == 30 * 3
    for line in days:
        assert line["low"] <= line["mean"] <= line["high"], line
    total = sum(d["mean"] for d in days if d["channel"] == "wecom")
    assert total == pytest.approx(summary["totals"]["wecom"]["mean"], abs=0.01)
    assert summary["model"]["bgnbd"]["r"] > 0 and summary["model"]["gamma_gamma"]["q"] > 1
    assert summary["purchases"]["mean"] > 0
    assert len(summary["notes"]) == 2 and "not forecast" in summary["notes"][0]


def test_staff_tasks_are_counted_per_owner_against_capacity(
        history: tuple[Path, Path], tmp_path: Path) -> None:
    """With task_capacity 1 owners get more tasks a day than that; the overflow moves on."""
    events, profiles = history
    tight = tmp_path / "retail.toml"
    text = RETAIL.read_text(encoding="utf-8")
    assert text.count("task_capacity = 20") == 1
    tight.write_text(text.replace("task_capacity = 20", "task_capacity = 1")
                     .replace('include = ["../rules/', f'include = ["{ROOT}/rules/'),
                     encoding="utf-8")
    _days, summary = _forecast(str(tight), "--events", str(events), "--profiles",
                               str(profiles), "--at", "1997-10-01", "--days", "7",
                               "--samples", "3")
    assert summary["task_capacity"] == 1
    owners = summary["owners"]
    assert owners and all(o["owner"].startswith("staff-") for o in owners)
    assert sum(o["days_over_capacity"]["mean"] for o in owners) > 0
    assert sum(o["moved_by_capacity"]["mean"] for o in owners) > 0
    assert all(o["peak"]["mean"] >= o["per_day"]["mean"] for o in owners)


def test_the_same_seed_gives_the_same_forecast(history: tuple[Path, Path]) -> None:
    """Two runs with one seed print the same bytes; another seed draws another future."""
    events, profiles = history
    args = [str(RETAIL), "--events", str(events), "--profiles", str(profiles), "--at",
            "1997-12-01", "--days", "5", "--samples", "2", "--output", "jsonl"]
    runs = [CliRunner().invoke(app, ["forecast", *args, *seed]).output
            for seed in ([], [], ["--seed", "7"])]
    assert runs[0] == runs[1]
    assert runs[2] != runs[0]


def test_channel_costs_add_up(history: tuple[Path, Path], tmp_path: Path) -> None:
    """`cost = 0.05` on the sms channel: the forecast cost is 0.05 per forecast SMS."""
    events, profiles = history
    priced = tmp_path / "retail.toml"
    text = RETAIL.read_text(encoding="utf-8")
    priced.write_text(text.replace('[channels.sms]\ntype = "sms"\n',
                                   '[channels.sms]\ntype = "sms"\ncost = 0.05\n')
                      .replace('include = ["../rules/', f'include = ["{ROOT}/rules/'),
                      encoding="utf-8")
    _days, summary = _forecast(str(priced), "--events", str(events), "--profiles",
                               str(profiles), "--at", "1997-10-01", "--days", "7",
                               "--samples", "2")
    assert set(summary["cost"]) == {"sms"}
    assert summary["cost"]["sms"]["mean"] == pytest.approx(
        0.05 * summary["totals"]["sms"]["mean"], abs=0.001)
    assert summary["cost"]["sms"]["mean"] > 0


def test_the_report_page_draws_the_forecast(history: tuple[Path, Path],
                                            tmp_path: Path) -> None:
    """`--report` writes a page with the fan chart, the totals and the staff table."""
    events, profiles = history
    page = tmp_path / "forecast.html"
    result = CliRunner().invoke(app, [
        "forecast", str(RETAIL), "--events", str(events), "--profiles", str(profiles),
        "--at", "1997-10-01", "--days", "5", "--samples", "2", "--report", str(page)])
    assert result.exit_code == 0, result.output
    html = page.read_text(encoding="utf-8")
    for part in ('id="forecast"', 'id="totals"', 'id="staff"', "<svg ", "<td>wecom</td>",
                 "<td>staff-01</td>", "Only purchases are forecast"):
        assert part in html, part
    assert "Over the whole period" in result.output and "Per day" in result.output


@pytest.mark.parametrize(("args", "message"), [
    ([], "one of --events HISTORY or --store URL"),
    (["--purchase-event", "purchse"], "--purchase-event purchse: not an event type"),
    (["--backtest", "--store", "x.db"], "--backtest compares with the history"),
    (["--at", "someday"], "--at 'someday' is not an ISO 8601"),
])
def test_what_cannot_be_forecast_is_a_usage_error(history: tuple[Path, Path], tmp_path: Path,
                                                  args: list[str], message: str) -> None:
    """No history, an unknown purchase event, --backtest on a store, a bad --at: exit 2."""
    events, _profiles = history
    if "--store" in args:
        args = [a if a != "x.db" else str(tmp_path / "x.db") for a in args]
        from sopkit._live.openstore import open_store

        open_store(str(tmp_path / "x.db"), create=True).close()
    elif args:
        args = ["--events", str(events), *args]
    result = CliRunner().invoke(app, ["forecast", str(RETAIL), *args])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())


def test_a_store_without_clv_cannot_be_forecast(tmp_path: Path) -> None:
    """`--store` with a playbook without [clv] (the store keeps no purchases): exit 2."""
    from sopkit._live.openstore import open_store

    open_store(str(tmp_path / "s.db"), create=True).close()
    result = CliRunner().invoke(app, ["forecast", str(RETAIL), "--store",
                                      str(tmp_path / "s.db")])
    assert result.exit_code == 2, result.output
    assert "needs a playbook with [clv]" in " ".join(result.output.split())


def test_a_live_store_forecasts_as_its_history_does(history: tuple[Path, Path],
                                                    tmp_path: Path) -> None:
    """A store `run` fed to 1997-10-01 forecasts the tasks the history forecasts from there."""
    events, profiles = history
    playbook = tmp_path / "retail.toml"
    text = RETAIL.read_text(encoding="utf-8").replace(
        'include = ["../rules/', f'include = ["{ROOT}/rules/')
    for name in ("wecom", "sms"):  # channels run can build without secrets
        text = text.replace(f'[channels.{name}]\ntype = "{name}"\n', f'[channels.{name}]\n'
                            f'type = "jsonl"\npath = "{tmp_path}/{name}.jsonl"\n')
    playbook.write_text(text + '\n[clv]\nevent = "purchase"\namount = "amount"\n',
                        encoding="utf-8")
    store = tmp_path / "s.db"
    ran = CliRunner().invoke(app, ["run", str(playbook), "--store", str(store), "--events",
                                   str(events), "--profiles", str(profiles), "--once",
                                   "--clock", "1997-10-01", "--lateness", "0s",
                                   "--send-from", "1997-10-01", "--engine", "native"])
    assert ran.exit_code == 0, ran.output
    common = ["--days", "7", "--samples", "4"]
    _d, live = _forecast(str(playbook), "--store", str(store), *common)
    _d, replay = _forecast(str(playbook), "--events", str(events), "--profiles",
                           str(profiles), "--at", "1997-10-01", *common)
    assert live["start"] == replay["start"] == "1997-10-01T00:00:00+08:00"
    assert live["buyers"] == replay["buyers"] > 1000
    assert live["model"]["bgnbd"] == pytest.approx(replay["model"]["bgnbd"])
    assert live["purchases"] == replay["purchases"]  # the same draws from the same fit
    assert live["totals"]["task"]["mean"] == pytest.approx(replay["totals"]["task"]["mean"],
                                                           rel=0.1)


def test_a_long_forecast_tells_how_far_it_is(history: tuple[Path, Path]) -> None:
    """The progress callback hears the history read through, every future and the backtest;
    with `--progress` the bar goes to stderr and stdout stays JSON Lines."""
    from sopkit import load_playbook
    from sopkit._offline.forecast import forecast

    events, profiles = history
    heard: dict[str, tuple[int, int]] = {}
    forecast(load_playbook(RETAIL), events=events, profiles=profiles, at="1997-12-01",
             days=5, samples=3, backtest=True,
             progress=lambda label, done, total: heard.__setitem__(label, (done, total)))
    assert heard["futures"] == (3, 3)
    size = events.stat().st_size
    assert heard["history (events)"] == (size, size)
    assert heard["backtest"] == (size, size)
    result = CliRunner().invoke(app, [
        "forecast", str(RETAIL), "--events", str(events), "--at", "1997-12-01", "--days", "2",
        "--samples", "2", "--output", "jsonl", "--progress"])
    assert result.exit_code == 0, result.output
    assert all(json.loads(line) for line in result.stdout.splitlines())
