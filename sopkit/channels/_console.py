"""The local channels: `console` (a masked line per action on stdout) and `jsonl` (a file).

`jsonl` is a real delivery: it writes the contact data unmasked, and it is idempotent. It
keeps the keys already in its file, holds an exclusive lock while it reads what other writers
appended and writes its own lines, and writes a dispatcher's batch with one `write` (then one
`fsync`: it is a `BatchSender`), so a key is never written twice and a line is never
interleaved. A line cut short by a crash
(a process killed mid-write) is cut off when the file is next opened: its message was never
reported delivered, so the outbox sends it again.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sopkit import _json  # compact json.dumps, exactly, faster
from sopkit._mask import mask_text

from ._base import ChannelConfigError, Message, Receipt
from ._webhook import check_keys

SUMMARY_CHARS = 80


def _one_line(text: str, limit: int = SUMMARY_CHARS) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True,
                      default=str)


def summary(message: Message) -> str:
    """What the action says, in short: the message, the task note, the payload, the tag ..."""
    body = message.body
    kind = message.kind
    if kind == "send":
        text = str(body.get("message") or f"template {body.get('template', '?')}")
        title = body.get("title")
        return f"{title}: {text}" if title else text
    if kind == "task":
        extra = [f"{k} {body[k]}" for k in ("due", "assignee") if body.get(k)]
        note = str(body.get("note", ""))
        return note + (f" ({', '.join(extra)})" if extra else "")
    if kind == "webhook":
        return _compact(body.get("payload", {}))
    if kind in ("tag", "untag"):
        return str(body.get("tag", ""))
    if kind == "reassign":
        return f"{body.get('from_owner') or '-'} → {body.get('to', '?')}"
    return _compact(dict(body))


class ConsoleChannel:
    """Print one masked line per action to stdout: time, customer, rule, kind, channel, gist.

    No config keys. Phone numbers and e-mail addresses are masked, as everywhere sopkit
    prints.
    """

    @staticmethod
    def check_config(name: str, config: Mapping[str, Any]) -> None:
        """The settings checks of the constructor (it takes none)."""
        check_keys(name, "console", config, ())

    def __init__(self, name: str, config: Mapping[str, Any], env: Mapping[str, str]) -> None:
        self.check_config(name, config)
        self.name = name

    def line(self, message: Message) -> str:
        """The masked line printed for `message` (without the newline)."""
        gist = _one_line(mask_text(summary(message)))  # masked before it is cut short
        text = (f"{message.time}  {message.customer_id}  {message.rule}  "
                f"{message.kind} → {message.channel}  {gist}")
        return mask_text(text)

    def send(self, message: Message) -> Receipt:
        out = sys.stdout  # looked up per call so redirection (and pytest capture) applies
        text = self.line(message) + "\n"
        try:
            out.write(text)
        except UnicodeEncodeError:  # a terminal that cannot show Chinese: escape, never fail
            out.write(text.encode("ascii", "backslashreplace").decode("ascii"))
        out.flush()
        return Receipt.delivered("printed")


class JsonlChannel:
    """Append each action (with its contact data) as one JSON line to `path`; idempotent.

    Config: `path` (required; relative to the working directory, parent folders are
    created), `fsync` (default true: each line is on disk before the receipt says
    delivered; one fsync per batch the dispatcher hands over, `send_batch`). `clock` (unix
    seconds) is injectable for tests.
    """

    KEYS = ("path", "fsync")

    @classmethod
    def check_config(cls, name: str, config: Mapping[str, Any]) -> None:
        """The settings checks of the constructor; nothing is created or opened."""
        check_keys(name, "jsonl", config, cls.KEYS)
        raw = config.get("path")
        if raw is None:
            raise ChannelConfigError(f"channel '{name}': 'path' is required, e.g. "
                                     "path = \"out/actions.jsonl\"", key="path")
        if not isinstance(raw, str) or not raw.strip():
            raise ChannelConfigError(f"channel '{name}': 'path' must be a file path",
                                     key="path")
        if not isinstance(config.get("fsync", True), bool):
            raise ChannelConfigError(f"channel '{name}': 'fsync' must be true or false",
                                     key="fsync")
        if Path(raw).expanduser().is_dir():
            raise ChannelConfigError(f"channel '{name}': 'path' {raw!r} is a folder; name a "
                                     f"file in it, e.g. path = \"{raw}/actions.jsonl\"",
                                     key="path")

    def __init__(self, name: str, config: Mapping[str, Any], env: Mapping[str, str], *,
                 clock: Callable[[], float] = time.time) -> None:
        self.check_config(name, config)
        self.name = name
        raw = str(config["path"])
        self.fsync: bool = config.get("fsync", True)
        self.path = Path(raw).expanduser()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError as exc:
            raise ChannelConfigError(f"channel '{name}': cannot open 'path' {raw!r}: "
                                     f"{exc.strerror or exc}") from exc
        self._clock = clock
        self._keys: set[str] = set()
        self._offset = 0  # bytes of the file already read
        self._lines = 0
        self._mutex = threading.Lock()
        try:
            with self._locked():
                self._catch_up()
        except ChannelConfigError:
            os.close(self._fd)
            raise

    # The file lock serialises writers across instances and processes; the mutex, threads.
    def _locked(self) -> _FileLock:
        return _FileLock(self._fd, self._mutex)

    def _catch_up(self) -> None:
        """Read what was appended since last time; repair a torn last line."""
        size = os.fstat(self._fd).st_size
        if size < self._offset:
            raise ChannelConfigError(f"channel '{self.name}': {self.path} shrank while in use; "
                                     "only sopkit may write to it")
        if size == self._offset:
            return
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            for raw in f:
                if not raw.endswith(b"\n"):
                    self._repair_tail(raw)
                    break
                self._lines += 1
                self._offset += len(raw)
                self._remember(raw, complete=True)

    def _repair_tail(self, raw: bytes) -> None:
        """A last line without a newline: keep it if it is a whole record, else cut it off."""
        if self._remember(raw, complete=False):
            os.write(self._fd, b"\n")
            self._lines += 1
            self._offset += len(raw) + 1
        else:
            os.ftruncate(self._fd, self._offset)

    def _remember(self, raw: bytes, *, complete: bool) -> bool:
        if not raw.strip():
            return True
        try:
            record = json.loads(raw)
        except ValueError as exc:
            if not complete:
                return False
            raise ChannelConfigError(
                f"channel '{self.name}': {self.path} line {self._lines} is not JSON; the jsonl "
                "channel appends only to files it wrote: choose another 'path'") from exc
        if isinstance(record, dict) and isinstance(record.get("key"), str):
            self._keys.add(record["key"])
        return True

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def send(self, message: Message) -> Receipt:
        return self.send_batch([message])[0]

    def send_batch(self, messages: list[Message]) -> list[Receipt]:
        """Write the messages whose keys the file does not hold yet with one `write` and one
        `fsync` (a `BatchSender`): every receipt says delivered once the lines are on disk."""
        with self._locked():
            self._catch_up()
            stamp = dt.datetime.fromtimestamp(self._clock(), dt.UTC)
            written_at = stamp.isoformat(timespec="seconds")
            chunks: list[bytes] = []
            receipts: list[Receipt] = []
            new: set[str] = set()
            lines = self._lines
            for message in messages:
                if message.key in self._keys or message.key in new:
                    receipts.append(Receipt.delivered("already written"))
                    continue
                record = {**message.to_json(), "status": "delivered", "written_at": written_at}
                chunks.append(_json.dumpb(record, default=str) + b"\n")
                new.add(message.key)
                lines += 1
                receipts.append(Receipt.delivered(f"written to {self.path} line {lines}",
                                                  provider_id=f"line {lines}"))
            if not chunks:
                return receipts
            data = b"".join(chunks)
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            if self.fsync:
                os.fsync(self._fd)
            self._offset += len(data)
            self._lines = lines
            self._keys |= new
            return receipts

    def close(self) -> None:
        """Close the file."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> JsonlChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _FileLock:
    """An exclusive `flock` on the file plus a thread mutex, as a context manager."""

    def __init__(self, fd: int, mutex: threading.Lock) -> None:
        self.fd = fd
        self.mutex = mutex

    def __enter__(self) -> None:
        self.mutex.acquire()
        if sys.platform != "win32":
            import fcntl
            fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        if sys.platform != "win32":
            import fcntl
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        self.mutex.release()
