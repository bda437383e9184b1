"""API keys for `sopkit serve`: `SOPKIT_API_KEYS="SCOPE:KEY,SCOPE:KEY"`.

Scopes: `ingest` (send events), `read` (read state and metrics), `admin` (everything). A key
comes as `Authorization: Bearer KEY` or, as Segment sends its write key, HTTP Basic with the
key as the user name (the password is ignored). Keys are compared in constant time
(hmac.compare_digest, against every configured key) and never logged or echoed.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
from dataclasses import dataclass

from sopkit._errors import UsageError

SCOPES = ("ingest", "read", "admin")
ENV = "SOPKIT_API_KEYS"


@dataclass(frozen=True)
class Keys:
    """The configured keys as (scope, key) pairs; empty: no key needed (loopback only)."""

    pairs: tuple[tuple[str, bytes], ...] = ()

    @property
    def open(self) -> bool:
        return not self.pairs

    def scopes_of(self, key: str) -> set[str]:
        """The scopes `key` has (empty for an unknown key); every key is compared."""
        given = key.encode()
        found: set[str] = set()
        for scope, known in self.pairs:
            if hmac.compare_digest(given, known):
                found.add(scope)
        return found


def parse_keys(text: str | None) -> Keys:
    """`SCOPE:KEY,SCOPE:KEY` as Keys; UsageError naming the entry (never the key) if bad."""
    pairs: list[tuple[str, bytes]] = []
    for i, item in enumerate((text or "").split(","), 1):
        item = item.strip()
        if not item:
            continue
        scope, sep, key = item.partition(":")
        scope = scope.strip().lower()
        if not sep or scope not in SCOPES:
            raise UsageError(f"{ENV}: entry {i} is not SCOPE:KEY with SCOPE one of "
                             f"{', '.join(SCOPES)}")
        if len(key.strip()) < 8:
            raise UsageError(f"{ENV}: entry {i} ({scope}): the key is shorter than 8 "
                             "characters")
        pairs.append((scope, key.strip().encode()))
    return Keys(tuple(pairs))


def presented_key(authorization: str | None) -> str | None:
    """The key in an Authorization header (Bearer, or Basic with the key as user name)."""
    if not authorization:
        return None
    kind, _, value = authorization.strip().partition(" ")
    value = value.strip()
    if kind.lower() == "bearer":
        return value or None
    if kind.lower() == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        user = decoded.partition(":")[0]
        return user or None
    return None


def allows(scopes: set[str], needed: str) -> bool:
    """Whether a key with `scopes` may do what needs `needed` (admin may do everything)."""
    return needed in scopes or "admin" in scopes


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or `localhost`) only listens on this machine."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False
