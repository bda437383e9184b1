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

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from functools import partial
from typing import Any, TypeVar

from sopkit._errors import SopkitError, UsageError

Job = TypeVar("Job")

INSTALL = "--executor dask needs the dask[distributed] packages: install sopkit[dask] " \
          "(pip install 'sopkit[dask]')"


def run(function: Callable[[Job], dict[str, Any]], jobs: Sequence[Job], *,
        scheduler: str | None) -> Iterator[tuple[int, dict[str, Any]]]:
    """Each job's index and result, as the partitions finish (`function` runs on the workers).

    UsageError if dask is missing or the scheduler cannot be reached. A SopkitError raised in
    partitions is raised here once all have finished, the first partition's of them; another
    exception at once.
    """
    try:
        from distributed import Client, LocalCluster, as_completed
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
        else:
            try:
                client = stack.enter_context(Client(scheduler, timeout="10s"))
            except (OSError, ValueError) as exc:  # refused, timed out, or not an address
                raise UsageError(f"--scheduler {scheduler}: cannot reach the Dask scheduler "
                                 f"({exc})") from None
        # pure=False: the same job twice is two runs (the input files may have changed)
        futures = client.map(partial(_guarded, function), list(jobs), pure=False)
        index = {future.key: i for i, future in enumerate(futures)}
        errors: dict[int, SopkitError] = {}
        try:
            for future in as_completed(futures):
                result, error = future.result()
                future.release()  # its output is no longer kept on the worker
                if error is not None:
                    errors[index[future.key]] = error
                else:
                    yield index[future.key], result
        finally:  # a partition crashed or the caller stopped: the others are not needed
            client.cancel(futures)
        if errors:  # the first partition's, whichever finished first (as with processes)
            raise errors[min(errors)]


def _guarded(function: Callable[[Job], dict[str, Any]],
             job: Job) -> tuple[dict[str, Any], SopkitError | None]:
    """`function(job)`, or the error a user is told of (not logged by the worker as a crash)."""
    try:
        return function(job), None
    except SopkitError as exc:
        return {}, exc
