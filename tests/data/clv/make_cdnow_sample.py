"""Make the CDNOW 1/10th-sample test data from the `lifetimes` package and data/cdnow/.

The sample (2,357 customers, 6,919 purchases) is a subset of the CDNOW master history that
data/cdnow/events.jsonl.gz already holds: the first column of CDNOW_sample.txt is the master
customer id. So the events are the master's own lines for those customers, byte for byte, and
the published RFM summary is kept with the master id instead of the sample id.

    pip download --no-deps -d /tmp/lt lifetimes
    unzip -q -o /tmp/lt/Lifetimes-*.whl -d /tmp/lt
    python tests/data/clv/make_cdnow_sample.py /tmp/lt/lifetimes/datasets

Standard library only; the output is byte-identical on every run.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
MASTER = HERE.parents[2] / "data" / "cdnow" / "events.jsonl.gz"


def write_gz(path: Path, text: str) -> None:
    """gzip with no file name and mtime 0, so reruns give the same bytes."""
    with path.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw,
                                               compresslevel=9, mtime=0) as gz:
        gz.write(text.encode("utf-8"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("datasets", type=Path, help="lifetimes/datasets from the wheel")
    args = parser.parse_args(argv)
    sample_to_master: dict[int, int] = {}
    rows = 0
    for line in (args.datasets / "CDNOW_sample.txt").read_text(encoding="ascii").splitlines():
        fields = line.split()
        if len(fields) != 5:
            continue
        rows += 1
        master, sample = int(fields[0]), int(fields[1])
        if sample_to_master.setdefault(sample, master) != master:
            raise SystemExit(f"sample id {sample} maps to two master ids")
    wanted = {f"cdnow-{m:05d}" for m in sample_to_master.values()}
    with gzip.open(MASTER, "rt", encoding="utf-8") as fh:
        lines = [ln for ln in fh if json.loads(ln)["customer_id"] in wanted]
    if len(lines) != rows:
        raise SystemExit(f"found {len(lines)} master events for {rows} sample rows")
    write_gz(HERE / "cdnow_sample.jsonl.gz", "".join(lines))

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["customer_id", "x", "t_x", "T", "zbar"])
    summary = args.datasets / "cdnow_customers_summary_with_transactions.csv"
    with summary.open(encoding="ascii", newline="") as fh:
        for row in csv.DictReader(fh):
            master = sample_to_master[int(row["ID"])]
            writer.writerow([f"cdnow-{master:05d}", row["x"], row["t_x"], row["T"], row["zbar"]])
    write_gz(HERE / "cdnow_sample_summary.csv.gz", out.getvalue())
    print(f"{len(lines)} events of {len(wanted)} customers; summary of {len(sample_to_master)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
