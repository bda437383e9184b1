r"""Generators for the differential tests: whole playbooks and event histories, and a runner.

`cases()` is a hypothesis strategy of `Case`s: a playbook (as a TOML document), profiles, a
history of events sorted by time, and the instant to advance to afterwards. `run(...)`
replays a case with one engine and returns what came out (the action lines, the error, the
customers' final states). `tests/test_differential.py` compares the engines on both generated
cases and the golden ones under `tests/cases/differential/`.

Values that trigger the engine disagreements found so far are generated only when their bug
class is asked for (`bugs`; env `SOPKIT_DIFF_KNOWN_BUGS=exponent,escape,bigint` in the test),
so the suite stays green until they are fixed while golden cases pin each one:

- "exponent": a float whose JSON form is one digit and an exponent (`1e-05`, `2e-05`,
  `1e+16`; `1.5e-05` is fine): durable-rules' JSON parser rejects it (error 204), so a
  fact with such a value makes the evaluation raise, and a condition literal such as
  `0.00001` makes creating the engine raise. Tiny or huge decimals, `x / y` with a large
  divisor, or a literal `0.00001` produce one;
- "escape": strings that JSON escapes (`"`, tab, control characters) in ordering
  comparisons (`<`, `>=` ...): durable-rules compares the escaped JSON text, so `a"b` sorts
  after `a#b` (it reads `\` where `"` is);
- "bigint": integers beyond 64 bits (`2**63 + 1`): durable-rules saturates them, so
  `x == 9223372036854775808` holds for `9223372036854775809`.

Never generated: a time-relative metric compared with a threshold past year 9999, which makes
the runtime itself raise OverflowError with either engine (golden case huge_day_threshold).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

import sopkit

Draw = Callable[..., Any]
Bugs = frozenset[str]
BUG_CLASSES = ("exponent", "escape", "bigint")  # the known engine disagreements, see the docstring
NO_BUGS: Bugs = frozenset()

# ---- fixed vocabulary ------------------------------------------------------------------------

EVENTS: dict[str, dict[str, str]] = {
    "purchase": {"amount": "decimal", "sku": "string", "qty": "int", "gift": "bool"},
    "visit": {"page": "string"},
    "complaint": {"reason": "string", "severity": "int"},
}
PROFILE: dict[str, str] = {
    "name": "string", "city": "string", "birthday": "date", "expires": "date", "vip": "bool",
    "level": "int", "credit": "decimal", "interests": "list",
}
CUSTOMERS = ["c1", "c2", "c10", "客户3", "cust-462789", "cust-679192"]  # the last two: sid hash
STAFF = ["staff-1", "staff-2", "王老师"]
TIMEZONES = ["Asia/Shanghai", "UTC", "Europe/Berlin", "America/New_York"]
DAY_STARTS = ["00:00", "09:00", "23:30"]
TAG_NAMES = ["hot", "回头客", "流失风险", "已回访", "watch list"]
STAGE_NAMES = ["dormant", "active", "vip", "新客", "trial"]
SCORE_NAMES = ["risk", "价值分"]

SKUS = ["A", "B", "GIFT", "苹果", "a b", "Z9"]
PAGES = ["home", "cart", "价格", "help"]
REASONS = ["late", "broken", "态度"]
NAMES = ["王小明", "Ann", "", "Zoë", "bob"]
CITIES = ["上海", "Berlin", "NYC", ""]
INTERESTS = ["钢琴", "美术", "swim"]
AMOUNTS = ["10", "0.5", "150", "99.99", "-5", "1200.50", "0", "20.25"]
INTS = [-1, 0, 1, 2, 3, 10, 250]
BIRTHDAYS = ["2000-02-29", "1996-02-29", "1990-03-01", "1985-12-31", "2001-01-01",
             "1999-02-28", "1980-03-05"]
DATES = ["2024-02-29", "2024-03-01", "2024-03-10", "2024-06-30", "2025-02-28", "2025-03-01",
         "2024-12-31"]
POINTS = [10, 20, -5, 0.5, 30, 1.25, 15]
# known-bug values (see the module docstring)
BUG_AMOUNTS = ["0.00001", "0.00002", "1E+16"]  # class "exponent"
BUG_NUMBERS = {"exponent": [0.00001], "bigint": [2**63, 2**64]}  # literals in conditions
BUG_STRINGS = ['a"b', "a#b", "a\tb", "a b"]  # "escape": '"' < '#' and tab < ' ', not escaped
BUG_INTS = [2**63 + 1, 2**64, -(2**63) - 1]  # "bigint"

WINDOWS = ["12h", "1d", "3d", "7d", "30d", "2w"]
DURATIONS = ["1h", "12h", "1d", "2d", "3d", "7d"]
GAPS = [0, 0, 1, 59, 3600, 5 * 3600, 86399, 86400, 86401, 3 * 86400, 7 * 86400, 29 * 86400,
        90 * 86400, 200 * 86400]
END_GAPS = [0, 3600, 86400, 10 * 86400, 45 * 86400, 120 * 86400, 400 * 86400]
START = dt.datetime(2024, 2, 20, 1, 30, tzinfo=dt.UTC)
START_SHIFTS = [0, 5, 300, 362, 730]  # days: around 29 Feb 2024, 28 Feb 2025, 2026

TIME_RELATIVE = {"days_since", "days_since_first", "days_until", "days_to_anniversary"}


@dataclass
class Operand:
    """A name (or arithmetic over names) a condition may read, with literals to compare to."""

    text: str
    type: str  # number | string | bool | date | list
    pool: list[Any] = field(default_factory=list)
    time: bool = False  # time-relative: comparing it with non-constants wakes daily
    integral: bool = False  # an integer count, safe as a divisor


@dataclass
class Scope:
    """What one condition may read."""

    operands: list[Operand]
    tags: list[str]
    stages: list[str]


@dataclass
class Case:
    """One differential case: a playbook, its inputs, and where to advance to at the end."""

    playbook: dict[str, Any]
    profiles: list[dict[str, Any]]
    events: list[dict[str, Any]]
    end: str

    def toml(self) -> str:
        return to_toml(self.playbook)

    def __repr__(self) -> str:  # what hypothesis prints for a falsifying example
        lines = [self.toml(), "# profiles"]
        lines += [json.dumps(p, ensure_ascii=False) for p in self.profiles]
        lines.append("# events")
        lines += [json.dumps(e, ensure_ascii=False) for e in self.events]
        lines.append(f"# advance to {self.end}")
        return "\n".join(lines)


# ---- TOML --------------------------------------------------------------------------------------


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key, ensure_ascii=False)


def _inline(value: Any) -> str:
    """A TOML value on one line (a JSON string is a valid TOML basic string)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_inline(v) for v in value) + "]"
    items = ", ".join(f"{_key(k)} = {_inline(v)}" for k, v in value.items())
    return f"{{ {items} }}" if items else "{}"


