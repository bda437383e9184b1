"""China's calendar in playbooks (docs/calendar.md): lunar anniversaries, is_workday and
is_holiday, `N workdays` delays, quiet_days, and years without published holiday data."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from typer.testing import CliRunner

import sopkit
from sopkit._cli.app import app

HEAD = """
[playbook]
name = "cn"
timezone = "Asia/Shanghai"

[profile]
birthday = "date"

[events.purchase]
amount = "decimal"

[channels.wecom]
type = "console"

[templates.soon]
text = "{{ customer_id }}: birthday in 3 days"

[templates.guide]
text = "{{ customer_id }}: how to use what you bought"
"""

LUNAR = HEAD + """
[metrics.days_to_birthday]
kind = "days_to_anniversary"
attribute = "birthday"
calendar = "CALENDAR"

[[rules]]
name = "birthday_soon"
when = "days_to_birthday == 3"
actions = [{ type = "send", channel = "wecom", template = "soon" }]
"""


def _playbook(tmp_path: Path, text: str) -> sopkit.LoadedPlaybook:
    path = tmp_path / "cn.toml"
    path.write_text(text, encoding="utf-8")
    return sopkit.load_playbook(path)


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_a_mid_autumn_lunar_birthday_is_greeted_3_days_before_zhongqiu_two_years_running(
        tmp_path: Path) -> None:
    """`calendar = "lunar"`: 八月十五 is greeted 3 days before 中秋 in 2024 and in 2025."""
    (tmp_path / "cn.toml").write_text(LUNAR.replace("CALENDAR", "lunar"), encoding="utf-8")
    (tmp_path / "profiles.csv").write_text("customer_id,birthday\nc1,1990-08-15\n",
                                           encoding="utf-8")
    (tmp_path / "events.jsonl").write_text(
        '{"customer_id": "c1", "type": "purchase", "ts": "2024-01-02T10:00:00", '
        '"amount": "10"}\n', encoding="utf-8")
    out = tmp_path / "actions.jsonl"
    code, text = _run("simulate", str(tmp_path / "cn.toml"), "--events",
                      str(tmp_path / "events.jsonl"), "--profiles", str(tmp_path / "profiles.csv"),
                      "--end", "2025-12-31", "--out", str(out), "--unmasked")
    assert code == 0, text
    sent = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    # 中秋 2024-09-17 and 2025-10-06
    assert [(a["rule"], a["time"]) for a in sent] == [
        ("birthday_soon", "2024-09-14T00:00:00+08:00"),
        ("birthday_soon", "2025-10-03T00:00:00+08:00"),
    ]


def test_a_gregorian_birth_date_counts_to_its_lunar_anniversary(tmp_path: Path) -> None:
    """`lunar_of_birth`: born 2000-09-12 (八月十五), greeted 3 days before 中秋 2024."""
    rt = sopkit.Runtime(_playbook(tmp_path, LUNAR.replace("CALENDAR", "lunar_of_birth")))
    rt.add_profile({"customer_id": "c1", "birthday": "2000-09-12"})
    out = rt.advance("2024-01-01T00:00:00") + rt.advance("2024-12-31T00:00:00")
    assert [a.time for a in out] == ["2024-09-14T00:00:00+08:00"]


def test_a_leap_month_birth_is_celebrated_in_the_regular_month(tmp_path: Path) -> None:
    """Born in 闰四月 2020 (2020-06-10, 闰四月十九): greeted before 四月十九 of 2024."""
    rt = sopkit.Runtime(_playbook(tmp_path, LUNAR.replace("CALENDAR", "lunar_of_birth")))
    rt.add_profile({"customer_id": "c1", "birthday": "2020-06-10"})
    out = rt.advance("2024-01-01T00:00:00") + rt.advance("2024-12-31T00:00:00")
    # 2024 四月十九 is 2024-05-26: 3 days before is 05-23
    assert [a.time for a in out] == ["2024-05-23T00:00:00+08:00"]


def test_the_30th_of_a_29_day_lunar_month_is_kept_on_its_29th(tmp_path: Path) -> None:
    """A 腊月三十 birthday in a year whose 腊月 has 29 days falls on 除夕, 腊月廿九."""
    rt = sopkit.Runtime(_playbook(tmp_path, LUNAR.replace("CALENDAR", "lunar")))
    rt.add_profile({"customer_id": "c1", "birthday": "1990-12-30"})
    out = rt.advance("2024-06-01T00:00:00") + rt.advance("2025-06-01T00:00:00")
    # lunar 2024's 腊月 has 29 days: 腊月廿九 is 2025-01-28 (除夕); 3 days before: 01-25
    assert [a.time for a in out] == ["2025-01-25T00:00:00+08:00"]


def test_a_31st_read_as_a_lunar_date_is_no_anniversary(tmp_path: Path) -> None:
    """A profile date on the 31st has no lunar reading: the fact is missing, nothing fires."""
    rt = sopkit.Runtime(_playbook(tmp_path, LUNAR.replace("CALENDAR", "lunar")))
    rt.add_profile({"customer_id": "c1", "birthday": "1990-08-31"})
    assert rt.advance("2024-01-01T00:00:00") + rt.advance("2025-01-01T00:00:00") == []


WORKDAYS = HEAD + """
[[rules]]
name = "guide"
on = "purchase"
delay = "3 workdays"
actions = [{ type = "send", channel = "wecom", template = "guide" }]
"""


def test_a_3_workdays_delay_skips_national_day_and_keeps_the_time_of_day(
        tmp_path: Path) -> None:
    """Bought Monday 2025-09-29 10:00: 9-30, then 10-01..10-08 off, so 10-10 at 10:00."""
    rt = sopkit.Runtime(_playbook(tmp_path, WORKDAYS))
    rt.ingest({"customer_id": "c1", "type": "purchase", "ts": "2025-09-29T10:00:00",
               "amount": "1"})
    out = rt.advance("2025-10-31T00:00:00")
    assert [(a.rule, a.time) for a in out] == [("guide", "2025-10-10T10:00:00+08:00")]


def test_a_workdays_delay_counts_a_make_up_sunday(tmp_path: Path) -> None:
    """Sunday 2025-09-28 is a make-up workday (调休): bought Friday 09-26, 1 workday is 09-28."""
    rt = sopkit.Runtime(_playbook(tmp_path, WORKDAYS.replace("3 workdays", "1 workday")))
    rt.ingest({"customer_id": "c1", "type": "purchase", "ts": "2025-09-26T15:30:00",
               "amount": "1"})
    out = rt.advance("2025-10-31T00:00:00")
    assert [a.time for a in out] == ["2025-09-28T15:30:00+08:00"]


FACTS = HEAD + """
[tags.day_off]
when = "is_holiday"

