"""Channel plugins: entry points in the group `sopkit.channels`, loaded lazily by type.

A plugin that fails to import is reported by name and does not stop the others.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from sopkit._errors import did_you_mean

from ._base import Channel, ChannelConfigError, ChannelFactory

GROUP = "sopkit.channels"


@dataclass(frozen=True)
class PluginInfo:
    """One installed channel type: where it comes from, and whether it loads."""

    type: str
    target: str
    distribution: str
    error: str | None = None


def _entry_points() -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for ep in sorted(entry_points(group=GROUP), key=lambda e: (e.name, e.value)):
        found.setdefault(ep.name, ep)  # the first of two plugins claiming one type wins
    return found


def installed() -> list[PluginInfo]:
    """Every channel type installed, each loaded once to report errors (`sopkit channels`)."""
    out = []
    for name, ep in _entry_points().items():
        error = None
        try:
            ep.load()
        except Exception as exc:  # a broken plugin is reported, never fatal
            error = f"{type(exc).__name__}: {exc}"
        dist = ep.dist.name if ep.dist is not None else "?"
        out.append(PluginInfo(name, ep.value, dist, error))
    return out


def factory(kind: str) -> ChannelFactory:
    """The factory for channel type `kind`; ChannelConfigError if missing or broken."""
    points = _entry_points()
    ep = points.get(kind)
    if ep is None:
        hint = did_you_mean(kind, points)
        raise ChannelConfigError(f"no channel plugin of type '{kind}' is installed"
                                 + (f"; {hint}" if hint else "")
                                 + " (see `sopkit channels`)", key="type")
    try:
        loaded: ChannelFactory = ep.load()
    except Exception as exc:  # report the plugin by name instead of a traceback
        raise ChannelConfigError(f"channel plugin '{kind}' ({ep.value}) failed to load: "
                                 f"{type(exc).__name__}: {exc}", key="type") from exc
    return loaded


def check_settings(name: str, table: Mapping[str, Any]) -> bool:
    """Run the settings checks `build` would (ChannelConfigError), without the environment:
    the type must be installed, and its factory's `check_config` must pass. False when the
    plugin has no `check_config`, so its settings are checked only by `build`."""
    config = {k: v for k, v in table.items() if k not in ("type", "description")}
    checker = getattr(factory(str(table["type"])), "check_config", None)
    if checker is None:
        return False
    checker(name, config)
    return True


def build(name: str, table: Mapping[str, Any], env: Mapping[str, str]) -> Channel:
    """A channel from a playbook `[channels.NAME]` table (with `type`) and the environment."""
    config = {k: v for k, v in table.items() if k not in ("type", "description")}
    return factory(str(table["type"]))(name, config, env)
