"""Starting `sopkit serve` as a real process on 127.0.0.1 for the tests/test_serve*.py."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from live_helpers import ENV

START = "2025-01-01T00:00:00"  # before every event of shop_history: nothing is late
END = "2025-03-01T12:00:00"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    """One `sopkit serve` process; `stop()` sends SIGTERM and returns (exit code, stderr)."""

    def __init__(self, playbook: Path, store: Path | str, *args: str, clock: str = START,
                 env: dict[str, str] | None = None, quarantine: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "sopkit", "serve", str(playbook), "--store",
                   str(store), "--port", str(self.port), "--clock", clock,
                   "--lateness", "0s", "--max-future", "none", "--send-from", "2000-01-01",
                   "--engine", "native", "--tick", "0.05", "--worker", "serve-test",
                   "--quarantine",
                   str(quarantine or Path(store).with_suffix(".quarantine.jsonl")), *args]
        self.proc = subprocess.Popen(command, env={**os.environ, **ENV, **(env or {})},
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
        for _ in range(400):  # waiting for a real server to listen, a bounded number of times
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited {self.proc.returncode}: "
                                     f"{self.proc.stderr.read() if self.proc.stderr else ''}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.kill()
        raise AssertionError("serve did not start")

    def post(self, path: str, body: Any = None, **kwargs: Any) -> httpx.Response:
        return httpx.post(self.url + path, json=body, timeout=30, **kwargs)

    def applied(self, seq: int) -> None:
        """Wait until the loop has committed inbox row `seq` (polls /readyz, bounded)."""
        for _ in range(400):
            if httpx.get(self.url + "/readyz", timeout=5).json().get("position", 0) >= seq:
                return
            time.sleep(0.02)
        raise AssertionError(f"the loop did not apply inbox row {seq}")

    def stop(self) -> tuple[int, str]:
        """SIGTERM: the server drains the inbox and exits."""
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=120)
        return self.proc.returncode, err

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.communicate(timeout=30)

    def __enter__(self) -> Served:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.kill()
