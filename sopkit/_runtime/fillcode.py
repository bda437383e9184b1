"""A facts vector filled by straight-line code made for one slot plan.

`FactReader` used to walk a `SlotPlan`'s lists on every evaluation: a loop, a tuple unpacking
and a branch for each slot, on every one of a run's hundreds of thousands of evaluations.
`compile_fill` makes one function per plan instead, with one statement per slot.

The function's source text holds only slot, metric and score numbers (checked to be ints)
and names made here. Every name, tag, attribute or list item the playbook spells, and every
object the code calls, is a constant bound in the function's namespace by a generated name:
no text from the playbook is ever part of the source. The function reads what the plan lists,
as `FactReader.fill` did (see facts.py for what each source means); RFM facts are left to the
caller, which keeps the scores the rules saw.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from sopkit._runtime import metrics as _metrics

# (facts, customer state, now, today) -> None
Fill = Callable[[list[Any], Any, int, int], None]
_PLAIN = (int, float, type(None))  # what engine_value returns as it is


class Source:
    """Lines of code and the namespace of the constants they name."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.namespace: dict[str, Any] = {}
        self._names: dict[int, str] = {}

    def const(self, value: Any) -> str:
        """A generated name bound to `value` (one name per object)."""
        name = self._names.get(id(value))
        if name is None:
            name = self._names[id(value)] = f"_c{len(self._names)}"
            self.namespace[name] = value
        return name

    def line(self, text: str) -> None:
        self.lines.append("    " + text)

    def function(self, name: str, params: str, filename: str) -> Any:
        """The function `name(params)` whose body is the lines, its globals the constants
        and no built-ins: it reads only the names bound here. Nothing runs when it is made:
        the function is built from the compiled text's code object."""
        body = "\n".join(self.lines) or "    pass"
        code = compile(f"def {name}({params}):\n{body}\n", filename, "exec")
        function_code = next(c for c in code.co_consts if isinstance(c, types.CodeType))
        self.namespace["__builtins__"] = {}
        return types.FunctionType(function_code, self.namespace, name)


def checked_int(value: Any) -> int:
    """`value`, checked to be an int, so it can be written into the source."""
    if type(value) is not int:
        raise TypeError(f"fillcode: {value!r} is not an int")
    return value


def compile_fill(plan: Any, metrics: list[_metrics.Metric], is_workday: Callable[[int], bool],
                 engine_value: Callable[[Any], Any], *, refresh_only: bool = False) -> Fill:
    """The function that sets the plan's slots (all but RFM and event fields) of a facts
    vector; with `refresh_only`, only those a round can change (built-ins, scores, tags),
    called as (facts, customer state, today, today)."""
    src = Source()
    line = src.line
    for i, name in plan.builtin:
        at = checked_int(i)
        if name == "stage":
            line(f"f[{at}] = cs.stage")
        elif name == "owner":
            line(f"f[{at}] = cs.owner")
        elif name == "customer_id":
            line(f"f[{at}] = cs.customer_id")
        elif name == "is_workday":
            line(f"f[{at}] = {src.const(is_workday)}(today)")
        elif name == "is_holiday":
            line(f"f[{at}] = not {src.const(is_workday)}(today)")
        else:  # today
            line(f"f[{at}] = today")
    if plan.score:
        line("scores = cs.scores")
        for i, k in plan.score:
            line(f"f[{checked_int(i)}] = scores[{checked_int(k)}]")
    if plan.tag:
        line("tags = cs.tags")
        for i, tag in plan.tag:
            line(f"f[{checked_int(i)}] = {src.const(tag)} in tags")
    if not refresh_only:
        _values(src, plan, metrics, engine_value)
    fill: Fill = src.function("fill", "f, cs, now, today", "<sopkit facts>")
    return fill


def _values(src: Source, plan: Any, metrics: list[_metrics.Metric],
            engine_value: Callable[[Any], Any]) -> None:
    """The profile, metric, contains and CLV slots' lines."""
    line = src.line
    ev = src.const(engine_value)
    if plan.profile or plan.metric or plan.contains:
        line("profile = cs.profile")
    for i, attr, conv in plan.profile:
        at = checked_int(i)
        line(f"v = profile.get({src.const(attr)})")
        line(f"f[{at}] = v if v is None else {ev}(v)" if conv else f"f[{at}] = v")
    if plan.metric:
        line("states = cs.metrics")
        plain, decimal = src.const(_PLAIN), src.const(Decimal)
        src.namespace["type"], src.namespace["float"] = type, float
    for i, k, conv, how in plan.metric:
        at, index = checked_int(i), checked_int(k)
        if how == _metrics.READ_STATE:
            line(f"v = states[{index}]")
        elif how == _metrics.READ_DAYS_SINCE:
            line(f"v = states[{index}]")
            line("v = v if v is None else today - v")
        else:
            line(f"v = {src.const(metrics[index].value)}(states[{index}], now, today, profile)")
        if conv:  # engine_value, its usual cases inlined
            line(f"f[{at}] = v if type(v) in {plain} else "
                 f"(float(v) if type(v) is {decimal} else {ev}(v))")
        else:
            line(f"f[{at}] = v")
    for i, attr, item in plan.contains:
        line(f"v = profile.get({src.const(attr)})")
        line(f"f[{checked_int(i)}] = None if v is None else {src.const(item)} in v")
    if plan.clv:
        line("clv = cs.clv")
        for i, k in plan.clv:
            line(f"f[{checked_int(i)}] = None if clv is None else clv[{checked_int(k)}]")