[[rules]]
name = "workday_call"
when = "is_workday"
actions = [{ type = "task", note = "call {{ customer_id }}" }]
"""


def test_is_holiday_tags_and_is_workday_fires_at_the_day_starts_they_change(
        tmp_path: Path) -> None:
    """Around 国庆节 2025: the workday rule fires on 09-28 (调休 Sunday) and 10-09, not between."""
    rt = sopkit.Runtime(_playbook(tmp_path, FACTS))
    out = rt.ingest({"customer_id": "c1", "type": "purchase", "ts": "2025-09-27T12:00:00",
                     "amount": "1"})  # a Saturday: a day off
    assert out == [] and "day_off" in rt.state("c1").tags
    out = rt.advance("2025-10-05T12:00:00")
    assert [a.time for a in out] == ["2025-09-28T00:00:00+08:00"]
    assert "day_off" in rt.state("c1").tags
    out = rt.advance("2025-10-09T12:00:00")
    assert [a.time for a in out] == ["2025-10-09T00:00:00+08:00"]
    assert "day_off" not in rt.state("c1").tags


QUIET = HEAD + """
[policy]
quiet_days = ["春节"]
quiet_hours = { start = "21:00", end = "09:00" }
caps = [{ max = 1, per = "1d" }]

[[rules]]
name = "thanks"
on = "purchase"
actions = [{ type = "send", channel = "wecom", template = "guide" }]
"""


def test_a_message_due_in_spring_festival_is_deferred_after_it_never_dropped(
        tmp_path: Path) -> None:
    """Bought 2026-02-16 22:00 (春节): quiet hours move it to 09:00, 春节 to 02-24 09:00."""
    rt = sopkit.Runtime(_playbook(tmp_path, QUIET))
    out = rt.ingest({"customer_id": "c1", "type": "purchase", "ts": "2026-02-16T22:00:00",
                     "amount": "1"})
    assert [(a.status, a.details["deliver_at"], a.details["reason"]) for a in out] == [
        ("deferred", "2026-02-24T09:00:00+08:00", "quiet hours 21:00-09:00; quiet days: 春节")]


def test_caps_count_a_quiet_days_deferral_at_its_delivery_day(tmp_path: Path) -> None:
    """Two 春节 purchases are both deferred to 02-24: the cap of 1 a day stops the second."""
    rt = sopkit.Runtime(_playbook(tmp_path, QUIET))
    out = rt.ingest({"customer_id": "c1", "type": "purchase", "ts": "2026-02-17T10:00:00",
                     "amount": "1"})
    out += rt.ingest({"customer_id": "c1", "type": "purchase", "ts": "2026-02-18T10:00:00",
                      "amount": "1"})
    assert [a.status for a in out] == ["deferred", "suppressed"]
    assert out[1].details["reason"].startswith("cap: 1 per 1d")


def test_an_unknown_quiet_day_is_a_located_check_error_with_the_nearest_name(
        tmp_path: Path) -> None:
    """`quiet_days = ["春节", "国庆"]` is an error at its line suggesting 国庆节."""
    path = tmp_path / "cn.toml"
    path.write_text(QUIET.replace('["春节"]', '["春节", "国庆"]'), encoding="utf-8")
    code, text = _run("check", str(path))
    assert code != 0
    assert "policy.quiet_days[1]: unknown holiday '国庆'" in text
    assert "did you mean '国庆节'?" in text and ":22:" in text


def test_a_2027_date_counts_monday_to_friday_and_warns_once_naming_the_year(
        tmp_path: Path) -> None:
    """No 2027 arrangement is installed: 3 workdays from Wed 2026-12-30 is Mon 2027-01-04,
    and simulate warns once that 2027 was counted Monday to Friday."""
    (tmp_path / "cn.toml").write_text(WORKDAYS, encoding="utf-8")
    (tmp_path / "events.jsonl").write_text("".join(
        f'{{"customer_id": "c{i}", "type": "purchase", "ts": "2026-12-30T10:00:00", '
        f'"amount": "1"}}\n' for i in range(3)), encoding="utf-8")
    out = tmp_path / "actions.jsonl"
    result = CliRunner().invoke(app, ["simulate", str(tmp_path / "cn.toml"), "--events",
                                      str(tmp_path / "events.jsonl"), "--end", "2027-01-31",
                                      "--out", str(out), "--output", "jsonl"])
    assert result.exit_code == 0, result.output
    sent = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert {a["time"] for a in sent} == {"2027-01-04T10:00:00+08:00"}
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(summary["calendar_warnings"]) == 1
    assert "no holiday arrangement for 2027" in summary["calendar_warnings"][0]
    assert result.stderr.count("warning: no holiday arrangement for 2027") == 1


@pytest.mark.parametrize("calendar", ["lunar", "lunar_of_birth"])
def test_calendar_on_another_metric_kind_is_a_check_error(tmp_path: Path,
                                                          calendar: str) -> None:
    """`calendar` belongs to days_to_anniversary only: on days_until it is an error."""
    path = tmp_path / "cn.toml"
    path.write_text(LUNAR.replace("CALENDAR", calendar).replace(
        '"days_to_anniversary"', '"days_until"'), encoding="utf-8")
    code, text = _run("check", str(path))
    assert code != 0 and "metrics.days_to_birthday.calendar" in text


CAMPAIGN = HEAD + """
[[campaigns]]
name = "monthly_digest"
every = "monthly first-workday 10:00"
until = "2026-01-31"
audience = "true"
actions = [{ type = "send", channel = "wecom", template = "guide" }]
"""


def test_a_first_workday_campaign_fires_after_national_day_and_on_a_make_up_day(
        tmp_path: Path) -> None:
    """`monthly first-workday 10:00`: 10-09 after 国庆节, and Sunday 2026-01-04 (调休)."""
    rt = sopkit.Runtime(_playbook(tmp_path, CAMPAIGN))
    rt.ingest({"customer_id": "c1", "type": "purchase", "ts": "2025-08-20T10:00:00",
               "amount": "1"})
    out = rt.advance("2026-03-31T00:00:00")
    assert [a.time for a in out] == ["2025-09-01T10:00:00+08:00", "2025-10-09T10:00:00+08:00",
                                     "2025-11-03T10:00:00+08:00", "2025-12-01T10:00:00+08:00",
                                     "2026-01-04T10:00:00+08:00"]


def test_check_warns_at_the_first_holiday_feature_when_the_data_ends_this_year(
        tmp_path: Path) -> None:
    """On 2026-12-05 with data to 2026, a `3 workdays` delay gets one located warning naming
    2026 and the upgrade; on 2026-06-01 with data beyond 2026 nothing would be said."""
    from sopkit._lang.cncal import holiday_years
    from sopkit._playbook.calendar_check import data_warnings

    loaded = _playbook(tmp_path, WORKDAYS)
    last = holiday_years()[1]
    found = data_warnings(loaded, dt.date(last, 12, 5))
    assert len(found) == 1 and found[0].severity == "warning"
    assert found[0].location.line == WORKDAYS.splitlines().index('delay = "3 workdays"') + 1
    assert f"ends with {last}" in found[0].message
    assert "pip install -U chinese-calendar" in found[0].suggestion
    assert data_warnings(loaded, dt.date(last - 1, 6, 1)) == []
    assert data_warnings(_playbook(tmp_path, LUNAR.replace("CALENDAR", "lunar")),
                         dt.date(last, 12, 5)) == []


def test_check_prints_the_holiday_data_warning_without_failing(tmp_path: Path) -> None:
    """`sopkit check` shows the warning on today's date and still exits 0 without --strict."""
    from sopkit._lang.cncal import holiday_years

    path = tmp_path / "cn.toml"
    path.write_text(QUIET, encoding="utf-8")
    code, text = _run("check", str(path))
    assert code == 0, text
    runs_out = holiday_years()[1] <= dt.date.today().year
    assert ("warning: policy.quiet_days: quiet_days reads China's holiday arrangement"
            in text) == runs_out


