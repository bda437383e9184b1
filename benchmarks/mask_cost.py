"""Cost of masking one action record, as `sopkit simulate` does for every record it writes.

Usage:
    python benchmarks/mask_cost.py ACTIONS.jsonl [--runs 5]

ACTIONS.jsonl is an unmasked action file, e.g. from
    sopkit simulate playbooks/retail.toml --events data/cdnow/events.jsonl.gz \
        --profiles data/cdnow/profiles.jsonl.gz --engine native --unmasked --out ACTIONS.jsonl

Three cases are timed: the records as they are (demo ids such as `cdnow-00030`, no personal
data: the fast path), the same records with every customer id replaced by a mobile number
(`138 0013 8000` style, in the id, the key and the message), and with an e-mail address.
The best of `--runs` passes is reported, in microseconds per record.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sopkit import _mask


def _masker() -> Callable[[dict[str, Any]], dict[str, Any]]:
    """What simulate applies to each record (older versions had no `mask_record`)."""
    record_masker = getattr(_mask, "mask_record", None)
    if record_masker is not None:
        return record_masker  # type: ignore[no-any-return]  # looked up by name
    ids = frozenset({"time", "customer_id", "rule", "action", "status", "trigger", "key"})
    return lambda record: {k: v if k in ids else _mask.mask(v) for k, v in record.items()}


def _swap(records: list[dict[str, Any]], make: Callable[[int], str]) -> list[dict[str, Any]]:
    """The records with each customer id replaced by make(n), in the key and message too."""
    out = []
    names: dict[str, str] = {}
    for record in records:
        old = record["customer_id"]
        new = names.setdefault(old, make(len(names)))
        text = json.dumps(record, ensure_ascii=False).replace(old, new)
        out.append(json.loads(text))
    return out


def _best(records: list[dict[str, Any]], runs: int) -> float:
    masker = _masker()
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        for record in records:
            masker(record)
        best = min(best, time.perf_counter() - start)
    return best / len(records) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("actions", type=Path)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with args.actions.open(encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle]
    cases = {
        "demo ids": records,
        "phone ids": _swap(records, lambda n: f"138 {n // 10000:04d} {n % 10000:04d}"),
        "e-mail ids": _swap(records, lambda n: f"客户{n}@example.com"),
    }
    print(f"{len(records)} records, best of {args.runs} runs, microseconds per record")
    for name, data in cases.items():
        print(f"{name:>12}: {_best(data, args.runs):6.2f}")


if __name__ == "__main__":
    main()
