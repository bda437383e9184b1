"""Delivery channels: the seam plugin authors implement (`send(message) -> Receipt`).

A third-party channel is a class (or factory) `(name, config, env) -> Channel` registered
under the entry-point group `sopkit.channels`; see docs/channels.md. Its optional steps
(`close`, group sends, batches written at once, results read back later, settings checks,
tag mirroring) are the protocols `Closable`, `GroupSender`, `BatchSender`, `SendResults`,
`TransferResults`, `CheckableFactory` and `TagMirror`; `MockChannel(handler)` is a channel
whose sends are a function of yours.

The shipped HTTP and e-mail channels (`WebhookChannel`, `SmsChannel`, `SmtpChannel`,
`WecomChannel`) and their helpers are imported on first use: `import sopkit.channels` does
not import httpx.
"""

import importlib as _importlib
import typing as _typing

from sopkit._errors import did_you_mean
from sopkit._mask import mask_text

from ._base import (
    Channel,
    ChannelConfigError,
    ChannelFactory,
    MemoryChannel,
    Message,
    Receipt,
    env_secret,
)
from ._capabilities import (
    BatchSender,
    CheckableFactory,
    Closable,
    GroupSender,
    SendOutcome,
    SendResults,
    TagMirror,
    TransferOutcome,
    TransferResults,
)
from ._mock import MockChannel
from ._registry import GROUP, PluginInfo, build, check_settings, installed

if _typing.TYPE_CHECKING:
    from ._sms import SmsChannel
    from ._smtp import SmtpChannel, key_from_message_id
    from ._webhook import WebhookChannel, WebhookVerificationError, verify_signature
    from ._wecom import WecomChannel, WecomError

# name -> the private module that defines it, imported when the name is first asked for
_LAZY = {
    "SmsChannel": "._sms",
    "SmtpChannel": "._smtp",
    "WebhookChannel": "._webhook",
    "WebhookVerificationError": "._webhook",
    "WecomChannel": "._wecom",
    "WecomError": "._wecom",
    "key_from_message_id": "._smtp",
    "verify_signature": "._webhook",
}


def __getattr__(name: str) -> _typing.Any:
    """PEP 562: the shipped channels, imported (with httpx) only when first used."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = vars(_importlib.import_module(module, __name__))[name]
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "GROUP",
    "BatchSender",
    "Channel",
    "ChannelConfigError",
    "ChannelFactory",
    "CheckableFactory",
    "Closable",
    "GroupSender",
    "MemoryChannel",
    "Message",
    "MockChannel",
    "PluginInfo",
    "Receipt",
    "SendOutcome",
    "SendResults",
    "SmsChannel",
    "SmtpChannel",
    "TagMirror",
    "TransferOutcome",
    "TransferResults",
    "WebhookChannel",
    "WebhookVerificationError",
    "WecomChannel",
    "WecomError",
    "build",
    "check_settings",
    "did_you_mean",
    "env_secret",
    "installed",
    "key_from_message_id",
    "mask_text",
    "verify_signature",
]