def test_check_strict_warns_about_a_campaign_in_a_quiet_holiday(tmp_path: Path) -> None:
    """--strict: a campaign `at` 2026-02-18 (春节) with quiet_days 春节 is a located warning."""
    path = tmp_path / "cn.toml"
    text = QUIET + """
[[campaigns]]
name = "new_year_sale"
at = "2026-02-18T10:00"
audience = "true"
actions = [{ type = "send", channel = "wecom", template = "guide" }]
"""
    path.write_text(text, encoding="utf-8")
    code, out = _run("check", "--strict", str(path))
    assert code == 1
    assert "campaigns[0].at: campaign 'new_year_sale' fires on 2026-02-18, a day off of 春节" \
        in out
    path.write_text(text.replace("2026-02-18", "2026-03-18"), encoding="utf-8")
    code, out = _run("check", "--strict", str(path))
    assert "new_year_sale" not in out


def test_is_workday_wakes_a_customer_only_on_the_days_its_value_changes(
        tmp_path: Path) -> None:
    """Evaluations around 国庆节 2025 happen only on the day starts where is_workday flips."""
    rt = sopkit.Runtime(_playbook(tmp_path, FACTS))
    seen: list[str] = []
    shanghai = ZoneInfo("Asia/Shanghai")
    rt.observe(lambda obs: seen.append(
        dt.datetime.fromtimestamp(obs.now, shanghai).date().isoformat()), "evaluation")
    rt.ingest({"customer_id": "c1", "type": "purchase", "ts": "2025-09-27T12:00:00",
               "amount": "1"})
    rt.advance("2025-10-14T12:00:00")
    # Sat 09-27 off; Sun 09-28 .. Tue 09-30 work; 10-01 .. 10-08 off; Thu 10-09 .. Sat 10-11
    # work (10-11 is a make-up Saturday); Sun 10-12 off; Mon 10-13 work
    assert seen == ["2025-09-27", "2025-09-28", "2025-10-01", "2025-10-09", "2025-10-12",
                    "2025-10-13"]


