"""A customer's stored state laid out by straight-line code made for one playbook.

A live run writes every customer a batch touched, so `_state.dump_customer` runs once per
customer and commit: tens of thousands of times a minute. Walking the playbook's rules,
metrics and scores as lists on each of those calls (a loop, a tuple unpacking and a branch
per item) cost more than the JSON writing itself. `compile_dump` makes one function per
playbook instead, with one statement per rule, metric and score.

The same safety rule as fillcode.py: the source text holds only positions (checked to be
ints), the keys of the stored format (fixed here) and names made here. Every rule, metric
and score name the playbook spells, and every object the code calls, is a constant bound in
the function's namespace by a generated name.

The function returns the state as `_state.dump_customer` writes it (before the items that
are rare or hold lists of their own, which `_state` adds) and the list of values the writer
must look inside (`_codec.dumps_checked`): those that came from input or from the
playbook's expressions. A playbook with a rule, metric or score name starting with "$"
(which the stored state tags) has the whole state in that list.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sopkit._runtime.fillcode import Source, checked_int
from sopkit._runtime.metrics import Metric
from sopkit._runtime.records import NO_TIME

# customer state -> (the stored state's items so far, what to look inside)
Dump = Callable[[Any], tuple[dict[str, Any], list[Any]]]


def compile_dump(rules: Sequence[Mapping[str, Any]], metrics: Sequence[Metric],
                 scores: Sequence[Mapping[str, Any]], version: int) -> Dump:
    """The function laying out one customer's profile, owner, stages, wake-up, tag count,
    rules, metrics and scores for the stored format `version`."""
    src = Source()
    line = src.line
    line(f"out = {{'v': {checked_int(version)}, 'id': cs.customer_id}}")
    # read back from a store as they were written: looked at, in case a store was edited
    line("check = [cs.customer_id, cs.owner, cs.stage, cs.computed_stage, cs.wake_at]")
    names = [r["name"] for r in rules] + [m.name for m in metrics] + [s["name"] for s in scores]
    if any(name.startswith("$") for name in names):
        line("check.append(out)")  # all of it, whatever `_state` adds to it
    line("x = cs.profile")
    line("if x:")
    line("    out['profile'] = x")
    line("    check.append(x)")
    # str, int or None (a tag count is read back as an int): present when truthy
    for key in ("owner", "stage", "computed_stage", "wake_at", "tag_changes"):
        line(f"x = cs.{key}")
        line("if x:")
        line(f"    out['{key}'] = x")
    if rules:
        line("truth = cs.rule_truth")
        line("fired = cs.fired")
        line("attempts = cs.attempts")
        line("last = cs.last_fired")
        line("rules = {}")
        never = checked_int(NO_TIME)
        for r, rule in enumerate(rules):
            at = checked_int(r)
            line(f"t = truth[{at}]")
            line(f"f = fired[{at}]")
            line(f"a = attempts[{at}]")
            line(f"x = last[{at}]")
            line(f"if t or f or a or x != {never}:")
            line(f"    rules[{src.const(rule['name'])}] = {{'armed_true': t != 0, 'fired': f, "
                 f"'attempts': a, 'last': None if x == {never} else x}}")
        line("if rules:")
        line("    out['rules'] = rules")
    if metrics:
        line("m = cs.metrics")
        line("metrics = out['metrics'] = {}")
        for k, metric in enumerate(metrics):
            at = checked_int(k)
            line(f"metrics[{src.const(metric.name)}] = x = "
                 f"{src.const(metric.dump_state)}(m[{at}])")
            if not metric.plain_state:
                line("check.append(x)")
    if scores:
        line("s = cs.scores")
        line("scores = {}")
        for i, score in enumerate(scores):
            at = checked_int(i)
            line(f"if s[{at}]:")
            line(f"    scores[{src.const(score['name'])}] = s[{at}]")
        line("if scores:")
        line("    out['scores'] = scores")
        line("    check.append(scores)")
    line("return out, check")
    dump: Dump = src.function("dump", "cs", "<sopkit stored state>")
    return dump
