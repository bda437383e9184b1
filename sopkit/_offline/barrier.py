"""Barriers: where partitions of a simulation meet to decide what reads every customer.

A partition that reaches a population step (an RFM or CLV refit, a hand-over the team shares
out) sends what its own customers contribute and waits; when every partition has sent, the
coordinator (the parent process, `Gather`) computes the step's answer once, from all of it,
and hands each partition its part. Every partition reaches the same steps in the same order
(they all keep the one clock through every event), so one round of messages is one
step. What crosses is JSON text (floats written exactly), the same on every executor:

- "rfm": each partition's (recency, frequency, monetary) values of its customers who have
  bought; the answer is the population's breakpoints (the values sorted: no order matters);
- "clv": each partition's customer ids and (x, t_x, T, m) rows; the coordinator fits the
  models on every row in customer-id order, as one process does, keeps the parameters in
  force (the last fit that succeeded), computes every row's facts and answers each
  partition with the parameters and its own rows' facts;
- "handover": the departed staff member's customers in each partition and, for
  least_loaded, each team member's count; the answer is all of them by customer id and the
  counts added up.

`run_processes` runs the partitions in local processes with a pipe each; the Dask executor
(dask_executor.py) carries the same messages on distributed queues. A partition that fails
ends the run: the partitions waiting at a barrier are told to stop (`Aborted`).
"""

from __future__ import annotations

import json
import multiprocessing
import threading
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any, Protocol, TypeVar

from sopkit._errors import SopkitError
from sopkit._ir.types import PlaybookIR
from sopkit._runtime import clvfacts as _clvfacts
from sopkit._stats import rfm as _rfm

Job = TypeVar("Job")
Outcome = tuple[dict[str, Any], BaseException | None]  # a partition's result, or its error


class Aborted(SopkitError):
    """Another partition failed while this one waited at a barrier (not shown to users)."""


class Barrier(Protocol):
    """A partition's end of the channel to the coordinator."""

    def exchange(self, kind: str, payload: Any) -> Any:
        """Send this partition's part of a population step; the coordinator's answer."""


def encode(message: Any) -> str:
    return json.dumps(message, ensure_ascii=False, allow_nan=True)


def answer(text: str) -> Any:
    """The payload of the coordinator's reply; Aborted when told to stop."""
    status, payload = json.loads(text)
    if status != "ok":
        raise Aborted("another partition failed")
    return payload


class Gather:
    """The coordinator's side of every population step (see the module's docstring)."""

    def __init__(self, ir: PlaybookIR) -> None:
        self.clv = ir.get("clv")
        self.clv_params: tuple[Any, Any] | None = None  # the parameters in force
        self._models: Any = None

    def reply(self, kind: str, payloads: Sequence[Any]) -> list[Any]:
        """Each partition's answer to one step, from every partition's payload."""
        if kind == "rfm":
            bought = [v for part in payloads for v in part]
            found = [_rfm.breakpoints([v[k] for v in bought]) for k in range(3)]
            return [found] * len(payloads)
        if kind == "handover":
            owned = sorted(cid for part in payloads for cid in part[0])
            load: dict[str, int] = {}
            for part in payloads:
                for staff, n in part[1].items():
                    load[staff] = load.get(staff, 0) + n
            return [[owned, load]] * len(payloads)
        if kind == "clv":
            return self._clv(payloads)
        raise ValueError(f"unknown population step {kind!r}")

    def _clv(self, payloads: Sequence[Any]) -> list[Any]:
        assert self.clv is not None
        if self._models is None:
            self._models = _clvfacts.load_models()
        pairs = sorted((cid, tuple(row)) for part in payloads
                       for cid, row in zip(part[0], part[1], strict=True))
        rows = [row for _, row in pairs]
        fitted = _clvfacts.fit(self._models, rows, self.clv["amount"] is not None)
        if fitted is not None:
            self.clv_params = fitted
        if self.clv_params is None:
            return [[None, None]] * len(payloads)
        horizon = self.clv["horizon"] / (7 * 86400)
        facts = dict(zip((cid for cid, _ in pairs),
                         _clvfacts.facts_of(self._models, self.clv_params, rows, horizon),
                         strict=True))
        bgnbd, gamma = self.clv_params
        params = [list(bgnbd.as_tuple()), None if gamma is None else list(gamma.as_tuple())]
        return [[params, [facts[cid] for cid in part[0]]] for part in payloads]


def clv_params(data: Any) -> tuple[Any, Any]:
    """The CLV parameters a "clv" answer carries, as the models read them."""
    from sopkit._stats.clv import BGNBDParams, GammaGammaParams  # numpy, scipy: when needed

    return BGNBDParams(*data[0]), None if data[1] is None else GammaGammaParams(*data[1])