def to_toml(doc: dict[str, Any]) -> str:
    """A playbook document as TOML laid out the way people write playbooks."""
    out: list[str] = []

    def table(header: str, body: dict[str, Any]) -> None:
        out.append(header)
        for key, value in body.items():
            if key == "actions":
                out.append("actions = [")
                out.extend(f"  {_inline(action)}," for action in value)
                out.append("]")
            else:
                out.append(f"{_key(key)} = {_inline(value)}")
        out.append("")

    order = ["playbook", "profile", "events", "metrics", "scores", "tags", "stages",
             "channels", "templates", "rules"]
    for section in sorted(doc, key=lambda s: order.index(s) if s in order else len(order)):
        value = doc[section]
        if isinstance(value, list):  # stages, rules
            for item in value:
                table(f"[[{section}]]", item)
        elif section in ("playbook", "profile", "metrics"):
            table(f"[{section}]", value)
        else:  # events, scores, tags, channels, templates: a table per name
            for name, body in value.items():
                table(f"[{section}.{_key(name)}]", body)
    text = "\n".join(out)
    assert tomllib.loads(text) == doc, "to_toml lost something"
    return text


# ---- literals ----------------------------------------------------------------------------------


def lit(value: Any, kind: str) -> str:
    """A literal of the condition language."""
    if kind == "date":
        return str(value)
    if kind == "bool":
        return "true" if value else "false"
    if kind == "number":
        if value < 0:
            return "-" + lit(-value, kind)
        return format(Decimal(repr(value)), "f") if isinstance(value, float) else str(value)
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


# ---- conditions --------------------------------------------------------------------------------


