"""A real HTTP server on 127.0.0.1 for channel tests (stdlib only).

In a test, as a context manager::

    with Receiver() as rx:
        rx.script(Reply(429, headers={"Retry-After": "30"}))   # then the default, 200
        channel = WebhookChannel("hook", {"url": rx.url + "/hook"}, {})
        channel.send(message)
        assert rx.requests[0].json()["type"] == "sopkit.send"

It records every request (method, path, headers, body) before answering, counts them by
`webhook-id`, and answers from a script: replies queued for one path, then replies queued for
any path, then the default reply. A reply's `delay` holds the answer back to provoke client
timeouts; stopping the receiver cuts every delay short, so no test waits it out.

As a standalone process (for crash tests)::

    python tests/http_receiver.py --port-file F --log F.jsonl [--status 200] [--script J]

writes its port to F (atomically, once it listens), appends each request as one JSON line
to F.jsonl (flushed per request) and runs until SIGTERM or SIGINT. `--script` takes a JSON
list of replies (`{"status", "headers", "body", "delay", "path"}`) or `@file` holding one.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any


@dataclass
class Reply:
    """One scripted answer: status, headers, body (bytes, text or JSON value), delay (s)."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = b""
    delay: float = 0.0

    def encoded(self) -> tuple[bytes, dict[str, str]]:
        headers = dict(self.headers)
        if isinstance(self.body, bytes):
            data = self.body
        elif isinstance(self.body, str):
            data = self.body.encode("utf-8")
            headers.setdefault("Content-Type", "text/plain; charset=utf-8")
        else:
            data = json.dumps(self.body, ensure_ascii=False).encode("utf-8")
            headers.setdefault("Content-Type", "application/json; charset=utf-8")
        return data, headers

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Reply:
        return cls(status=int(data.get("status", 200)), headers=dict(data.get("headers", {})),
                   body=data.get("body", b""), delay=float(data.get("delay", 0.0)))


