"""Partitions on a Dask distributed cluster (`simulate --executor dask`).

The only module of sopkit that imports dask, and only when called: `import sopkit` does not
load it, and without the optional `dask[distributed]` packages (`pip install 'sopkit[dask]'`)
the run is a usage error. With a scheduler address the partitions run on that cluster; without
one, on a `LocalCluster` of one single-threaded worker process per partition, started and
stopped here. The workers do not share this process's disk: each partition's result carries
its output (simulate.py), and the inputs must be on paths the workers read under the same
names (docs/cli.md#partitions).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from typing import Any, TypeVar

from sopkit._errors import SopkitError, UsageError
from sopkit._offline.barrier import Barrier, Gather, Outcome, answer, encode, first_error, serve

Job = TypeVar("Job")

INSTALL = "--executor dask needs the dask[distributed] packages: install sopkit[dask] " \
          "(pip install 'sopkit[dask]')"


def run(function: Callable[[Job, Barrier], dict[str, Any]], jobs: Sequence[Job], *,
        scheduler: str | None, gather: Gather,
        together: bool = False) -> Iterator[tuple[int, dict[str, Any]]]:
    """Each job's index and result, once every partition has finished (`function` runs on
    the workers; the partitions' barriers are relayed to `gather` through distributed
    queues, JSON text as with processes: barrier.py).

    `together`: the partitions meet at barriers, so each runs on a worker thread of its own
    (pinned to it); a cluster with fewer threads than partitions is a UsageError. UsageError
    if dask is missing or the scheduler cannot be reached. A SopkitError raised in
    partitions is raised here once all have finished, the first partition's of them; another
    exception at once.
    """
    try:
        from distributed import Client, LocalCluster, Queue
    except ImportError:
        raise UsageError(INSTALL) from None
    with ExitStack() as stack:
        if scheduler is None:
            # one process per partition, one thread each: a partition is pure Python work,
            # threads would share one core; no dashboard, and the scheduler's HTTP server
            # on a free port of 127.0.0.1 (not 8787, which another cluster may hold)
            cluster = stack.enter_context(LocalCluster(
                n_workers=len(jobs), threads_per_worker=1, processes=True,
                host="127.0.0.1", dashboard_address=None,
                scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                silence_logs=logging.ERROR))
            client = stack.enter_context(Client(cluster))
            client.wait_for_workers(len(jobs))
        else:
            try:
                client = stack.enter_context(Client(scheduler, timeout="10s"))
            except (OSError, ValueError) as exc:  # refused, timed out, or not an address
                raise UsageError(f"--scheduler {scheduler}: cannot reach the Dask scheduler "
                                 f"({exc})") from None
        token = uuid.uuid4().hex
        names = [(f"sopkit-{token}-up-{i}", f"sopkit-{token}-down-{i}")
                 for i in range(len(jobs))]
        ups = [Queue(up, client=client) for up, _ in names]
        downs = [Queue(down, client=client) for _, down in names]
        places = _places(client, len(jobs)) if together else [None] * len(jobs)
        # pure=False: the same job twice is two runs (the input files may have changed)
        futures = [client.submit(_guarded, function, job, name, pure=False,
                                 **({} if place is None else
                                    {"workers": place, "allow_other_workers": False}))
                   for job, name, place in zip(jobs, names, places, strict=True)]
        try:
            def receive(i: int) -> Any:
                while True:
                    try:
                        return json.loads(ups[i].get(timeout=_POLL))
                    except TimeoutError:
                        if futures[i].status in ("error", "cancelled", "lost"):
                            futures[i].result()  # raises what stopped it
                            raise RuntimeError(f"partition {i} stopped without a result") \
                                from None

            serve(len(jobs), receive, lambda i, text: downs[i].put(text), gather)
            outcomes = [future.result() for future in futures]
            for future in futures:
                future.release()  # its output is no longer kept on the worker
        finally:  # a partition crashed or the caller stopped: the others are not needed
            client.cancel(futures)
        error = first_error(outcomes)
        if error is not None:  # the first partition's (as with processes)
            raise error
        for index, (result, _) in enumerate(outcomes):
            yield index, result


_POLL = 2.0  # seconds between looks at a partition that has not spoken (did it crash?)


def _places(client: Any, count: int) -> list[list[str]]:
    """A worker thread for each partition (their addresses, a worker once per thread)."""
    workers = client.scheduler_info(n_workers=-1)["workers"]
    slots = [address for address, info in sorted(workers.items())
             for _ in range(int(info.get("nthreads", 1)))]
    if len(slots) < count:
        raise UsageError(f"--workers {count}: this playbook's partitions meet at population "
                         f"steps (RFM/CLV refits, hand-overs), so each needs a worker thread "
                         f"of its own, and the cluster has {len(slots)}: give --workers "
                         f"{len(slots)} or fewer, or add workers (docs/cli.md#partitions)")
    return [[address] for address in slots[:count]]


class QueueBarrier:
    """A partition's barrier over its two distributed queues (to and from the client)."""

    def __init__(self, up: Any, down: Any) -> None:
        self.up, self.down = up, down

    def exchange(self, kind: str, payload: Any) -> Any:
        self.up.put(encode(["barrier", kind, payload]))
        return answer(self.down.get())


def _guarded(function: Callable[[Job, Barrier], dict[str, Any]], job: Job,
             names: tuple[str, str]) -> Outcome:
    """`function(job)`, or the error a user is told of (not logged by the worker as a crash);
    either way the client hears that this partition is done."""
    from distributed import Queue

    up = Queue(names[0])
    try:
        outcome: Outcome = function(job, QueueBarrier(up, Queue(names[1]))), None
    except SopkitError as exc:
        outcome = {}, exc
    except BaseException:
        up.put(encode(["done"]))
        raise
    up.put(encode(["done"]))
    return outcome
