"""Group commit of the ingest endpoints' appends to the inbox, by one task.

Each request hands its entries to the `Committer` and waits. One commit runs at a time, in a
worker thread; every request that arrives meanwhile goes into the next one, together. So a
request costs no thread of its own, and a burst of requests costs one disk sync
(benchmarks/serve-profile.md: requests on threads of their own reached the inbox a few at
a time).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import anyio

from sopkit._live.inbox import Entry, Inbox

Append = tuple[Sequence[Entry], int, int, int]  # entries, now, loop position, bound


class Committer:
    """`await append(...)`: `Inbox.append` for one request, committed with the others
    waiting; its last seq, or the request's InboxFull or StoreError raised."""

    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox
        self._waiting: list[tuple[Append, asyncio.Future[int]]] = []
        self._task: asyncio.Task[None] | None = None

    async def append(self, entries: Sequence[Entry], now: int, after: int, bound: int) -> int:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting.append(((entries, now, after, bound), future))
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        return await future

    async def _run(self) -> None:
        """Commit what waits, again while more arrived meanwhile; every waiting request is
        answered, whatever happens."""
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                try:
                    outcomes = await anyio.to_thread.run_sync(
                        self.inbox.append_many, [append for append, _ in batch])
                except Exception as exc:  # the inbox failed as a whole: each request hears it
                    outcomes = [exc] * len(batch)
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if future.done():  # the client went away; its rows are committed
                        continue
                    if isinstance(outcome, Exception):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
        finally:
            self._task = None
            for _, future in self._waiting:  # only if this task itself failed
                if not future.done():
                    future.set_exception(RuntimeError("the inbox committer stopped"))
            self._waiting = []
