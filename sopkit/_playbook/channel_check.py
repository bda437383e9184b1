"""`sopkit check` on channel tables: the settings checks `sopkit run` makes, short of secrets.

`run` builds every channel from its `[channels.NAME]` table and the environment; a table it
would refuse (an unknown key such as `corpid` for `corp_id`, a URL with a password in it, a
timeout that is not a number) is an error here, located at the key, with the suggestion
`run` gives. Secrets are not read: a `*_env` key must name a variable, which need not be set.

A table with nothing but `type` (and `description`) is a label that `simulate` is content
with; it is not checked, since `run` needs its settings anyway and says so.

Lint (`check --strict`): `plain-http`, a channel URL with http:// to a host that is not
this machine (messages and customer data would cross the network unencrypted).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from urllib.parse import urlsplit

from sopkit._errors import Location, Problem
from sopkit._playbook.load import LoadedPlaybook
from sopkit.channels import ChannelConfigError, check_settings

URL_KEYS = ("url", "base_url")


def channel_problems(loaded: LoadedPlaybook) -> list[Problem]:
    """One error per channel table `run` would refuse for its settings (not its secrets)."""
    out: list[Problem] = []
    for name, channel in loaded.model.channels.items():
        extra = dict(channel.model_extra or {})
        if not extra:
            continue
        try:
            check_settings(name, {"type": channel.type, **extra})
        except ChannelConfigError as exc:
            key = exc.key if exc.key in extra or exc.key == "type" else None
            path = ("channels", name, key) if key else ("channels", name)
            out.append(Problem(loaded.origins.locate(path), exc.detail, exc.hint))
    return out


def plain_http(loaded: LoadedPlaybook) -> Iterator[tuple[tuple[str, ...], Location, str]]:
    """(key path, location, host) of each channel URL that is http:// to another machine."""
    for name, channel in loaded.model.channels.items():
        for key in URL_KEYS:
            value = (channel.model_extra or {}).get(key)
            if not isinstance(value, str) or not value.lower().startswith("http://"):
                continue
            try:
                host = urlsplit(value).hostname or ""
            except ValueError:
                continue
            if host and not _loopback(host):
                path = ("channels", name, key)
                yield path, loaded.origins.locate(path), host


def _loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