def serve(count: int, receive: Callable[[int], Any], send: Callable[[int, str], None],
          gather: Gather) -> None:
    """Relay rounds of barrier messages until every partition has finished.

    `receive(i)` is partition i's next message: ["barrier", kind, payload] or ["done"];
    `send(i, text)` answers a barrier. When one partition finishes while others wait (it
    failed), the waiting ones are told to stop and finish too.
    """
    done = [False] * count
    while not all(done):
        waiting: dict[int, Any] = {}
        for i in range(count):
            if not done[i]:
                message = receive(i)
                if message[0] == "barrier":
                    waiting[i] = message
                else:
                    done[i] = True
        if not waiting:
            continue
        kinds = {message[1] for message in waiting.values()}
        if any(done) or len(kinds) != 1:  # a partition failed (or they are out of step)
            for i in waiting:
                send(i, encode(["abort", None]))
            continue
        replies = gather.reply(kinds.pop(), [waiting[i][2] for i in sorted(waiting)])
        for i, reply in zip(sorted(waiting), replies, strict=True):
            send(i, encode(["ok", reply]))


def first_error(outcomes: Sequence[Outcome]) -> BaseException | None:
    """The error a user is told of: the first partition's that is not a stop it was told."""
    errors = [error for _, error in outcomes if error is not None]
    real = [error for error in errors if not isinstance(error, Aborted)]
    if real:
        return real[0]
    if errors:
        raise RuntimeError("the partitions of the simulation fell out of step")
    return None


# -- local processes --------------------------------------------------------------------------


class PipeBarrier:
    """A partition's barrier over its pipe to the parent process."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def exchange(self, kind: str, payload: Any) -> Any:
        self.conn.send(("barrier", encode(["barrier", kind, payload])))
        return answer(self.conn.recv())


Function = Callable[[Any, Barrier, Connection | None], dict[str, Any]]


def _child(function: Function, job: Any, conn: Connection, feed: Connection | None) -> None:
    outcome: Outcome
    try:
        outcome = function(job, PipeBarrier(conn), feed), None
    except BaseException as exc:  # raised in the parent (a SopkitError is the user's)
        outcome = {}, exc
    try:
        conn.send(("done", outcome))
    except (TypeError, AttributeError, ValueError):  # an error that cannot be pickled
        conn.send(("done", ({}, RuntimeError("a partition failed:\n"
                                              + traceback.format_exc()))))
    conn.close()


class Feed(Protocol):
    """What feeds the partitions their input (feed.Feeding), from the parent process."""

    def start(self, conns: Sequence[Connection]) -> None:
        """Start feeding, one connection per partition."""

    def stop(self) -> None:
        """Feed no more: a partition failed."""

    def join(self) -> None:
        """Wait until feeding has ended."""


def run_processes(function: Function, jobs: Sequence[Job], gather: Gather,
                  feed: Feed | None = None) -> list[Outcome]:
    """Each job in a process of its own (fork where there is one: a script that calls
    simulate() needs no __main__ guard), relaying their barriers; their outcomes in order.
    With `feed`, each also gets the reading end of a pipe `feed` writes to (else None)."""
    methods = multiprocessing.get_all_start_methods()
    # fork copies only the calling thread: with other threads alive (an embedding service,
    # a Dask client) a lock one of them holds stays locked in the child for ever
    alone = threading.active_count() == 1
    context: Any
    if "fork" in methods and alone:
        context = multiprocessing.get_context("fork")
    elif "forkserver" in methods:
        context = multiprocessing.get_context("forkserver")
    else:
        context = multiprocessing.get_context("spawn")
    pipes: list[Connection] = []
    feeds: list[Connection] = []
    processes = []
    outcomes: list[Outcome | None] = [None] * len(jobs)
    failed = True
    try:
        for job in jobs:  # each child end closed here once its process holds it, so a
            parent, child = context.Pipe()  # partition that dies is an EOF at once
            reader, writer = context.Pipe(duplex=False) if feed else (None, None)
            process = context.Process(target=_child, args=(function, job, child, reader),
                                      daemon=True)
            process.start()
            child.close()
            if reader is not None and writer is not None:
                reader.close()
                feeds.append(writer)
            pipes.append(parent)
            processes.append(process)
        if feed is not None:
            feed.start(feeds)

        def receive(i: int) -> Any:
            try:
                kind, data = pipes[i].recv()
            except EOFError:
                raise RuntimeError(f"partition {i} stopped without a result") from None
            if kind == "done":
                outcomes[i] = data
                return ["done"]
            return json.loads(data)

        serve(len(jobs), receive, lambda i, text: pipes[i].send(text), gather)
        failed = any(o is None or o[1] is not None for o in outcomes)
    finally:
        if feed is not None and failed:
            feed.stop()
        for process in processes:  # a partition stopped: a feed to it is dropped
            if process.is_alive() and any(o is None for o in outcomes):
                process.terminate()
            process.join()
        if feed is not None:
            feed.join()
        for parent in pipes:
            parent.close()
    return [o for o in outcomes if o is not None]