@dataclass(frozen=True)
class Request:
    """One request as received: header names are lower-case; `body` is the raw bytes."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    received_at: float
    status: int  # what the receiver answered (or was about to, if the client gave up)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self) -> Any:
        return json.loads(self.body)

    def to_json(self) -> dict[str, Any]:
        return {"received_at": self.received_at, "method": self.method, "path": self.path,
                "headers": self.headers, "body": self.body.decode("utf-8", errors="replace"),
                "status": self.status}


class Receiver:
    """The threaded server, its record of requests and its script of replies."""

    def __init__(self, *, default: Reply | None = None, log: str | Path | None = None,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self.default = default or Reply(200, body={"ok": True})
        self._log_path = Path(log) if log is not None else None
        self._log: Any = None
        self._host, self._port = host, port
        self._requests: list[Request] = []
        self._any: collections.deque[Reply] = collections.deque()
        self._by_path: dict[str, collections.deque[Reply]] = {}
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._connections: set[socket.socket] = set()
        self._thread: threading.Thread | None = None

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> Receiver:
        server = ThreadingHTTPServer((self._host, self._port), _Handler)
        server.daemon_threads = True
        server.receiver = self  # type: ignore[attr-defined]  # handlers find us through it
        self._server = server
        if self._log_path is not None:
            self._log = open(self._log_path, "a", encoding="utf-8")  # noqa: SIM115  # closed in stop()
        self._thread = threading.Thread(target=server.serve_forever, name="http-receiver",
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # cuts every pending delay short
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._changed:
            open_connections = list(self._connections)
        for conn in open_connections:  # keep-alive connections would outlive the server
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "start the receiver first"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The base URL, e.g. http://127.0.0.1:43211 (append a path)."""
        return f"http://127.0.0.1:{self.port}"

    # -- scripting and inspection ------------------------------------------------------------

    def script(self, *replies: Reply, path: str | None = None) -> None:
        """Queue replies, used once each in order (for `path` only, when given)."""
        with self._changed:
            queue = self._any if path is None else self._by_path.setdefault(path, (
                collections.deque()))
            queue.extend(replies)

    @property
    def requests(self) -> list[Request]:
        with self._changed:
            return list(self._requests)

    def counts(self) -> collections.Counter[str]:
        """How many requests carried each webhook-id."""
        return collections.Counter(r.headers.get("webhook-id", "") for r in self.requests)

    def wait_for(self, count: int, timeout: float = 5.0) -> bool:
        """Block until at least `count` requests arrived (for requests from other threads)."""
        with self._changed:
            return self._changed.wait_for(lambda: len(self._requests) >= count, timeout)

    # -- called by the handler ---------------------------------------------------------------

    def _next_reply(self, path: str) -> Reply:
        queue = self._by_path.get(path.split("?", 1)[0])
        if queue:
            return queue.popleft()
        if self._any:
            return self._any.popleft()
        return self.default

    def _record(self, method: str, path: str, headers: dict[str, str],
                body: bytes) -> Reply:
        with self._changed:
            reply = self._next_reply(path)
            request = Request(method, path, headers, body, time.time(), reply.status)
            self._requests.append(request)
            if self._log is not None:
                self._log.write(json.dumps(request.to_json(), ensure_ascii=False) + "\n")
                self._log.flush()
            self._changed.notify_all()
        return reply


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers do
    timeout = 10  # idle keep-alive connections close on their own

    def setup(self) -> None:
        super().setup()
        receiver: Receiver = self.server.receiver  # type: ignore[attr-defined]  # set in start()
        with receiver._changed:
            receiver._connections.add(self.connection)

    def finish(self) -> None:
        receiver: Receiver = self.server.receiver  # type: ignore[attr-defined]  # set in start()
        with receiver._changed:
            receiver._connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return b"".join(self._chunks())
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _chunks(self) -> Iterator[bytes]:
        while True:
            size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return
            yield self.rfile.read(size)
            self.rfile.readline()

    def _handle(self) -> None:
        receiver: Receiver = self.server.receiver  # type: ignore[attr-defined]  # set in start()
        headers = {k.lower(): v for k, v in self.headers.items()}
        body = self._body()
        length = self.headers.get("Content-Length")
        if length is not None and len(body) < int(length):
            # the client went away mid-request (a killed sender): nothing was delivered, as a
            # real server would see a broken request and not process it
            self.close_connection = True
            return
        reply = receiver._record(self.command, self.path, headers, body)
        if reply.delay and receiver._stopping.wait(reply.delay):
            self.close_connection = True
            return  # stopped while holding the answer back: drop the connection
        data, extra = reply.encoded()
        try:
            self.send_response(reply.status)
            for name, value in extra.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (a timeout test)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the record is the log


def _write_port(path: Path, port: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{port}\n", encoding="ascii")
    os.replace(tmp, path)  # readers see the whole number or no file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A recording HTTP receiver on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any free)")
    parser.add_argument("--port-file", type=Path, help="write the port here once listening")
    parser.add_argument("--log", type=Path, help="append each request as a JSON line here")
    parser.add_argument("--status", type=int, default=200, help="the default status")
    parser.add_argument("--script", help="JSON list of replies, or @file holding one")
    args = parser.parse_args(argv)

    receiver = Receiver(default=Reply(args.status, body={"ok": args.status < 300}),
                        log=args.log, port=args.port)
    if args.script:
        text = args.script
        if text.startswith("@"):
            text = Path(text[1:]).read_text(encoding="utf-8")
        for item in json.loads(text):
            receiver.script(Reply.from_json(item), path=item.get("path"))
    done = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    receiver.start()
    if args.port_file is not None:
        _write_port(args.port_file, receiver.port)
    print(f"listening on {receiver.url}", file=sys.stderr, flush=True)
    while not done.wait(0.5):
        pass
    receiver.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
