"""The limit: the retail playbook (playbooks/retail.toml + rules/churn-scorecard.toml) written
by hand as straight-line Python, with no sopkit import.

It is what sopkit could at best cost in one Python process on the same input: the same work
(read the JSONL, keep per-customer state, evaluate the playbook on a virtual clock, write the
same action records) with everything sopkit does generically (facts vectors, an engine,
templates, masking, metric objects) replaced by code specialised to this one playbook:

- per-customer state is one `__slots__` record of plain fields, lists and deques;
- metrics are updated in place: last/first purchase day, a purchase count, 90-day deques of
  purchase and complaint times, one 365-day deque of (time, amount in cents) with its running
  sum (amounts are exact integer cents, as sopkit's Decimals are exact);
- each evaluation follows docs/semantics.md round by round (scores, then tags, then the
  stage, each change starting a new round; entry rules re-armed by any round that sees them
  false; cancel_if, due delayed actions, then rules in priority order, a fact change
  starting a new round);
- a customer is woken only at the instants where one of the playbook's conditions can flip:
  the day starts where days_since_purchase reaches 61, 90, 121 or 181, where
  days_since_first_purchase reaches 31, where days_to_birthday reaches 3 or 2 (not while the
  customer is dormant: the birthday rule cannot fire then, and only a purchase, evaluated
  anyway, ends dormancy); the instants where purchases_90d or complaints_90d drop to 0,
  purchases_365d drops below 4 or spend_365d below 300; and the due time of a delayed
  action. (sopkit wakes at every window expiry and at more day starts; those extra wake-ups
  cannot change anything.)
- the two campaigns, as sopkit fires them (after the wake-ups due at the same instant; members
  in customer-id order; audience facts at the firing's instant): `double12_coupon` once on
  1997-12-12 at 10:00 to customers who bought within 90 days and are not dormant, split by the
  `double12` experiment, and `weekly_owner_reminder` every Monday at 09:00 until 1998-12-31,
  a task for each customer tagged both 轻度流失 and 高价值客户;
- the playbook's policy, in sopkit's order, on each message and task: consent (the `opt_out`
  profile attribute), the experiments' holdouts (SHA-256 bucket),
  quiet hours 21:00-09:00, the caps (2 messages per 7 days, 1 WeCom message per day, counted
  at delivery time) and 20 tasks per consultant per day.

Record layout, keys and order are sopkit's, so with the benchmark's generated input the
output is byte-identical to `sopkit simulate --out` (masking is a no-op on it: no phone
numbers or e-mail addresses reach the records). Specialised to the generator's input: `ts` is
local time `YYYY-MM-DDTHH:MM:SS` (other ISO forms are parsed the slow way) in Asia/Shanghai,
which has had no daylight-saving time since 1991 (+08:00, asserted), and events are sorted.

    python benchmarks/limit.py --events E --profiles P --end 2025-01-01T00:00:00 --out FILE

prints a summary JSON line (`by_rule`, `actions`, `pending_at_end`, `stages`, `tags`, …) in
sopkit's layout; `--no-records` skips building and writing the records (the logic alone).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import heapq
import json
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any, TextIO

PK = "retail:1"
DAY = 86400
UTC_OFFSET = 8 * 3600  # Asia/Shanghai, no DST since 1991
DAY_START = 9 * 3600  # day_starts = "09:00"
EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
W90 = 90 * DAY
W365 = 365 * DAY
SPEND_300 = 30000  # cents
GUIDE_DELAY = 3 * DAY
EARLIEST = int(dt.datetime(1992, 1, 1, tzinfo=dt.UTC).timestamp())

# rules, in the IR's index order; ORDER is priority first, then file order
BIRTHDAY, GUIDE, OWNER_CALL, CLEAR_CALLED, MILD, SEVERE, MATURE = range(7)
NAMES = ["birthday_coupon", "post_purchase_guide", "owner_call_quiet", "clear_called",
         "mild_churn_recall", "severe_churn_recall", "mature_thanks"]
ORDER = [BIRTHDAY, SEVERE, OWNER_CALL, GUIDE, CLEAR_CALLED, MILD, MATURE]
ACTIONS = [["send"], ["send"], ["task", "tag"], ["untag"], ["send"], ["send", "task"],
           ["send"]]
COOLDOWN: list[int | None] = [300 * DAY, None, None, None, 60 * DAY, None, 180 * DAY]
MAX_TIMES: list[int | None] = [None, None, None, None, None, 2, None]
STAGES = ["dormant", "mature", "growth", "seed"]
TAGS = ["轻度流失", "重度流失", "高价值客户", "复购客户", "新客", "投诉过", "已回访"]
MILD_T, SEVERE_T, HIGH_T, REPEAT_T, NEW_T, COMPLAINED_T, CALLED_T = TAGS
CANCEL_REASON = 'cancel_if: "投诉过" in tags'
GUIDE_PARAMS = {"url": "https://example.com/guide"}
MAX_ROUNDS = 64
# [policy] and [experiments]
QUIET_START, QUIET_END = 21 * 3600, 9 * 3600  # local seconds of the day
QUIET_REASON = "quiet hours 21:00-09:00"
WEEK_CAP, WEEK = 2, 7 * DAY
WECOM_CAP = 1
TASK_CAPACITY = 20
HOLDOUT = 0.1
HOLDOUT_REASON = "holdout: experiment recall_coupon"
# [[campaigns]], in file order, after the rules: their counts and keys share the rules' tables
D12, WEEKLY = 7, 8
NAMES += ["double12_coupon", "weekly_owner_reminder"]
ACTIONS += [["send"], ["task"]]
D12_AT = int(dt.datetime(1997, 12, 12, 10, tzinfo=dt.timezone(dt.timedelta(seconds=UTC_OFFSET))
                         ).timestamp())
D12_REASON = "holdout: experiment double12"
WEEKLY_UNTIL = dt.date(1998, 12, 31).toordinal()  # the last local day with a firing


class Customer:
    """One customer's state: profile, metric state, derived facts, rule bookkeeping."""

    __slots__ = ("anniversary", "attempts", "birthday", "c90", "cid", "computed", "fired",
                 "first_day", "held_out", "last_day", "last_fired", "name", "opt_out", "owner",
                 "p90", "pending", "score", "sent", "spend", "stage", "sticky", "tags", "total",
                 "truth", "variant", "w365", "wake_at")

    def __init__(self, cid: str) -> None:
        self.cid = cid
        self.name: str | None = None
        self.owner: str | None = None
        self.birthday: dt.date | None = None
        self.anniversary = -1  # ordinal of the next anniversary, cached; -1 unknown
        self.last_day: int | None = None
        self.first_day: int | None = None
        self.total = 0
        self.p90: deque[int] = deque()
        self.c90: deque[int] = deque()
        self.w365: deque[tuple[int, int]] = deque()
        self.spend = 0
        self.score = 0.0
        self.tags: set[str] = set()
        self.sticky = False
        self.stage: str | None = None
        self.computed: str | None = None
        self.truth = [False] * 7
        self.fired = [0] * 7
        self.attempts = [0] * 7
        self.last_fired: list[int | None] = [None] * 7
        # delayed post_purchase_guide firings: [due, seq, occurrence, facts, scheduled]
        self.pending: list[list[Any]] = []
        self.wake_at: int | None = None
        self.opt_out: frozenset[str] = frozenset()
        self.sent: deque[tuple[int, str]] = deque()  # (delivery time, channel), 7 days
        digest = hashlib.sha256(f"recall_coupon:{cid}".encode()).digest()
        place = int.from_bytes(digest[:8], "big") / 2**64
        self.held_out = place < HOLDOUT
        # the rest split evenly between the experiment's two variants
        self.variant = "holdout" if self.held_out else (
            "coupon10" if (place - HOLDOUT) / (1 - HOLDOUT) < 0.5 else "coupon20")


