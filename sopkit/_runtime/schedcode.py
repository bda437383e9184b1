"""The wake-up scheduler as straight-line code made for one playbook.

After each evaluation the core asks when anything about the customer could next change
(`CustomerCore.schedule`, core.py). Asked in a loop over the playbook's windows and day
wake-ups, the question cost a tuple unpacking and several branches per entry on every
evaluation; `compile_schedule` writes the loop out once per playbook instead, each entry's
kind decided when the code is made. `compile_observe` does the same for the metrics that
observe an event, the other step every event repeats.

As in fillcode.py, the source text holds only numbers checked to be ints and names made
here; every list, metric and function it uses is a constant bound in its namespace.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from typing import Any

from sopkit._runtime import crossings as _crossings
from sopkit._runtime import metrics as _metrics
from sopkit._runtime.fillcode import Source, checked_int

# (customer state, now, settled, today or None) -> None: sets the customer's wake-up
Schedule = Callable[[Any, int, bool, "int | None"], None]


def compile_schedule(core: Any, never: int, unknown: int, none: int,
                     last_day: int) -> Schedule:
    """The scheduler of `core` (a CustomerCore): what `CustomerCore.schedule` documents."""
    src = Source()
    line = src.line
    ns = src.namespace
    size = checked_int(core._cache_size)
    ns.update(_NEVER=never, _UNKNOWN=unknown, _NONE=none, _LAST_DAY=last_day,
              _push=core.queue.push, _day_index=core.calendar.day_index,
              _day_start=core.calendar.day_start, _crossing=_crossings.next_day_crossing,
              _array=lambda: array("q", [unknown]) * size, _guards=None if core.day_guards is None
              else core.day_guards.live)
    line("best = _NEVER")
    line("for p in cs.pending:")
    line("    due = p.due")
    line("    if now < due < best:")
    line("        best = due")
    line("states = cs.metrics")
    line("cache = cs.wake_cache")
    line("if cache is None:")
    line("    cache = cs.wake_cache = _array()")
    pos = checked_int(core._window_first)
    for k, limits in core.windowed:
        metric = checked_int(k)
        if limits is None:
            line(f"change = {src.const(core.metrics[metric].next_change)}(states[{metric}])")
            line("if change is not None and now < change < best:")
            line("    best = change")
        else:
            crossing = src.const(core.metrics[metric].next_crossing)
            thresholds, boundaries = src.const(limits[0]), src.const(limits[1])
            line(f"c = cache[{pos}]")
            line("if c == _UNKNOWN or (c != _NONE and c <= now):")
            line(f"    c = {crossing}(states[{metric}], now, {thresholds}, {boundaries})")
            line(f"    c = cache[{pos}] = _NONE if c is None else c")
            line("if c != _NONE and now < c < best:")
            line("    best = c")
        pos += 1
    line("if today is None:")
    line("    today = _day_index(now)")
    line("first = _LAST_DAY")
    if core.day_guards is not None:
        line("guarded = _guards(cs) if settled else None")
    for j, (metric_index, boundaries, any_day, from_event, holiday) in \
            enumerate(core.day_wakeups):
        _day(src, core, checked_int(j), metric_index, boundaries, any_day, from_event, holiday)
    line("if first < _LAST_DAY:")
    line("    start = _day_start(first)")
    line("    if start < best:")
    line("        best = start")
    line("if best != _NEVER:")
    line("    if best != cs.wake_at:")
    line("        _push(cs, best)")
    line("else:")
    line("    cs.wake_at = None")
    schedule: Schedule = src.function("schedule", "cs, now, settled, today",
                                      "<sopkit schedule>")
    return schedule


def _day(src: Source, core: Any, j: int, metric_index: int | None, boundaries: list[int],
         any_day: bool, from_event: bool, holiday: bool) -> None:
    """The lines of day wake-up `j`: the earliest day after today it names, into `first`."""
    line = src.line
    if holiday:  # is_workday / is_holiday: the next day their value changes
        line(f"day = {src.const(core.facts.holidays.next_change)}(today)")
        line("if today < day < first:")
        line("    first = day")
        return
    if metric_index is None:  # the `today` built-in, compared with date literals
        if any_day:
            line("if today + 1 < first:")
            line("    first = today + 1")
        else:
            line(f"for b in {src.const(boundaries)}:")
            line("    if today < b + 1 < first:")
            line("        first = b + 1")
        return
    k, at = checked_int(metric_index), 3 * j
    # the answer holds until its day comes, unless the event it counts from moves
    # (days_since), the profile changes (the cache is cleared then) or another set of
    # conditions is live (a guard flipped)
    line("live = -1")
    line(f"bounds = {src.const(boundaries)}")
    line(f"atoms = {src.const(core.day_atoms[j])}")
    line("go = True")
    if core.day_guards is not None:
        line("if guarded is not None:")
        line(f"    found = guarded[{j}]")
        line("    if found is not None:")
        line("        live, bounds, atoms = found")
        line("        if not bounds:")  # no live condition can flip
        line("            go = False")
    line("if go:")
    line(f"    state = states[{k}]")
    line("    key = _NONE if state is None else state" if from_event else "    key = _NONE")
    line(f"    cached = cache[{at + 1}]")
    line(f"    if cached == _UNKNOWN or cache[{at}] != key or cache[{at + 2}] != live or "
         "(cached != _NONE and cached <= today):")
    line(f"        cached = _crossing({src.const(core.metrics[k])}, state, cs.profile, today, "
         f"bounds, {src.const(any_day)}, atoms)")
    line(f"        cache[{at}] = key")
    line(f"        cached = cache[{at + 1}] = _NONE if cached is None else cached")
    line(f"        cache[{at + 2}] = live")
    line("    if cached != _NONE and today < cached < first:")
    line("        first = cached")


# (metric states, ts, day, fields) -> None: the metrics that observe one event type updated
Observe = Callable[[list[Any], int, int, dict[str, Any]], None]


def compile_observe(metrics: list[_metrics.Metric], observed: list[int]) -> Observe:
    """The metrics `observed` (indexes) observing one event, each as its `observe` would:
    a days_since and a count without a window written out, the others called."""
    src = Source()
    for k in observed:
        metric, at = metrics[k], checked_int(k)
        if isinstance(metric, _metrics.DaysSince) and \
                type(metric) in (_metrics.DaysSince, _metrics.DaysSinceFirst):
            if metric.first:  # the first event's day stays
                src.line(f"v = states[{at}]")
                src.line(f"states[{at}] = day if v is None else v")
            else:
                src.line(f"states[{at}] = day")
        elif type(metric) is _metrics.Count and not metric.window:
            src.line(f"states[{at}] = states[{at}] + 1")
        else:
            src.line(f"states[{at}] = {src.const(metric.observe)}(states[{at}], ts, day, "
                     "fields)")
    observe: Observe = src.function("observe", "states, ts, day, fields", "<sopkit observe>")
    return observe
