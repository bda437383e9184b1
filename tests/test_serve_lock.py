"""One event loop per store, for `sopkit serve` as for `run`."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import httpx
from live_helpers import ENV, shop_playbook
from serve_helpers import Served
from typer.testing import CliRunner

from sopkit._cli.app import app

EVENT = {"customer_id": "c1", "type": "purchase", "ts": "2025-01-02T10:00:00", "amount": "1"}


def test_a_second_process_on_the_store_is_refused(tmp_path: Path) -> None:
    """While `serve` holds a store, another `serve` (or `run`) on it exits 2 naming it."""
    playbook = shop_playbook(tmp_path, "http://127.0.0.1:9/hook")
    store = tmp_path / "live.db"
    with Served(playbook, store) as server:
        second = CliRunner().invoke(app, ["serve", str(playbook), "--store", str(store),
                                          "--port", "9"], env=ENV)
        assert second.exit_code == 2
        assert "serve-test" in second.output and "holds its event loop" in second.output
        assert server.post("/v1/events", EVENT).status_code == 202
        code, err = server.stop()
    assert code == 0, err


def test_the_service_stops_with_exit_1_when_its_loop_lock_is_taken(tmp_path: Path) -> None:
    """A `run` restarted under the service's worker name takes the store over: the service
    notices at its next commit, stops serving and exits 1 saying why."""
    playbook = shop_playbook(tmp_path, "http://127.0.0.1:9/hook")
    store = tmp_path / "live.db"
    with Served(playbook, store) as server:
        taken = subprocess.run([sys.executable, "-m", "sopkit", "run", str(playbook),
                                "--store", str(store), "--once", "--worker", "serve-test",
                                "--clock", "2025-01-01T00:00:00", "--lateness", "0s"],
                               env={**os.environ, **ENV}, capture_output=True, text=True,
                               timeout=120, check=False)
        assert taken.returncode == 0, taken.stderr
        with contextlib.suppress(httpx.TransportError):  # it may be stopping already
            server.post("/v1/events", EVENT)
        _, err = server.proc.communicate(timeout=120)  # it stops on its own
    assert server.proc.returncode == 1
    assert "event-loop lock was taken over" in err or "took over the event loop" in err
