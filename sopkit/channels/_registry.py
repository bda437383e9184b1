"""Channel plugins: entry points in the group `sopkit.channels`, loaded lazily by type.

A plugin that fails to import is reported by name and does not stop the others.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from sopkit._errors import did_you_mean

from ._base import Channel, ChannelConfigError, ChannelFactory
from ._capabilities import CheckableFactory, TagMirror

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
    plugin is not a CheckableFactory, so its settings are checked only by `build`."""
    found = factory(str(table["type"]))
    if not isinstance(found, CheckableFactory):
        return False
    found.check_config(name, _config(table))
    return True


def mirrored_tags(table: Mapping[str, Any]) -> Collection[str]:
    """The tags a channel of this table mirrors (its factory is a TagMirror), else none;
    ChannelConfigError if its type is not installed."""
    found = factory(str(table["type"]))
    return found.mirrored_tags(_config(table)) if isinstance(found, TagMirror) else ()


def _config(table: Mapping[str, Any]) -> dict[str, Any]:
    """A playbook `[channels.NAME]` table as its factory gets it: no type, no description."""
    return {k: v for k, v in table.items() if k not in ("type", "description")}


def build(name: str, table: Mapping[str, Any], env: Mapping[str, str]) -> Channel:
    """A channel from a playbook `[channels.NAME]` table (with `type`) and the environment."""
    return factory(str(table["type"]))(name, _config(table), env)