def _compare_number(draw: Draw, scope: Scope, bugs: Bugs) -> str:
    numbers = [o for o in scope.operands if o.type == "number"]
    left = draw(st.sampled_from(numbers))
    shape = draw(st.sampled_from(["const"] * 6 + ["flip", "arith", "arith", "name", "neg"]))
    op = draw(st.sampled_from(["==", "!=", "<", "<=", ">", ">="]))
    pool = left.pool or [0]
    if not left.time:  # a huge threshold on a time-relative metric overflows the scheduler
        pool = pool + [n for b in sorted(bugs) for n in BUG_NUMBERS.get(b, [])]
    if shape == "name":
        others = [o for o in numbers if not o.time] if not left.time else numbers
        right = draw(st.sampled_from(others or numbers))
        if (left.time or right.time) and draw(st.integers(0, 3)) != 0:
            return f"{left.text} {op} {lit(draw(st.sampled_from(pool)), 'number')}"
        return f"{left.text} {op} {right.text}"
    if shape == "neg" and not left.time:
        return f"-{left.text} {op} {lit(-draw(st.sampled_from(pool)), 'number')}"
    if shape == "arith" and not left.time:
        return f"{_arith(draw, numbers, left, bugs)} {op} " \
               f"{lit(draw(st.sampled_from([*pool, 0, 1, 2.5])), 'number')}"
    value = lit(draw(st.sampled_from(pool)), "number")
    if shape == "flip":
        return f"{value} {op} {left.text}"
    return f"{left.text} {op} {value}"


def _arith(draw: Draw, numbers: list[Operand], left: Operand, bugs: Bugs) -> str:
    """One arithmetic operation; dividing by a sum (`1 / 100000` is `1e-05`) only with the
    "exponent" bug class."""
    plain = [o for o in numbers if not o.time]
    op = draw(st.sampled_from(["+", "-", "*", "/"]))
    if op == "/":
        divisors = plain if "exponent" in bugs else [o for o in plain if o.integral]
        right = draw(st.sampled_from([*[o.text for o in divisors], "2", "3", "0"]))
    elif op == "*":
        right = draw(st.sampled_from(["2", "0.5", "3", *[o.text for o in plain if o.integral]]))
    else:
        right = draw(st.sampled_from([o.text for o in plain] + ["1"]))
    text = f"({left.text} {op} {right})"
    return text


def _compare(draw: Draw, scope: Scope, bugs: Bugs) -> str:
    kinds = {o.type for o in scope.operands}
    options = ["number"] * 5 if "number" in kinds else []
    options += [k for k in ("string", "bool", "date", "list") if k in kinds]
    if scope.tags:
        options += ["tag"] * 3
    if scope.stages:
        options += ["stage"] * 2
    options.append("const")
    kind = draw(st.sampled_from(options))
    if kind == "number":
        return _compare_number(draw, scope, bugs)
    if kind == "tag":
        tag = draw(st.sampled_from(scope.tags))
        neg = draw(st.booleans())
        return f"{lit(tag, 'string')} {'not in' if neg else 'in'} tags"
    if kind == "stage":
        names = draw(st.lists(st.sampled_from(scope.stages), min_size=1, max_size=2,
                              unique=True))
        form = draw(st.sampled_from(["==", "!=", "in", "not in"]))
        if form in ("==", "!="):
            return f"stage {form} {lit(names[0], 'string')}"
        return f"stage {form} [{', '.join(lit(n, 'string') for n in names)}]"
    if kind == "const":
        return draw(st.sampled_from(["true", "false"]))
    operand = draw(st.sampled_from([o for o in scope.operands if o.type == kind]))
    if kind == "bool":
        form = draw(st.sampled_from(["bare", "not", "== true", "!= true", "== false"]))
        if form == "bare":
            return operand.text
        if form == "not":
            return f"not {operand.text}"
        return f"{operand.text} {form}"
    if kind == "list":
        item = draw(st.sampled_from(operand.pool))
        neg = draw(st.booleans())
        return f"{lit(item, 'string')} {'not in' if neg else 'in'} {operand.text}"
    pool = operand.pool
    form = draw(st.sampled_from(["==", "!=", "<", "<=", ">", ">=", "in", "not in", "name"]))
    if form in ("in", "not in"):
        items = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=3, unique=True))
        return f"{operand.text} {form} [{', '.join(lit(v, kind) for v in items)}]"
    if form == "name":
        same = [o for o in scope.operands if o.type == kind]
        other = draw(st.sampled_from(same))
        op = draw(st.sampled_from(["==", "!=", "<", ">="]))
        if operand.time or other.time:
            return f"{operand.text} {op} {lit(draw(st.sampled_from(pool)), kind)}"
        return f"{operand.text} {op} {other.text}"
    return f"{operand.text} {form} {lit(draw(st.sampled_from(pool)), kind)}"


