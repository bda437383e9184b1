"""Simulations started from the console: the live playbook over a stored history, on a
thread of its own, with progress the page polls and the HTML report it opens.

Histories are the files in `sopkit serve --histories DIR` (only those: a form names a file,
never a path). One simulation runs at a time; each report is kept in a temporary folder
for the life of the process.
"""

from __future__ import annotations

import itertools
import logging
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sopkit._errors import SopkitError
from sopkit._mask import mask_text
from sopkit._playbook.load import LoadedPlaybook

log = logging.getLogger("sopkit.serve")
SUFFIXES = (".jsonl", ".jsonl.gz", ".csv", ".csv.gz", ".parquet")


@dataclass
class Job:
    """One simulation: what it reads, how far it got, how it ended."""

    id: int
    events: str
    profiles: str | None
    state: str = "running"  # running, done, failed
    fraction: float = 0.0
    error: str = ""
    summary: dict[str, Any] = field(default_factory=dict)
    report: Path | None = None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "events": self.events, "profiles": self.profiles,
                "state": self.state, "percent": round(self.fraction * 100),
                "error": self.error,
                "actions": self.summary.get("actions"),
                "customers": self.summary.get("customers")}


class Simulations:
    """The histories on offer and the jobs of this process."""

    def __init__(self, loaded: LoadedPlaybook, histories: Path | None) -> None:
        self.loaded = loaded
        self.histories = histories
        self.jobs: dict[int, Job] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._folder: tempfile.TemporaryDirectory[str] | None = None

    def files(self) -> list[str]:
        """The history files on offer, by name."""
        if self.histories is None or not self.histories.is_dir():
            return []
        return sorted(p.name for p in self.histories.iterdir()
                      if p.is_file() and p.name.endswith(SUFFIXES))

    def _file(self, name: str) -> Path:
        if name not in self.files():
            raise ValueError(f"no history named {name!r}")
        assert self.histories is not None, "files() is empty without --histories"
        return self.histories / name

    def start(self, events: str, profiles: str | None) -> Job:
        """Start a simulation over two of the offered files (ValueError: not offered, or
        another simulation still runs)."""
        events_path = self._file(events)
        profiles_path = self._file(profiles) if profiles else None
        with self._lock:
            if any(j.state == "running" for j in self.jobs.values()):
                raise ValueError("a simulation is running; wait for it to finish")
            if self._folder is None:
                self._folder = tempfile.TemporaryDirectory(prefix="sopkit-console-")
            job = Job(next(self._ids), events, profiles)
            job.report = Path(self._folder.name) / f"report-{job.id}.html"
            self.jobs[job.id] = job
        threading.Thread(target=self._run, args=(job, events_path, profiles_path),
                         name=f"sopkit-console-simulation-{job.id}", daemon=True).start()
        return job

    def _run(self, job: Job, events: Path, profiles: Path | None) -> None:
        from sopkit._offline.report import ReportData, write_report
        from sopkit._offline.simulate import simulate

        def tick(label: str, done: int, total: int) -> None:
            if label == "events" and total:
                job.fraction = min(done / total, 1.0)

        assert job.report is not None, "set by start()"
        try:
            data = ReportData()
            summary = simulate(self.loaded, events, profiles=profiles, engine="native",
                               masked=True, progress=tick, report=data,
                               quarantine=job.report.with_suffix(".quarantine.jsonl"))
            write_report(job.report, summary, data)
            job.summary = summary.to_json()
            job.fraction = 1.0
            job.state = "done"
        except (SopkitError, OSError, ValueError) as exc:
            job.error = mask_text(str(exc))
            job.state = "failed"
        except Exception as exc:  # a bug must not leave the job "running" for ever
            log.exception("simulation %s failed", job.id)
            job.error = f"{type(exc).__name__}: {mask_text(str(exc))}"
            job.state = "failed"

    def close(self) -> None:
        if self._folder is not None:
            self._folder.cleanup()