def _anniversary(birth: dt.date, year: int) -> dt.date:
    try:
        return birth.replace(year=year)
    except ValueError:  # 29 February falls on 28 February in common years
        return dt.date(year, 2, 28)


class Limit:
    """The retail playbook over a sorted history, on a virtual clock."""

    def __init__(self, out: TextIO | None) -> None:
        self.out = out
        self.customers: dict[str, Customer] = {}
        self.unstarted: list[str] = []
        self.heap: list[tuple[int, str]] = []
        self.now: int | None = None
        self.seq = 0
        self.counts = [{"planned": 0, "deferred": 0, "suppressed": 0, "holdout": 0,
                        "cancelled": 0} for _ in NAMES]
        self.acted: list[int] = []  # the campaigns that have acted, in that order
        self.firings: list[tuple[int, int]] = []  # (instant, campaign) due
        self.ids: list[str] = []  # the customer ids, sorted (campaign members' order)
        self.tasks: dict[str, dict[int, int]] = {}  # staff -> playbook day -> tasks
        self.task_today = 0
        self.dates: dict[int, str] = {}
        self.day_epoch: dict[str, int] = {}

    # ---- time --------------------------------------------------------------------------

    def fmt(self, ts: int) -> str:
        """Local ISO 8601 with offset, as sopkit's Calendar.format."""
        days, secs = divmod(ts + UTC_OFFSET, DAY)
        date = self.dates.get(days)
        if date is None:
            date = self.dates[days] = dt.date.fromordinal(days + EPOCH_ORDINAL).isoformat()
        return f"{date}T{secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}+08:00"

    def parse_ts(self, text: str) -> int:
        if len(text) == 19 and text[10] == "T":
            base = self.day_epoch.get(text[:10])
            if base is None:
                ordinal = dt.date.fromisoformat(text[:10]).toordinal()
                base = self.day_epoch[text[:10]] = (ordinal - EPOCH_ORDINAL) * DAY - UTC_OFFSET
            ts = base + int(text[11:13]) * 3600 + int(text[14:16]) * 60 + int(text[17:19])
        else:
            value = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
            if value.tzinfo is None:
                value = value.replace(tzinfo=dt.timezone(dt.timedelta(seconds=UTC_OFFSET)))
            ts = int(value.timestamp())
        if ts < EARLIEST:
            raise SystemExit(f"limit: {text} is before 1992: Asia/Shanghai had DST then")
        return ts

    # ---- input -------------------------------------------------------------------------

    def add_profile(self, record: dict[str, Any]) -> None:
        cid = str(record["customer_id"])
        c = self.customers.get(cid)
        if c is None:
            c = self.customers[cid] = Customer(cid)
            self.unstarted.append(cid)
        if record.get("name") not in (None, ""):
            c.name = str(record["name"])
        if record.get("birthday") not in (None, ""):
            c.birthday = dt.date.fromisoformat(str(record["birthday"])[:10])
            c.anniversary = -1
        if record.get("owner") not in (None, ""):
            c.owner = str(record["owner"])
        if "opt_out" in record:
            raw = record["opt_out"]
            c.opt_out = frozenset(str(x) for x in raw) if isinstance(raw, list) else \
                frozenset(x.strip() for x in str(raw).split("|") if x.strip())

    def start(self, ts: int) -> None:
        self.now = ts
        for cid in self.unstarted:
            self.customers[cid].wake_at = ts
            heapq.heappush(self.heap, (ts, cid))
        self.unstarted.clear()
        # each campaign's first firing at or after the start
        if ts <= D12_AT:
            self.firings.append((D12_AT, D12))
        day = (ts + UTC_OFFSET) // DAY  # local days since 1970-01-01, a Thursday
        monday = day + (4 - day % 7) % 7  # (day + 3) % 7 is the weekday, Monday 0
        first = monday * DAY + DAY_START - UTC_OFFSET
        if first < ts:
            first += 7 * DAY
        self.weekly(first)
        heapq.heapify(self.firings)

    def weekly(self, when: int) -> None:
        """Queue weekly_owner_reminder's firing at `when` unless it is past `until`."""
        if (when + UTC_OFFSET) // DAY + EPOCH_ORDINAL <= WEEKLY_UNTIL:
            heapq.heappush(self.firings, (when, WEEKLY))

    def advance(self, ts: int) -> None:
        """Wake-ups due by the next firing (at the same instant too), that firing, and so on
        until `ts`."""
        heap = self.heap
        customers = self.customers
        firings = self.firings
        while True:
            bound = firings[0][0] if firings and firings[0][0] <= ts else ts
            while heap and heap[0][0] <= bound:
                when, cid = heapq.heappop(heap)
                c = customers[cid]
                if c.wake_at != when:
                    continue  # superseded
                c.wake_at = None
                self.now = when
                self.tick(c, when, False)
            if not firings or firings[0][0] > ts:
                break
            when, campaign = heapq.heappop(firings)
            self.now = when
            if campaign == WEEKLY:
                self.weekly(when + 7 * DAY)  # Asia/Shanghai: no DST, a week is 7 days
            self.fire_campaign(campaign, when)
        if self.now is None or ts > self.now:
            self.now = ts

    def event(self, cid: str, etype: str, ts: int, record: dict[str, Any]) -> None:
        if self.now is None:
            self.start(ts)
        elif ts < self.now:
            raise SystemExit(f"limit: events out of order at {record.get('ts')}")
        self.advance(ts)
        c = self.customers.get(cid)
        if c is None:
            c = self.customers[cid] = Customer(cid)
        day = (ts - (DAY_START - UTC_OFFSET)) // DAY + EPOCH_ORDINAL
        if etype == "purchase":
            c.last_day = day
            if c.first_day is None:
                c.first_day = day
            c.total += 1
            p90 = c.p90
            while p90 and ts - p90[0] >= W90:
                p90.popleft()
            p90.append(ts)
            w365 = c.w365
            while w365 and ts - w365[0][0] >= W365:
                c.spend -= w365.popleft()[1]
            amount = record.get("amount")
            cents = 0 if amount in (None, "") else round(float(amount) * 100)
            w365.append((ts, cents))
            c.spend += cents
            self.tick(c, ts, True)
        elif etype == "complaint":
            c90 = c.c90
            while c90 and ts - c90[0] >= W90:
                c90.popleft()
            c90.append(ts)
            self.tick(c, ts, False)
        else:
            raise SystemExit(f"limit: unexpected event type {etype!r}")

    # ---- records -----------------------------------------------------------------------

    def record(self, c: Customer, now: int, r: int, index: int, status: str, trigger: str,
               occurrence: int, details: dict[str, Any], facts: dict[str, Any]) -> None:
        counts = self.counts[r]
        if r >= D12 and r not in self.acted:
            self.acted.append(r)
        counts[status] += 1
        if self.out is None:
            return
        # a campaign's occurrence is its firing's instant
        key = f"{PK}:campaign:{NAMES[r]}:{occurrence}:{c.cid}:{index}" if r >= D12 else \
            f"{PK}:{NAMES[r]}:{c.cid}:{occurrence}:{index}"
        head: dict[str, Any] = {
            "time": self.fmt(now), "customer_id": c.cid, "rule": NAMES[r],
            "action": ACTIONS[r][index], "status": status, "trigger": trigger, "key": key,
        }
        head.update(details)
        head["facts"] = facts
        self.out.write(json.dumps(head, ensure_ascii=False) + "\n")

    def message(self, c: Customer, now: int, r: int, index: int, trigger: str,
                occurrence: int, details: dict[str, Any], facts: dict[str, Any],
                channel: str) -> None:
        """A send through the policy: consent, holdout, quiet hours, then the caps."""
        reason = ""
        status = "planned"
        if c.opt_out and ("all" in c.opt_out or channel in c.opt_out):
            status, reason = "suppressed", "opt-out: " + ("all" if "all" in c.opt_out
                                                          else channel)
        elif r == MILD and c.held_out:
            status, reason = "holdout", HOLDOUT_REASON
        elif r == D12 and details.get("variant") == "holdout":
            status, reason = "holdout", D12_REASON
        deliver = now
        if not reason:
            second = (now + UTC_OFFSET) % DAY
            if second >= QUIET_START or second < QUIET_END:
                deliver = now - second + QUIET_END + (DAY if second >= QUIET_START else 0)
            sent = c.sent
            while sent and sent[0][0] <= deliver - WEEK:
                sent.popleft()
            if sum(1 for ts, _ in sent if ts <= deliver) >= WEEK_CAP:
                status, reason = "suppressed", "cap: 2 per 7d on all channels reached"
            elif channel == "wecom" and sum(
                    1 for ts, ch in sent if ch == "wecom" and deliver - DAY < ts <= deliver
            ) >= WECOM_CAP:
                status, reason = "suppressed", "cap: 1 per 1d on wecom reached"
            else:
                sent.append((deliver, channel))
                if deliver != now:
                    status, reason = "deferred", QUIET_REASON
        if reason and self.out is not None:
            if status == "deferred":
                details["deliver_at"] = self.fmt(deliver)
            details["reason"] = reason
        self.record(c, now, r, index, status, trigger, occurrence, details, facts)

    def task(self, c: Customer, now: int, r: int, index: int, trigger: str, occurrence: int,
             details: dict[str, Any], facts: dict[str, Any], due: int) -> None:
        """A task through the policy: the owner's daily capacity (no quiet hours)."""
        staff = c.owner
        if staff is None:
            self.record(c, now, r, index, "planned", trigger, occurrence, details, facts)
            return
        today = (now - (DAY_START - UTC_OFFSET)) // DAY + EPOCH_ORDINAL
        if today > self.task_today:  # forget past days
            self.task_today = today
            for name in list(self.tasks):
                kept = {d: n for d, n in self.tasks[name].items() if d >= today}
                if kept:
                    self.tasks[name] = kept
                else:
                    del self.tasks[name]
        days = self.tasks.setdefault(staff, {})
        day = today
        while days.get(day, 0) >= TASK_CAPACITY:
            day += 1
        days[day] = days.get(day, 0) + 1
        if day == today:
            self.record(c, now, r, index, "planned", trigger, occurrence, details, facts)
            return
        deliver = (day - EPOCH_ORDINAL) * DAY + DAY_START - UTC_OFFSET
        if self.out is not None:
            details["due"] = self.fmt(deliver + due)
            details["deliver_at"] = self.fmt(deliver)
            details["reason"] = f"task capacity {TASK_CAPACITY}/day reached for {staff}"
        self.record(c, now, r, index, "deferred", trigger, occurrence, details, facts)

    def blocked_records(self, c: Customer, now: int, r: int, occurrence: int, trigger: str,
                        status: str, reason: str, facts: dict[str, Any]) -> None:
        for index in range(len(ACTIONS[r])):
            self.record(c, now, r, index, status, trigger, occurrence, {"reason": reason},
                        facts)

    def execute(self, c: Customer, now: int, r: int, occurrence: int, trigger: str,
                facts: dict[str, Any], dsp: int | None, p365: int,
                scheduled: int | None = None) -> bool:
        """Carry out rule r's actions; True if one changed a fact (a tag)."""
        name = c.name or ""
        out = self.out is not None
        details: dict[str, Any] = {}
        if r == BIRTHDAY:
            if out:
                details = {"channel": "wecom", "template": "birthday",
                           "params": {"coupon": "BDAY20"},
                           "message": f"{name or '亲爱的顾客'}，生日快乐！送您一张生日券 BDAY20，"
                                      "3 天内有效。"}
            self.message(c, now, r, 0, trigger, occurrence, details, facts, "wecom")
            return False
        if r == GUIDE:
            if out:
                details = {"fired_at": self.fmt(scheduled or now), "channel": "sms",
                           "template": "guide", "params": GUIDE_PARAMS,
                           "message": f"{name or '您好'}，感谢您的购买！这是使用指南："
                                      "https://example.com/guide，有问题随时找我。"}
            self.message(c, now, r, 0, trigger, occurrence, details, facts, "sms")
            return False
        if r == OWNER_CALL:
            if out:
                details = {"assignee": c.owner, "due": self.fmt(now + 2 * DAY),
                           "note": f"{name}（{c.cid}）已 {dsp} 天未购买，请电话回访。"}
            self.task(c, now, r, 0, trigger, occurrence, details, facts, 2 * DAY)
            self.record(c, now, r, 1, "planned", trigger, occurrence, {"tag": CALLED_T}, facts)
            changed = CALLED_T not in c.tags
            c.tags.add(CALLED_T)
            return changed
        if r == CLEAR_CALLED:
            self.record(c, now, r, 0, "planned", trigger, occurrence, {"tag": CALLED_T}, facts)
            changed = CALLED_T in c.tags
            c.tags.discard(CALLED_T)
            return changed
        if r == MILD:
            if out:
                coupon = "COME20" if c.variant == "coupon20" else "COME10"
                details = {"variant": c.variant, "channel": "sms", "template": "recall_mild",
                           "params": {"coupon": coupon},
                           "message": f"{name or '您好'}，好久不见！送您一张 {coupon} 回归券，"
                                      "期待再次光临。"}
            self.message(c, now, r, 0, trigger, occurrence, details, facts, "sms")
            return False
        if r == SEVERE:
            if out:
                details = {"channel": "wecom", "template": "recall_severe",
                           "params": {"coupon": "VIP30"},
                           "message": f"{name or '您好'}，我们很想念您。专属顾问将联系您，"
                                      "并为您保留 VIP30 专属礼遇。"}
            self.message(c, now, r, 0, trigger, occurrence, details, facts, "wecom")
            if out:
                score = round(c.score, 2)
                shown = str(int(score)) if score == int(score) else f"{score:.2f}".rstrip("0")
                details = {"assignee": c.owner, "due": self.fmt(now + DAY),
                           "note": f"重度流失客户 {name}：流失评分 {shown}，请一对一联系。"}
            self.task(c, now, r, 1, trigger, occurrence, details, facts, DAY)
            return False
        # MATURE
        if out:
            details = {"channel": "wecom", "template": "mature_thanks", "params": {},
                       "message": f"{name or '您好'}，感谢一年来的 {p365} 次光临！"
                                  "您已升级为成熟会员。"}
        self.message(c, now, r, 0, trigger, occurrence, details, facts, "wecom")
        return False

    def fire_campaign(self, campaign: int, when: int) -> None:
        """One firing: the audience at `when`, in customer-id order, each member's action."""
        today = (when - (DAY_START - UTC_OFFSET)) // DAY + EPOCH_ORDINAL
        customers = self.customers
        if len(self.ids) != len(customers):
            self.ids = sorted(customers)
        out = self.out is not None
        firing = self.fmt(when) if out else ""
        for cid in self.ids:
            c = customers[cid]
            dsp = None if c.last_day is None else today - c.last_day
            details: dict[str, Any] = {}
            facts: dict[str, Any] = {}
            if campaign == D12:  # days_since_purchase <= 90 and stage != "dormant"
                if dsp is None or dsp > 90 or c.stage is None or c.stage == "dormant":
                    continue
                place = int.from_bytes(hashlib.sha256(f"double12:{cid}".encode()).digest()[:8],
                                       "big") / 2**64
                variant = "holdout" if place < HOLDOUT else (
                    "coupon" if (place - HOLDOUT) / (1 - HOLDOUT) < 0.5 else "gift")
                if out:
                    facts = {"stage": c.stage, "days_since_purchase": dsp}
                    details = {"firing": firing, "variant": variant, "channel": "wecom"}
                    if variant == "gift":
                        details.update(template="double12_gift",
                                       params={"coupon": "D12-30", "gift": "定制帆布袋"},
                                       message="双十二感谢有您！12 月 12 日到店即送 定制帆布袋。")
                    else:
                        details.update(template="double12", params={"coupon": "D12-30"},
                                       message="双十二快乐！近期光临的老朋友专享 D12-30 满减券，"
                                               "12 月 12 日当天有效。")
                else:
                    details = {"variant": variant}
                self.message(c, when, D12, 0, "campaign", when, details, facts, "wecom")
                continue
            # "轻度流失" in tags and "高价值客户" in tags
            if MILD_T not in c.tags or HIGH_T not in c.tags:
                continue
            if out:
                facts = {"tags": sorted(c.tags)}
                score = round(c.score, 2)
                shown = str(int(score)) if score == int(score) else f"{score:.2f}".rstrip("0")
                details = {"firing": firing, "assignee": c.owner, "due": self.fmt(when + 3 * DAY),
                           "note": f"本周请跟进 {c.name or ''}（{cid}）：流失评分 {shown}，"
                                   f"已 {dsp} 天未购买。"}
            self.task(c, when, WEEKLY, 0, "campaign", when, details, facts, 3 * DAY)

    def cancel(self, c: Customer, now: int, due: list[list[Any]]) -> None:
        """cancel_if "投诉过" in tags: drop every pending and due guide, recording each."""
        for item in [*c.pending, *due]:
            self.blocked_records(c, now, GUIDE, item[2], "delayed", "cancelled",
                                 CANCEL_REASON, item[3])
        c.pending.clear()
        due.clear()

    # ---- one evaluation ----------------------------------------------------------------

    def tick(self, c: Customer, now: int, purchase: bool) -> None:
        today = (now - (DAY_START - UTC_OFFSET)) // DAY + EPOCH_ORDINAL
        # metrics at `now`: constant during the evaluation
        p90 = c.p90
        while p90 and now - p90[0] >= W90:
            p90.popleft()
        c90 = c.c90
        while c90 and now - c90[0] >= W90:
            c90.popleft()
        w365 = c.w365
        while w365 and now - w365[0][0] >= W365:
            c.spend -= w365.popleft()[1]
        n_p90, n_c90, n_p365, spend, total = len(p90), len(c90), len(w365), c.spend, c.total
        dsp = None if c.last_day is None else today - c.last_day
        dsfp = None if c.first_day is None else today - c.first_day
        dtb: int | None = None
        if c.birthday is not None:
            if c.anniversary < today:
                birth = c.birthday
                year = dt.date.fromordinal(today).year
                anniv = _anniversary(birth, year).toordinal()
                if anniv < today:
                    anniv = _anniversary(birth, year + 1).toordinal()
                c.anniversary = anniv
            dtb = c.anniversary - today
        # what metrics alone decide: the score, the dynamic tags, the computed stage
        score = ((30.0 if dsp is not None and dsp > 60 else 0.0)
                 + (30.0 if dsp is not None and dsp > 120 else 0.0)
                 + (20.0 if n_p90 == 0 else 0.0) + (20.0 if n_c90 > 0 else 0.0))
        high = spend >= SPEND_300
        repeat = total >= 2
        new = dsfp is not None and dsfp <= 30
        complained = n_c90 > 0
        if dsp is not None and dsp > 180:
            computed = "dormant"
        elif n_p365 >= 4 or high:
            computed = "mature"
        elif repeat:
            computed = "growth"
        else:
            computed = "seed"

        due = sorted((p for p in c.pending if p[0] <= now), key=lambda p: (p[0], p[1]))
        if due:
            c.pending = [p for p in c.pending if p[0] > now]
        on_rules = [GUIDE, CLEAR_CALLED] if purchase else []
        tags = c.tags
        truth = c.truth
        for _round in range(MAX_ROUNDS):
            stage = c.stage
            # entry conditions over the facts of this round
            holds = [
                dtb == 3 and stage is not None and stage != "dormant",  # birthday_coupon
                total == 1,  # post_purchase_guide (on purchase)
                dsp is not None and dsp >= 90 and REPEAT_T in tags and CALLED_T not in tags,
                CALLED_T in tags,  # clear_called (on purchase)
                MILD_T in tags,  # mild_churn_recall
                SEVERE_T in tags and stage is not None and stage != "seed",
                stage == "mature",  # mature_thanks
            ]
            for r in (BIRTHDAY, OWNER_CALL, MILD, SEVERE, MATURE):
                if not holds[r]:
                    truth[r] = False  # seen false: armed again
            # scores, then tags, then the stage
            if score != c.score:
                c.score = score
                continue
            changed = False
            s = c.score
            for tag, on in ((MILD_T, 50 <= s < 80), (SEVERE_T, s >= 80), (HIGH_T, high),
                            (REPEAT_T, repeat), (NEW_T, new)):
                if on and tag not in tags:
                    tags.add(tag)
                    changed = True
                elif not on and tag in tags:
                    tags.discard(tag)
                    changed = True
            was = c.sticky
            c.sticky = complained
            if complained and not was and COMPLAINED_T not in tags:
                tags.add(COMPLAINED_T)
                changed = True
            if computed != c.computed:
                c.computed = c.stage = computed
                changed = True
            if changed:
                continue
            if COMPLAINED_T in tags and (c.pending or due):
                self.cancel(c, now, due)
            while due:  # the guide only sends: it changes no fact
                item = due.pop(0)
                self.execute(c, now, GUIDE, item[2], "delayed", item[3], dsp, n_p365, item[4])
            if not self.fire(c, now, holds, on_rules, dsp, dtb, total, n_p365):
                if COMPLAINED_T in tags and c.pending:
                    self.cancel(c, now, due)
                break
        else:
            raise SystemExit(f"limit: customer {c.cid} did not settle")
        self.schedule(c, now, today)

    def fire(self, c: Customer, now: int, holds: list[bool], on_rules: list[int],
             dsp: int | None, dtb: int | None, total: int, p365: int) -> bool:
        """Rules in order; True as soon as one changes a fact."""
        truth = c.truth
        for r in ORDER:
            if r in (GUIDE, CLEAR_CALLED):
                if r not in on_rules:
                    continue
                on_rules.remove(r)
                if not holds[r]:
                    continue
                trigger = "event:purchase"
            else:
                was = truth[r]
                truth[r] = holds[r]
                if not holds[r] or was:
                    continue
                trigger = "entry"
            facts = self.facts(c, r, dsp, dtb, total)
            c.attempts[r] += 1
            attempt = c.attempts[r]
            reason = ""
            limit = MAX_TIMES[r]
            cooldown = COOLDOWN[r]
            last = c.last_fired[r]
            if limit is not None and c.fired[r] >= limit:
                reason = f"max_times {limit} reached"
            elif cooldown is not None and last is not None and now - last < cooldown:
                reason = f"cooldown until {self.fmt(last + cooldown)}"
            if reason:
                self.blocked_records(c, now, r, attempt, trigger, "suppressed", reason, facts)
                continue
            c.fired[r] += 1
            c.last_fired[r] = now
            if r == GUIDE:
                self.seq += 1
                c.pending.append([now + GUIDE_DELAY, self.seq, attempt, facts, now])
                continue
            if self.execute(c, now, r, attempt, trigger, facts, dsp, p365):
                return True
        return False

    def facts(self, c: Customer, r: int, dsp: int | None, dtb: int | None,
              total: int) -> dict[str, Any]:
        """What rule r's condition read, as sopkit's `facts` field."""
        if self.out is None:
            return {}
        if r == BIRTHDAY:
            return {"stage": c.stage, "days_to_birthday": dtb}
        if r == GUIDE:
            return {"purchases_total": total}
        if r == OWNER_CALL:
            return {"days_since_purchase": dsp, "tags": sorted(c.tags)}
        if r == SEVERE:
            return {"stage": c.stage, "tags": sorted(c.tags)}
        if r == MATURE:
            return {"stage": c.stage}
        return {"tags": sorted(c.tags)}  # clear_called, mild_churn_recall

    def schedule(self, c: Customer, now: int, today: int) -> None:
        """Wake the customer at the next instant one of the playbook's conditions can flip."""
        best = -1
        for p in c.pending:
            if p[0] > now and (best < 0 or p[0] < best):
                best = p[0]
        if c.p90:
            best = _earlier(best, c.p90[-1] + W90, now)  # purchases_90d == 0 becomes true
        if c.c90:
            best = _earlier(best, c.c90[-1] + W90, now)  # complaints_90d > 0 becomes false
        w365 = c.w365
        if len(w365) >= 4:
            best = _earlier(best, w365[-4][0] + W365, now)  # purchases_365d >= 4 ends
        if c.spend >= SPEND_300:
            left = c.spend
            for ts, cents in w365:
                left -= cents
                if left < SPEND_300:
                    best = _earlier(best, ts + W365, now)  # spend_365d >= 300 ends
                    break
        day = -1
        if c.last_day is not None:
            for v in (61, 90, 121, 181):  # > 60, >= 90, > 120, > 180
                if c.last_day + v > today:
                    day = c.last_day + v
                    break
        if c.first_day is not None and c.first_day + 31 > today:  # <= 30 ends
            day = c.first_day + 31 if day < 0 else min(day, c.first_day + 31)
        # == 3 begins, and ends the day after; `and stage != "dormant"` cannot hold while
        # dormant, and only a purchase (an evaluation anyway) ends dormancy
        if c.birthday is not None and c.stage != "dormant":
            anniv = c.anniversary
            candidate = anniv - 3 if anniv - 3 > today else anniv - 2
            if candidate <= today:
                following = _anniversary(c.birthday,
                                         dt.date.fromordinal(anniv).year + 1).toordinal()
                candidate = following - 3
            day = candidate if day < 0 else min(day, candidate)
        if day >= 0:
            best = _earlier(best, (day - EPOCH_ORDINAL) * DAY + DAY_START - UTC_OFFSET, now)
        if best < 0:
            c.wake_at = None
        elif c.wake_at != best:
            c.wake_at = best
            heapq.heappush(self.heap, (best, c.cid))

    # ---- summary -----------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        stages = {s: 0 for s in STAGES}
        tags = {t: 0 for t in TAGS}
        pending = 0
        for c in self.customers.values():
            stages[c.stage or "(none)"] = stages.get(c.stage or "(none)", 0) + 1
            for t in c.tags:
                tags[t] += 1
            pending += len(c.pending)
        shown = [*range(D12), *self.acted]  # campaigns once they act, as sopkit
        return {
            "by_rule": {NAMES[r]: {k: v for k, v in sorted(self.counts[r].items()) if v}
                        for r in shown},
            "actions": sum(sum(c.values()) for c in self.counts),
            "pending_at_end": pending,
            "stages": {k: v for k, v in stages.items() if v},
            "tags": tags,
            "customers": len(self.customers),
        }