def condition(draw: Draw, scope: Scope, bugs: Bugs, depth: int = 2) -> str:
    """A boolean condition over the scope: comparisons combined with and/or/not."""
    if depth == 0 or draw(st.integers(0, 2)) == 0:
        return _compare(draw, scope, bugs)
    form = draw(st.sampled_from(["and", "or", "not"]))
    if form == "not":
        return f"not ({condition(draw, scope, bugs, depth - 1)})"
    parts = [condition(draw, scope, bugs, depth - 1) for _ in range(draw(st.integers(2, 3)))]
    return f" {form} ".join(f"({p})" for p in parts)


# ---- the playbook ------------------------------------------------------------------------------


def _metric_operands(metrics: dict[str, dict[str, Any]], bugs: Bugs) -> list[Operand]:
    out = []
    for name, spec in metrics.items():
        kind = spec["kind"]
        if kind in ("count", "max_count_per_key"):
            out.append(Operand(name, "number", [0, 1, 2, 3, 5], integral=True))
        elif kind in ("sum", "avg"):
            pool: list[Any] = [0, 10, 99.99, 150, 300.5, 1000, -5]
            out.append(Operand(name, "number", pool, integral=spec["field"] == "qty"))
        elif kind == "last":
            ftype = EVENTS[spec["event"]][spec["field"]]
            if ftype == "string":
                out.append(Operand(name, "string", _strings(spec["field"], bugs)))
            elif ftype == "bool":
                out.append(Operand(name, "bool"))
            elif ftype == "int":
                out.append(Operand(name, "number", [0, 1, 3, 10], integral=True))
            else:
                out.append(Operand(name, "number", [0, 10, 99.99, 150]))
        elif kind in ("days_since", "days_since_first"):
            out.append(Operand(name, "number", [0, 1, 2, 3, 7, 30, 90, 2.5], time=True))
        elif kind == "days_until":
            out.append(Operand(name, "number", [0, 1, 7, 30, 365], time=True))
        else:  # days_to_anniversary
            out.append(Operand(name, "number", [0, 1, 3, 7, 30, 200, 365], time=True))
    return out


def _strings(fname: str, bugs: Bugs) -> list[str]:
    pool = {"sku": SKUS, "page": PAGES, "reason": REASONS, "name": NAMES,
            "city": CITIES}[fname]
    return [*pool, *BUG_STRINGS] if "escape" in bugs else list(pool)


def _base_operands(bugs: Bugs) -> list[Operand]:
    """Profile attributes and built-ins, readable by every condition."""
    return [
        Operand("profile.name", "string", _strings("name", bugs)),
        Operand("profile.city", "string", _strings("city", bugs)),
        Operand("profile.birthday", "date", BIRTHDAYS),
        Operand("profile.expires", "date", DATES),
        Operand("profile.vip", "bool"),
        Operand("profile.level", "number", [0, 1, 2, 3, 10], integral=True),
        Operand("profile.credit", "number", [0, 12.5, 100, -3.25]),
        Operand("profile.interests", "list", INTERESTS),
        Operand("owner", "string", STAFF),
        Operand("customer_id", "string", CUSTOMERS),
        Operand("today", "date", DATES, time=True),
        Operand("is_workday", "bool", time=True),
        Operand("is_holiday", "bool", time=True),
    ]


def _event_operands(etype: str, bugs: Bugs) -> list[Operand]:
    out = []
    for fname, ftype in EVENTS[etype].items():
        text = f"event.{fname}"
        if ftype == "string":
            out.append(Operand(text, "string", _strings(fname, bugs)))
        elif ftype == "bool":
            out.append(Operand(text, "bool"))
        elif ftype == "int":
            out.append(Operand(text, "number", [0, 1, 2, 3, 10], integral=True))
        else:
            out.append(Operand(text, "number", [0, 10, 99.99, 150, 500]))
    return out


