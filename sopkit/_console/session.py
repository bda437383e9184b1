"""Console sign-in: API key in, a session id out, kept in an HttpOnly SameSite=Strict cookie.

The key is checked once against SOPKIT_API_KEYS (constant time, as the API does); the
session remembers its scopes and a CSRF token that every POST form carries back. Sessions
live in this process's memory: a restart signs everyone out.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from sopkit._serve.auth import Keys, allows

COOKIE = "sopkit_console"
LIFETIME = 12 * 3600  # seconds a session lasts after sign-in
MAX_SESSIONS = 10_000  # the oldest are dropped beyond this
FAILURES = 10  # wrong keys one client may try per FAILURE_WINDOW before it must wait
FAILURE_WINDOW = 60.0


@dataclass(frozen=True)
class Session:
    """A signed-in browser: what its key may do, and the token its forms carry."""

    scopes: frozenset[str]
    csrf: str
    expires: float

    def may(self, needed: str) -> bool:
        return allows(set(self.scopes), needed)


class Sessions:
    """Session id -> Session, in memory, bounded and expiring."""

    def __init__(self, keys: Keys, wall: Callable[[], float] = time.time) -> None:
        self.keys = keys
        self.wall = wall
        self._by_id: dict[str, Session] = {}
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def throttled(self, client: str) -> bool:
        """Whether `client` (an address) tried too many wrong keys of late."""
        now = self.wall()
        with self._lock:
            recent = [t for t in self._failures.get(client, []) if t > now - FAILURE_WINDOW]
            if recent:
                self._failures[client] = recent
            else:
                self._failures.pop(client, None)
            return len(recent) >= FAILURES

    def failed(self, client: str) -> None:
        with self._lock:
            if len(self._failures) >= MAX_SESSIONS:  # a flood of addresses: start afresh
                self._failures.clear()
            self._failures.setdefault(client, []).append(self.wall())

    def sign_in(self, key: str) -> tuple[str, Session] | None:
        """A new session for a key that may read; None for an unknown or ingest-only key."""
        scopes = {"admin"} if self.keys.open else self.keys.scopes_of(key.strip())
        if not allows(scopes, "read"):
            return None
        session = Session(frozenset(scopes), secrets.token_urlsafe(32),
                          self.wall() + LIFETIME)
        sid = secrets.token_urlsafe(32)
        with self._lock:
            if len(self._by_id) >= MAX_SESSIONS:
                oldest = min(self._by_id, key=lambda s: self._by_id[s].expires)
                del self._by_id[oldest]
            self._by_id[sid] = session
        return sid, session

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        with self._lock:
            session = self._by_id.get(sid)
            if session is not None and session.expires <= self.wall():
                del self._by_id[sid]
                return None
        return session

    def sign_out(self, sid: str | None) -> None:
        with self._lock:
            self._by_id.pop(sid or "", None)


def token_ok(session: Session, given: str | None) -> bool:
    """Whether a form's CSRF token is the session's (constant time)."""
    return bool(given) and hmac.compare_digest(session.csrf.encode(), (given or "").encode())


def same_origin(origin: str | None, referer: str | None, host: str | None) -> bool:
    """Whether a POST comes from a page of this server: Origin (or, without it, Referer)
    names this host and port (either scheme: a TLS proxy in front may change it); a
    request with neither (not a browser's form) is let through to the CSRF token check."""
    if not host:
        return False
    given = origin if origin is not None else referer
    if given is None:
        return True
    parts = urlsplit(given.strip())
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host.strip().lower()