def _earlier(best: int, candidate: int, now: int) -> int:
    if candidate <= now:
        return best
    return candidate if best < 0 or candidate < best else best


def run(events: Path, profiles: Path | None, end: str | None, out: TextIO | None) -> dict[str, Any]:
    """Simulate the retail playbook over the history; the summary as a dict."""
    started = time.perf_counter()
    sim = Limit(out)
    if profiles is not None:
        with profiles.open(encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    sim.add_profile(json.loads(line))
    end_ts = sim.parse_ts(end) if end else None
    read = applied = after_end = 0
    loads = json.loads
    with events.open(encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            read += 1
            record = loads(line)
            ts = sim.parse_ts(record["ts"])
            if end_ts is not None and ts > end_ts:
                after_end += 1
                continue
            sim.event(str(record["customer_id"]), record["type"], ts, record)
            applied += 1
    if end_ts is not None:
        if sim.now is None:
            sim.start(end_ts)
        sim.advance(end_ts)
    summary: dict[str, Any] = {"engine": "limit", "events_read": read,
                               "events_applied": applied, "events_after_end": after_end,
                               "profiles": len(sim.customers)}
    summary.update(sim.summary())
    summary["end"] = sim.fmt(sim.now) if sim.now is not None else None
    summary["seconds"] = round(time.perf_counter() - started, 3)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The retail playbook as straight-line Python.")
    parser.add_argument("--events", type=Path, required=True)
    parser.add_argument("--profiles", type=Path)
    parser.add_argument("--end", help="simulate until this local time (ISO 8601)")
    parser.add_argument("--out", type=Path, help="write the action records here (JSONL)")
    parser.add_argument("--no-records", action="store_true",
                        help="count actions only: no records are built or written")
    args = parser.parse_args(argv)
    handle = None
    if args.out is not None and not args.no_records:
        handle = args.out.open("w", encoding="utf-8")
    try:
        summary = run(args.events, args.profiles, args.end, handle)
    finally:
        if handle is not None:
            handle.close()
    print(json.dumps(summary, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