@st.composite
def metrics_strategy(draw: Draw) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    kinds = draw(st.lists(st.sampled_from(
        ["count", "count", "sum", "days_since", "days_to_anniversary", "max_count_per_key",
         "days_until", "avg", "last", "days_since_first"]), min_size=1, max_size=5))
    for i, kind in enumerate(kinds):
        name = "购买次数" if i == 0 and draw(st.integers(0, 5)) == 0 else f"{kind[:3]}{i}"
        spec: dict[str, Any] = {"kind": kind}
        if kind in ("count", "days_since", "days_since_first"):
            spec["event"] = draw(st.sampled_from([*EVENTS, "*"]))
        elif kind in ("sum", "avg"):
            spec["event"] = "purchase"
            spec["field"] = draw(st.sampled_from(["amount", "amount", "qty"]))
        elif kind == "last":
            spec["event"], spec["field"] = draw(st.sampled_from(
                [("purchase", "sku"), ("purchase", "amount"), ("purchase", "gift"),
                 ("visit", "page"), ("complaint", "severity")]))
        elif kind == "max_count_per_key":
            spec["event"], spec["field"] = draw(st.sampled_from(
                [("visit", "page"), ("purchase", "sku"), ("complaint", "reason")]))
            spec["window"] = draw(st.sampled_from(WINDOWS))
        elif kind == "days_to_anniversary":
            spec["attribute"] = "birthday"
            calendar = draw(st.sampled_from(["gregorian", "gregorian", "lunar", "lunar_of_birth"]))
            if calendar != "gregorian":
                spec["calendar"] = calendar
        elif kind == "days_until":
            spec["attribute"] = "expires"
        if kind in ("count", "sum", "avg") and draw(st.booleans()):
            spec["window"] = draw(st.sampled_from(WINDOWS))
        out[name] = spec
    return out


def _action(draw: Draw, writable: list[str], stages: list[str], on: str | None,
            metric: str) -> dict[str, Any]:
    kinds = ["send", "task", "reassign", "webhook"]
    if writable:
        kinds += ["tag", "tag", "untag"]
    if stages:
        kinds.append("set_stage")
    kind = draw(st.sampled_from(kinds))
    if kind in ("tag", "untag"):
        return {"type": kind, "tag": draw(st.sampled_from(writable))}
    if kind == "set_stage":
        return {"type": kind, "stage": draw(st.sampled_from(stages))}
    if kind == "send":
        template = draw(st.sampled_from(["main", "short"]))
        return {"type": "send", "channel": "sms", "template": template,
                "params": {"p": draw(st.sampled_from([9, "券A", 2.5, True]))}}
    if kind == "reassign":
        return {"type": kind, "to": draw(st.sampled_from(STAFF))}
    if kind == "webhook":
        return {"type": kind, "channel": "crm",
                "payload": {"id": "{{ customer_id }}", "n": f"{{{{ {metric} }}}}",
                            "tags": ["{{ tags }}", 1]}}
    note = f"跟进 {{{{ customer_id }}}} {{{{ {metric} }}}} {{{{ owner | default('无') }}}}"
    if on is not None:
        note += " " + " ".join(f"{{{{ event.{f} }}}}" for f in EVENTS[on])
    action: dict[str, Any] = {"type": "task", "note": note}
    if draw(st.booleans()):
        action["due"] = draw(st.sampled_from(DURATIONS))
    if draw(st.booleans()):
        action["assignee"] = draw(st.sampled_from(STAFF))
    return action