def test_a_lunar_birthday_wakes_its_customer_only_around_each_anniversary(
        tmp_path: Path) -> None:
    """`days_to_birthday == 3` on 八月十五: woken 3 and 2 days before 中秋, not the day after
    (the jump from 0 back up leaves `== 3` false: no condition can flip then)."""
    rt = sopkit.Runtime(_playbook(tmp_path, LUNAR.replace("CALENDAR", "lunar")))
    seen: list[str] = []
    shanghai = ZoneInfo("Asia/Shanghai")
    rt.observe(lambda obs: seen.append(
        dt.datetime.fromtimestamp(obs.now, shanghai).date().isoformat()), "evaluation")
    rt.add_profile({"customer_id": "c1", "birthday": "1990-08-15"})
    rt.advance("2024-01-01T00:00:00")
    rt.advance("2025-12-31T00:00:00")
    # 中秋: 2024-09-17, 2025-10-06
    assert seen == ["2024-01-01", "2024-09-14", "2024-09-15", "2025-10-03", "2025-10-04"]


def test_check_strict_names_the_birthdays_whose_greeting_waits_for_a_quiet_holiday(
        tmp_path: Path) -> None:
    """--strict: 3 days before birthdays, quiet 春节 2026 (02-15..23) holds 02-18..26 back."""
    from sopkit._lang.cncal import holiday_years

    path = tmp_path / "cn.toml"
    quiet = LUNAR.replace("CALENDAR", "gregorian") + '\n[policy]\nquiet_days = ["春节"]\n'
    path.write_text(quiet, encoding="utf-8")
    code, out = _run("check", "--strict", str(path))
    assert code == 1
    text = " ".join(out.split())
    year = min(dt.date.today().year, holiday_years()[1])
    assert (f"rules[0].when: rule 'birthday_soon' sends 3 days before each days_to_birthday "
            f"anniversary; in {year} that day is a day off quiet_days holds back for "
            "birthdays") in text
    if year == 2026:
        assert "birthdays 02-18 to 02-26 (春节): those messages wait" in text
    path.write_text(LUNAR.replace("CALENDAR", "lunar") + '\n[policy]\nquiet_days = ["春节"]\n',
                    encoding="utf-8")
    text = " ".join(_run("check", "--strict", str(path))[1].split())
    if year == 2026:  # 02-18 is lunar 1-02 (春节 is 02-17); 02-26 is lunar 1-10
        assert "birthdays lunar 1-02 to lunar 1-10 (春节)" in text
    path.write_text(LUNAR.replace("CALENDAR", "gregorian"), encoding="utf-8")
    assert "rule 'birthday_soon' sends" not in _run("check", "--strict", str(path))[1]


def test_run_warns_once_in_its_log_when_it_counts_a_year_without_holiday_data(
        tmp_path: Path) -> None:
    """`sopkit run` past the data's last year logs the Monday-to-Friday warning once."""
    (tmp_path / "cn.toml").write_text(WORKDAYS, encoding="utf-8")
    (tmp_path / "events.jsonl").write_text("".join(
        f'{{"customer_id": "c{i}", "type": "purchase", "ts": "2026-12-30T10:00:00", '
        f'"amount": "1"}}\n' for i in range(3)), encoding="utf-8")
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "sopkit", "run", str(tmp_path / "cn.toml"),
                             "--store", str(tmp_path / "s.db"), "--events",
                             str(tmp_path / "events.jsonl"), "--once", "--clock",
                             "2027-01-31"], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).parent.parent)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("no holiday arrangement for 2027") == 1, result.stderr
