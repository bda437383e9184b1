"""Delivery channels: the seam plugin authors implement (`send(message) -> Receipt`).

A third-party channel is a class (or factory) `(name, config, env) -> Channel` registered
under the entry-point group `sopkit.channels`; see docs/channels.md.
"""

from __future__ import annotations

from ._base import (
    Channel,
    ChannelConfigError,
    ChannelFactory,
    MemoryChannel,
    Message,
    Receipt,
    env_secret,
)
from ._registry import GROUP, PluginInfo, build, check_settings, installed

__all__ = [
    "GROUP",
    "Channel",
    "ChannelConfigError",
    "ChannelFactory",
    "MemoryChannel",
    "Message",
    "PluginInfo",
    "Receipt",
    "build",
    "check_settings",
    "env_secret",
    "installed",
]