@st.composite
def playbook_strategy(draw: Draw, bugs: Bugs = NO_BUGS) -> dict[str, Any]:
    """A playbook document (plain dicts, for tomli_w) that `sopkit check` should accept."""
    metrics = draw(metrics_strategy())
    base = _base_operands(bugs) + _metric_operands(metrics, bugs)
    doc: dict[str, Any] = {
        "playbook": {"name": "diff", "version": "1",
                     "timezone": draw(st.sampled_from(TIMEZONES)),
                     "day_starts": draw(st.sampled_from(DAY_STARTS))},
        "profile": dict(PROFILE),
        "events": {k: dict(v) for k, v in EVENTS.items()},
        "metrics": metrics,
    }
    tag_names = draw(st.lists(st.sampled_from(TAG_NAMES), min_size=0, max_size=4, unique=True))
    stage_names = draw(st.lists(st.sampled_from(STAGE_NAMES), min_size=0, max_size=3,
                                unique=True))
    score_names = draw(st.lists(st.sampled_from(SCORE_NAMES), max_size=2, unique=True))
    # scores: factors read neither scores nor other tags (few static-looking flickers)
    scores: dict[str, Any] = {}
    for sname in score_names:
        scope = Scope(base, tag_names if draw(st.integers(0, 3)) == 0 else [], stage_names)
        factors = []
        for _ in range(draw(st.integers(1, 3))):
            factor: dict[str, Any] = {"when": condition(draw, scope, bugs, 1),
                                      "points": draw(st.sampled_from(
                                          POINTS))}
            factors.append(factor)
        scores[sname] = {"factors": factors}
    derived = base + [Operand(s, "number", [0, 10, 15, 20, 30.5, 50]) for s in score_names]
    tags: dict[str, Any] = {}
    for i, tname in enumerate(tag_names):
        kind = draw(st.sampled_from(["dynamic", "sticky", "manual", "manual"]))
        if kind == "manual":
            tags[tname] = {"group": "interaction"}
            continue
        # a tag's condition reads earlier tags only (mostly), never itself
        readable = tag_names[:i] if draw(st.integers(0, 4)) else \
            [t for t in tag_names if t != tname]
        spec: dict[str, Any] = {"when": condition(draw, Scope(derived, readable, stage_names),
                                                  bugs)}
        if kind == "sticky":
            spec["sticky"] = True
        tags[tname] = spec
    writable = [t for t, spec in tags.items() if "when" not in spec or spec.get("sticky")]
    stages = []
    for sname in stage_names:
        readable_tags = tag_names if draw(st.integers(0, 2)) == 0 else []
        stages.append({"name": sname,
                       "when": condition(draw, Scope(derived, readable_tags, []), bugs, 1)})
    if stages and draw(st.booleans()):
        stages[-1] = {"name": stages[-1]["name"]}  # a catch-all, last
    if stages:
        doc["stages"] = stages
    doc["channels"] = {"sms": {"type": "sms"},
                       "crm": {"type": "webhook", "url": "https://crm.example.com/hook"}}
    metric = next(iter(metrics))
    doc["templates"] = {
        "main": {"text": f"{{{{ profile.name | default(\"客户\") }}}} {{{{ {metric} }}}} "
                         "{{ tags }} {{ stage }} {{ params.p }} {{ now }}",
                 "title": "{{ today }} {{ customer_id }}"},
        "short": {"text": "您好 {{ customer_id }}"},
    }
    rules = []
    for i in range(draw(st.integers(1, 6))):
        on = draw(st.sampled_from([None, None, None, *EVENTS]))
        operands = derived + (_event_operands(on, bugs) if on else [])
        scope = Scope(operands, tag_names, stage_names)
        rule: dict[str, Any] = {"name": f"r{i}"}
        if on is not None:
            rule["on"] = on
        if on is None or draw(st.booleans()):
            rule["when"] = condition(draw, scope, bugs)
        actions = [_action(draw, writable, stage_names, on, metric)
                   for _ in range(draw(st.integers(1, 3)))]
        writes = any(a["type"] in ("tag", "untag", "set_stage") for a in actions)
        if draw(st.integers(0, 3)) == 0:
            rule["priority"] = draw(st.sampled_from([-1, 1, 5]))
        if draw(st.integers(0, 2 if writes else 4)) == 0:
            rule["cooldown"] = draw(st.sampled_from(DURATIONS))
        if draw(st.integers(0, 2 if writes else 4)) == 0:
            rule["max_times"] = draw(st.integers(1, 3))
        if draw(st.integers(0, 3)) == 0:
            rule["delay"] = draw(st.sampled_from([*DURATIONS, "2 workdays"]))
            if draw(st.booleans()):
                rule["cancel_if"] = condition(draw, Scope(derived, tag_names, stage_names),
                                              bugs, 1)
        rule["actions"] = actions
        rules.append(rule)
    _loop_motif(draw, doc, scores, tags, rules, Scope(base, [], stage_names), bugs)
    if scores:
        doc["scores"] = scores
    if tags:
        doc["tags"] = tags
    doc["rules"] = rules
    return doc


