"""Simulations started from the console: the live playbook over a stored history, on a
thread of its own, with progress the page polls and the HTML report it opens.

Histories are the files in `sopkit serve --histories DIR` (only those: a form names a file,
never a path). One simulation runs at a time; each report is kept in a temporary folder
for the life of the process.

An admin may also run a playbook TOML of their own (`check_upload`): its text is written to
that private folder (mode 0700), loaded and checked as `sopkit check` does, and never run as
code or rendered as a template; a playbook that includes other files is refused (an include
would read files of the server).
"""

from __future__ import annotations

import itertools
import logging
import re
import shutil
import tempfile
import threading
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sopkit._errors import Location, PlaybookError, Problem, SopkitError
from sopkit._mask import mask_text
from sopkit._playbook.load import LoadedPlaybook, load

log = logging.getLogger("sopkit.serve")
SUFFIXES = (".jsonl", ".jsonl.gz", ".csv", ".csv.gz", ".parquet")
MAX_UPLOAD = 256 * 1024  # bytes of an uploaded playbook TOML
UPLOADED = "uploaded.toml"  # the name problems of an uploaded playbook are shown under


@dataclass
class Job:
    """One simulation: what it reads, how far it got, how it ended."""

    id: int
    events: str
    profiles: str | None
    playbook: str = ""  # "" for the live playbook, else the uploaded playbook's name
    state: str = "running"  # running, done, failed
    fraction: float = 0.0
    error: str = ""
    summary: dict[str, Any] = field(default_factory=dict)
    report: Path | None = None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "events": self.events, "profiles": self.profiles,
                "playbook": self.playbook,
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

    def _private(self) -> Path:
        """The process's private temporary folder (reports, uploaded playbooks)."""
        with self._lock:
            if self._folder is None:
                self._folder = tempfile.TemporaryDirectory(prefix="sopkit-console-")
            return Path(self._folder.name)

    def check_upload(self, text: str) -> tuple[LoadedPlaybook | None, list[dict[str, Any]]]:
        """An uploaded playbook, loaded, or its problems as `sopkit check` shows them (the
        file named `uploaded.toml`); the text is never run."""
        if len(text.encode("utf-8")) > MAX_UPLOAD:
            raise ValueError(f"the playbook is over {MAX_UPLOAD // 1024} KB")
        folder = Path(tempfile.mkdtemp(prefix="upload-", dir=self._private()))
        path = folder / UPLOADED
        path.write_text(text, encoding="utf-8")
        problems = _includes(text, str(path))
        loaded: LoadedPlaybook | None = None
        if not problems:
            from sopkit._playbook.channel_check import channel_problems

            try:
                loaded = load(path)
                problems = channel_problems(loaded)
            except PlaybookError as exc:
                problems = list(exc.problems)
        if problems:
            shutil.rmtree(folder, ignore_errors=True)
            lines = [line.rstrip("\r") for line in text.split("\n")]
            return None, [_shown(p, str(path), lines) for p in problems]
        return loaded, []

    def start(self, events: str, profiles: str | None,
              playbook: LoadedPlaybook | None = None) -> Job:
        """Start a simulation of the live playbook (or `playbook`, uploaded) over two of the
        offered files (ValueError: not offered, or another simulation still runs)."""
        events_path = self._file(events)
        profiles_path = self._file(profiles) if profiles else None
        folder = self._private()
        with self._lock:
            if any(j.state == "running" for j in self.jobs.values()):
                raise ValueError("a simulation is running; wait for it to finish")
            job = Job(next(self._ids), events, profiles,
                      "" if playbook is None else playbook.name)
            job.report = folder / f"report-{job.id}.html"
            self.jobs[job.id] = job
        threading.Thread(target=self._run,
                         args=(job, playbook or self.loaded, events_path, profiles_path),
                         name=f"sopkit-console-simulation-{job.id}", daemon=True).start()
        return job

    def _run(self, job: Job, loaded: LoadedPlaybook, events: Path,
             profiles: Path | None) -> None:
        from sopkit._offline.report import ReportData, write_report
        from sopkit._offline.simulate import simulate

        def tick(label: str, done: int, total: int) -> None:
            if label == "events" and total:
                job.fraction = min(done / total, 1.0)

        assert job.report is not None, "set by start()"
        try:
            data = ReportData()
            summary = simulate(loaded, events, profiles=profiles, engine="native",
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


def _includes(text: str, file: str) -> list[Problem]:
    """A problem if an uploaded playbook includes other files (TOML errors: left to load)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return []
    meta = data.get("playbook")
    if not isinstance(meta, dict) or "include" not in meta:
        return []
    found = re.search(r"^[ \t]*include[ \t]*=", text, re.MULTILINE)
    line = text.count("\n", 0, found.start()) + 1 if found else 1
    return [Problem(Location(file, line, 1, "playbook.include"),
                    "an uploaded playbook cannot include other files",
                    "paste the included tables into the playbook")]


def _shown(problem: Problem, file: str, lines: list[str]) -> dict[str, Any]:
    """A problem of an uploaded playbook as `sopkit check` prints it, file named
    `uploaded.toml`: location, message, the source line with a caret, the hint."""
    loc = problem.location
    name = UPLOADED if loc.file == file else Path(loc.file).name
    head = (f"{name}:{loc.line}:{loc.column}: {problem.severity}: "
            f"{loc.key + ': ' if loc.key else ''}{problem.message}")
    source = lines[loc.line - 1] if 0 < loc.line <= len(lines) else None
    return {"line": loc.line, "column": loc.column, "key": loc.key, "text": head,
            "source": None if source is None else f"{loc.line:>5} | {source}",
            "caret": None if source is None else " " * 6 + "| " + " " * (loc.column - 1) + "^",
            "hint": problem.suggestion}