def _loop_motif(draw: Draw, doc: dict[str, Any], scores: dict[str, Any], tags: dict[str, Any],
                rules: list[dict[str, Any]], gates: Scope, bugs: Bugs) -> None:
    """Sometimes add a loop that `sopkit check` cannot see, behind a random gate: when the
    gate holds at run time, it ends in ChainError (unless a cooldown/max_times breaks it)."""
    motif = draw(st.sampled_from([None] * 8 + ["cycle", "flicker"]))
    if motif is None:
        return
    gate = condition(draw, gates, bugs, 1)
    if motif == "cycle":  # tests/data/semantics/chain_cycle.toml, gated
        tags["循环X"] = {"group": "interaction"}
        tags["循环Y"] = {"when": '"循环X" in tags'}
        mark: dict[str, Any] = {"name": "mark_x", "when": f'"循环Y" not in tags and ({gate})',
                                "actions": [{"type": "tag", "tag": "循环X"}]}
        if draw(st.integers(0, 3)) == 0:
            mark["cooldown"] = draw(st.sampled_from(DURATIONS))
        rules.append(mark)
        rules.append({"name": "unmark_x", "when": '"循环Y" in tags',
                      "actions": [{"type": "untag", "tag": "循环X"}]})
    else:  # tests/data/semantics/chain_flicker.toml, gated
        scores["闪烁分"] = {"factors": [{"when": '"闪烁" in tags', "points": 1}]}
        tags["闪烁"] = {"when": f"闪烁分 == 0 and ({gate})"}


# ---- inputs ------------------------------------------------------------------------------------


def _value(draw: Draw, kind: str, fname: str, bugs: Bugs) -> Any:
    if kind == "string":
        return draw(st.sampled_from(_strings(fname, bugs)))
    if kind == "decimal":
        pool = AMOUNTS if fname == "amount" else ["0", "12.5", "100", "-3.25"]
        return draw(st.sampled_from(pool + (BUG_AMOUNTS if "exponent" in bugs else [])))
    if kind == "int":
        return draw(st.sampled_from(INTS + (BUG_INTS if "bigint" in bugs else [])))
    if kind == "bool":
        return draw(st.sampled_from([True, False, "是", "no"]))
    if kind == "date":
        return draw(st.sampled_from(BIRTHDAYS if fname == "birthday" else DATES))
    return draw(st.sampled_from([["钢琴"], ["美术", "swim"], "钢琴|swim", []]))


def _profile(draw: Draw, customer: str, bugs: Bugs) -> dict[str, Any]:
    record: dict[str, Any] = {"customer_id": customer}
    for attr in draw(st.lists(st.sampled_from(list(PROFILE)), unique=True, max_size=5)):
        record[attr] = _value(draw, PROFILE[attr], attr, bugs)
    if draw(st.booleans()):
        record["owner"] = draw(st.sampled_from(STAFF))
    return record


def _ts(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@st.composite
def inputs_strategy(draw: Draw, bugs: Bugs = NO_BUGS
                    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
    """Profiles, a sorted history of events with idle stretches, and the end instant."""
    customers = draw(st.lists(st.sampled_from(CUSTOMERS), min_size=1, max_size=4, unique=True))
    profiles = [_profile(draw, c, bugs) for c in customers if draw(st.integers(0, 3))]
    now = START + dt.timedelta(days=draw(st.sampled_from(START_SHIFTS)),
                               seconds=draw(st.integers(0, 86399)))
    events: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(0, 14))):
        now += dt.timedelta(seconds=draw(st.sampled_from(GAPS)))
        customer = draw(st.sampled_from(customers))
        etype = draw(st.sampled_from([*EVENTS, "purchase", "visit", "profile"]))
        if etype == "profile":
            record = _profile(draw, customer, bugs)
        else:
            record = {"customer_id": customer}
            for fname, kind in EVENTS[etype].items():
                if draw(st.integers(0, 4)):
                    record[fname] = _value(draw, kind, fname, bugs)
        events.append({**record, "type": etype, "ts": _ts(now)})
    end = now + dt.timedelta(seconds=draw(st.sampled_from(END_GAPS)))
    return profiles, events, _ts(end)


@st.composite
def cases(draw: Draw, bugs: Bugs = NO_BUGS) -> Case:
    """A whole differential case."""
    doc = draw(playbook_strategy(bugs))
    profiles, events, end = draw(inputs_strategy(bugs))
    return Case(doc, profiles, events, end)


# ---- running a case ----------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one engine made of a case."""

    lines: list[str]  # one JSON line per action, then one {"error": ...} line if it failed
    states: dict[str, Any]

    def text(self) -> str:
        return "".join(line + "\n" for line in self.lines)


def dump(action: sopkit.Action) -> str:
    """An action as `sopkit simulate --out` writes it (without the newline)."""
    return json.dumps(action.to_json(), ensure_ascii=False)


def run(playbook: sopkit.LoadedPlaybook, profiles: list[dict[str, Any]],
        events: list[dict[str, Any]], end: str, engine: str,
        every_departure: bool = False, every_jump: bool = False) -> Outcome:
    """Replay a case with one engine: profiles, every event, then advance to `end`.

    `every_departure` compiles the playbook with every window marked `any`, so each event
    leaving a window wakes its customer: the plain schedule the threshold-based one must
    agree with. `every_jump` wakes a customer on every day after an anniversary (the jump of
    a days_to_anniversary from 0 back up), as if no comparison's answers were known.

    An event the runtime rejects (EventError) is recorded as a `{"rejected": ...}` line and
    the run goes on, as `simulate` would quarantine it. A ChainError (with either engine) or
    any failure of the durable engine (also while the Runtime is built) ends the run and is
    recorded as an `{"error": ...}` line; any other failure of the native engine, the
    oracle, propagates.
    """
    lines: list[str] = []
    error = None
    rt = None
    try:
        ir = sopkit.compile_playbook(playbook.model)
        if every_departure:
            for window in ir["windows"].values():
                window["any"] = True
        rt = sopkit.Runtime(playbook, engine=engine, ir=ir)
        if every_jump:  # no comparisons known: every anniversary's next day is a wake-up
            rt.core.day_atoms = [None] * len(rt.core.day_atoms)
        for record in profiles:
            try:
                rt.add_profile(record)
            except sopkit.EventError as exc:
                lines.append(json.dumps({"rejected": str(exc)}, ensure_ascii=False))
        for record in events:
            try:
                lines.extend(dump(a) for a in rt.ingest(record))
            except sopkit.EventError as exc:  # quarantined by `simulate`: record, go on
                lines.append(json.dumps({"rejected": str(exc)}, ensure_ascii=False))
        lines.extend(dump(a) for a in rt.advance(end))
    except sopkit.ChainError as exc:
        error = f"ChainError: {exc}"
    except Exception as exc:
        if engine == "native":
            raise
        error = f"{type(exc).__name__}: {exc}"
    if error is not None:
        lines.append(json.dumps({"error": error}, ensure_ascii=False))
    states = {cid: rt.state(cid) for cid in sorted(rt.customer_ids())} if rt else {}
    return Outcome(lines, states)


# ---- golden case files -------------------------------------------------------------------------

_ADVANCE = re.compile(r"^# advance-to: (\S+)$", re.MULTILINE)


def write_case(case: Case, directory: Path, description: str = "") -> None:
    """Write a case as playbook.toml (the end instant in a header comment), events.jsonl and
    profiles.jsonl; expected.jsonl is written by the golden test under SOPKIT_REGEN=1."""
    directory.mkdir(parents=True, exist_ok=True)
    header = f"# {description}\n" if description else ""
    header += f"# advance-to: {case.end}\n\n"
    (directory / "playbook.toml").write_text(header + case.toml(), encoding="utf-8")
    for name, records in (("events.jsonl", case.events), ("profiles.jsonl", case.profiles)):
        path = directory / name
        if records or name == "events.jsonl":
            path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
                            encoding="utf-8")
        elif path.exists():
            path.unlink()


def read_case(directory: Path) -> tuple[Path, list[dict[str, Any]], list[dict[str, Any]], str]:
    """(playbook path, profiles, events, end) of a golden case directory."""
    playbook = directory / "playbook.toml"
    match = _ADVANCE.search(playbook.read_text(encoding="utf-8"))
    assert match, f"{playbook}: no '# advance-to: <ts>' line"

    def records(name: str) -> list[dict[str, Any]]:
        path = directory / name
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
                if line.strip()]

    return playbook, records("profiles.jsonl"), records("events.jsonl"), match.group(1)
